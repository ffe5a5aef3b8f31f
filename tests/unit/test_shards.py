"""Shards of an evaluation set and merging their partial results (issue 21), without a model: the rules."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bitedge.errors import BadInputError
from bitedge.parity.gate import Outputs, gather
from bitedge.parity.images import ImageSet
from bitedge.parity.logits import LogitStore
from bitedge.parity.shards import (
    Partial,
    ShardHeader,
    ShardSpec,
    artifact_digest,
    merge,
    read_partial,
    write_partial,
)


class _Manifest:  # what merge reads of a manifest: its identity
    target, precision, file_sha256 = "onnx", "int8", {"model.onnx": "ab" * 32}


MANIFEST = _Manifest()


@pytest.mark.parametrize("text", ["3/2", "2/2", "-1/2", "1/0", "a/b", "1", "1/2/3", ""])
def test_a_shard_spec_outside_0_to_n_minus_1_is_refused_by_name(text: str) -> None:
    with pytest.raises(BadInputError, match="--shard"):
        ShardSpec.parse(text)


def test_shards_cover_the_sorted_list_once_in_order() -> None:
    files = [Path(f"root/{i:03d}.png") for i in range(10)]
    images = ImageSet(Path("root"), files, list(range(10)))
    parts = [ShardSpec.parse(f"{i}/3").select(images) for i in range(3)]
    assert [f for p in parts for f in p.files] == files
    assert [label for p in parts for label in (p.labels or [])] == list(range(10))
    assert [len(p.files) for p in parts] == [3, 3, 4]


LOGITS = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)  # six images, three classes
NOISE = np.random.default_rng(1).normal(scale=0.5, size=(6, 3)).astype(np.float32)


def _outputs(root: Path, rows: range) -> tuple[Outputs, Outputs]:
    files, labels = [root / f"{i:03d}.png" for i in rows], np.asarray([i % 3 for i in rows])
    reference, artifact = LOGITS[rows.start : rows.stop], (LOGITS + NOISE)[rows.start : rows.stop]
    return Outputs(LogitStore.of(reference), labels, files, []), Outputs(LogitStore.of(artifact), labels, files, [])


def _partial(root: Path, shard: int, shards: int, rows: range, **changes: object) -> Partial:
    header = ShardHeader(artifact_digest(MANIFEST), "images-1", str(root), 6, shard, shards,  # type: ignore[arg-type]
                         {"min_top1_agreement": 0.99}, [], "")  # fmt: skip
    return Partial(replace(header, **changes), gather(*_outputs(root, rows)))  # type: ignore[arg-type]


def test_partials_round_trip_and_merge_into_the_unsharded_evidence(tmp_path: Path) -> None:
    paths = []
    for index, rows in [(1, range(3, 6)), (0, range(0, 3))]:  # given out of order
        paths.append(write_partial(tmp_path / f"p{index}.npz", _partial(tmp_path, index, 2, rows)))
    merged = merge([(p, read_partial(p)) for p in paths], MANIFEST)  # type: ignore[arg-type]
    whole = gather(*_outputs(tmp_path, range(6)))
    assert merged.evidence.files == whole.files == [tmp_path / f"{i:03d}.png" for i in range(6)]
    assert merged.evidence.labels is not None and merged.evidence.labels.tolist() == [0, 1, 2, 0, 1, 2]
    np.testing.assert_array_equal(merged.evidence.heads["artifact"], LOGITS + NOISE)
    (name,) = whole.comparisons
    assert merged.evidence.comparisons[name].metrics(whole.labels) == whole.comparisons[name].metrics(whole.labels)
    assert whole.comparisons[name].metrics().top1_agreement < 1  # the noise flips some: a comparison worth merging


@pytest.mark.parametrize(
    ("second", "problem"),
    [
        ({"index": 0}, "both shard 0/2"),  # overlapping: the same shard twice
        ({"images": "images-2"}, "different image set"),
        ({"budget": {"min_top1_agreement": 0.5}}, "different budget"),
        ({"artifact": "0" * 64}, "another artifact"),
        ({"count": 3, "index": 2}, "different shard count"),
    ],
)
def test_partials_that_do_not_make_one_run_are_refused(tmp_path: Path, second: dict[str, object], problem: str) -> None:
    first = (tmp_path / "a.npz", _partial(tmp_path, 0, 2, range(0, 3)))
    other = (tmp_path / "b.npz", _partial(tmp_path, 1, 2, range(3, 6), **second))
    with pytest.raises(BadInputError, match=problem):
        merge([first, other], MANIFEST)  # type: ignore[arg-type]


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    partials = [(tmp_path / "a.npz", _partial(tmp_path, 0, 3, range(0, 2)))]
    with pytest.raises(BadInputError, match=r"missing shard.* 1/3, 2/3"):
        merge(partials, MANIFEST)  # type: ignore[arg-type]


def test_a_file_that_is_not_a_partial_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"hello")
    with pytest.raises(BadInputError, match="not a bitedge partial result"):
        read_partial(tmp_path / "x.npz")
    with pytest.raises(BadInputError, match="no such partial result"):
        read_partial(tmp_path / "missing.npz")


def test_a_partial_of_an_older_bitedge_is_refused_by_name(tmp_path: Path) -> None:
    header = {"format": "bitedge-parity-partial-1"}  # held every model's logits; this bitedge keeps evidence
    np.savez(tmp_path / "old.npz", header=np.asarray(json.dumps(header)))
    with pytest.raises(BadInputError, match=r"old.npz: not a partial result of this bitedge .*run the shard again"):
        read_partial(tmp_path / "old.npz")
