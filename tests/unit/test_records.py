"""Typed records read from JSON: every field checked, errors name the field and the file."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bitedge.artifacts.records import parse_record
from bitedge.errors import BadInputError


@dataclass(frozen=True)
class Inner:
    name: str
    size: list[int | str]
    scale: float = 1.0


@dataclass(frozen=True)
class Outer:
    inner: Inner
    labels: list[str]
    extra: Inner | None = None
    counts: dict[str, int] = field(default_factory=dict)
    flag: bool = False


GOOD = {"inner": {"name": "x", "size": ["batch", 3]}, "labels": ["a"], "counts": {"a": 1}, "unknown": 1}


def test_a_good_record_parses_with_defaults() -> None:
    record = parse_record(Outer, GOOD, "f.json")
    assert record == Outer(Inner("x", ["batch", 3]), ["a"], None, {"a": 1}, False)
    assert parse_record(Inner, {"name": "y", "size": [], "scale": 2}, "f.json").scale == 2.0  # int accepted as float


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inner": None}, "f.json: inner: expected an object, got null"),
        ({"inner": {"name": "x"}}, "f.json: inner: missing size"),
        ({"inner": {"name": 3, "size": []}}, "f.json: inner.name: expected a string, got int"),
        ({"inner": {"name": "x", "size": [1.5]}}, "f.json: inner.size[0]: expected an integer or a string, got float"),
        ({"labels": "abc"}, "f.json: labels: expected a list, got a string"),
        ({"counts": {"a": True}}, "f.json: counts.a: expected an integer, got true/false"),
        ({"extra": {"name": "x", "size": [], "scale": "big"}}, "f.json: extra.scale: expected a number, got a string"),
        ({"flag": 1}, "f.json: flag: expected true/false, got int"),
    ],
)
def test_bad_fields_are_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(BadInputError) as error:
        parse_record(Outer, {**GOOD, **change}, "f.json")
    assert str(error.value) == message


def test_missing_fields_and_non_objects() -> None:
    with pytest.raises(BadInputError, match=r"f\.json: missing inner, labels"):
        parse_record(Outer, {}, "f.json")
    with pytest.raises(BadInputError, match=r"f\.json: expected an object, got a list"):
        parse_record(Outer, [1], "f.json")
