"""Typed records read from JSON once, at the boundary (manifests, calibration tables).

``parse_record(Cls, data, where)`` builds a dataclass from parsed JSON, checking every field against its
type hint: a missing field, a null where a value is needed, or a value of the wrong type is a
``BadInputError`` naming the field and the file, never a traceback deep in the code that uses it. Unknown
keys are ignored (a newer writer may add some; the schema version says when that is not safe).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from bitedge.errors import BadInputError

T = TypeVar("T")


def parse_record(cls: type[T], data: object, where: str, path: str = "") -> T:
    """``cls`` (a dataclass) from ``data`` (a parsed JSON object); ``where`` names the file for errors and
    ``path`` the record inside it (``input``, ``calibration``...)."""
    if not isinstance(data, dict):
        raise BadInputError(f"{where}: {path + ': ' if path else ''}expected an object, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    missing = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.init:
            continue
        if field.name not in data:
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if required:
                missing.append(field.name)
            continue
        values[field.name] = _value(hints[field.name], data[field.name], where, f"{path}.{field.name}".lstrip("."))
    if missing:
        raise BadInputError(f"{where}: {path + ': ' if path else ''}missing {', '.join(missing)}")
    return cls(**values)


def _value(hint: Any, value: Any, file: str, path: str) -> Any:
    where = f"{file}: {path}"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None with a value: X's own error says what is wrong inside it
            return _value(options[0], value, file, path)
        for option in options:
            try:
                return _value(option, value, file, path)
            except BadInputError:
                continue
        expected = " or ".join(_name(a) for a in args)
        raise BadInputError(f"{where}: expected {expected}, got {_kind(value)}")
    if hint is type(None):
        if value is not None:
            raise BadInputError(f"{where}: expected null, got {_kind(value)}")
        return None
    if dataclasses.is_dataclass(hint):
        return parse_record(hint, value, file, path)  # type: ignore[arg-type]
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise BadInputError(f"{where}: expected a list, got {_kind(value)}")
        item = args[0] if args else Any
        items = [_value(item, v, file, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise BadInputError(f"{where}: expected an object, got {_kind(value)}")
        item = args[1] if args else Any
        return {str(k): _value(item, v, file, f"{path}.{k}") for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadInputError(f"{where}: expected a number, got {_kind(value)}")
        return float(value)
    if hint in (str, int, bool):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise BadInputError(f"{where}: expected {_name(hint)}, got {_kind(value)}")
        return value
    raise TypeError(f"records cannot check {hint!r}")  # a bitedge bug: a field type this parser lacks


def _name(hint: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false", type(None): "null"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false"}.get(
        type(value), type(value).__name__
    )
