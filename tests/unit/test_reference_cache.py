"""The float reference's cache (issue 21): one reference pass per model, preprocessing and image set."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import demo_eval_subset
from PIL import Image

from bitedge.model.demo import DEMO_MODEL
from bitedge.model.loading import load_model
from bitedge.model.modeling import BitPreTrainedModel
from bitedge.parity.gate import Outputs
from bitedge.parity.images import scan_images
from bitedge.parity.reference_cache import cached_reference_outputs, reference_key


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BITEDGE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "reference"


def _entries(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if p.name != "listings"]


def _run(model: BitPreTrainedModel, folder: Path, processor: Any = None) -> tuple[Outputs, list[str]]:
    logs: list[str] = []
    images = scan_images(folder, model.config.labels)
    return cached_reference_outputs(model, images, processor or model.image_processor, log=logs.append), logs


def test_the_second_pass_is_read_back_and_equals_the_first(cache: Path, tmp_path: Path) -> None:
    model = load_model(DEMO_MODEL)
    folder = demo_eval_subset(tmp_path / "eval", per_class=2)
    first, logs = _run(model, folder)
    assert logs == [] and len(_entries(cache)) == 1
    moved = tmp_path / "moved"
    shutil.move(folder, moved)  # the same images elsewhere are the same set
    second, logs = _run(model, moved)
    assert len(logs) == 1 and "reusing" in logs[0]
    np.testing.assert_array_equal(second.logits.to_array(), first.logits.to_array())
    np.testing.assert_array_equal(second.labels, first.labels)
    assert second.files == scan_images(moved, model.config.labels).files


def test_a_changed_image_model_or_preprocessing_makes_a_new_entry(cache: Path, tmp_path: Path) -> None:
    model = load_model(DEMO_MODEL)
    folder = demo_eval_subset(tmp_path / "eval", per_class=1)
    images = scan_images(folder, model.config.labels)
    key = reference_key(model, images, model.image_processor)
    image = images.files[3]
    Image.open(image).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(image)  # same name, other pixels
    assert reference_key(model, images, model.image_processor) != key
    bigger = replace(model.image_processor, size={"shortest_edge": 72}, crop_size={"height": 72, "width": 72})
    assert reference_key(model, images, bigger) not in (key, reference_key(model, images, model.image_processor))
    other = load_model(DEMO_MODEL)
    other.source = replace(other.source, sha256="0" * 64)  # type: ignore[arg-type]
    assert reference_key(other, images, model.image_processor) != reference_key(model, images, model.image_processor)
    seeded = load_model("bit-s-r50x1", seed=0)  # a preset's random weights have no checkpoint digest
    assert reference_key(seeded, images, model.image_processor) is None


def test_a_damaged_entry_is_run_again(cache: Path, tmp_path: Path) -> None:
    model = load_model(DEMO_MODEL)
    folder = demo_eval_subset(tmp_path / "eval", per_class=1)
    first, _ = _run(model, folder)
    (entry,) = _entries(cache)
    logits = entry / "logits.f32"
    logits.write_bytes(logits.read_bytes()[:-3])  # truncated: not whole rows
    again, logs = _run(model, folder)
    assert len(logs) == 1 and "not usable (unreadable: ValueError); running it again" in logs[0]  # computed, said
    np.testing.assert_array_equal(again.logits.to_array(), first.logits.to_array())
    assert logits.stat().st_size == first.logits.to_array().nbytes  # and stored again


def test_an_entry_changed_in_place_or_edited_is_run_again(cache: Path, tmp_path: Path) -> None:
    model = load_model(DEMO_MODEL)
    folder = demo_eval_subset(tmp_path / "eval", per_class=1)
    first, _ = _run(model, folder)
    (entry,) = _entries(cache)
    logits = entry / "logits.f32"
    data = bytearray(logits.read_bytes())
    data[:8] = data[8:16]  # same size: two logits copied over two others
    logits.write_bytes(bytes(data))
    again, logs = _run(model, folder)
    assert len(logs) == 1 and "they changed since they were written" in logs[0]
    np.testing.assert_array_equal(again.logits.to_array(), first.logits.to_array())
    with np.load(entry / "index.npz") as index:  # stored again, whole; now the labels are edited
        arrays = dict(index)
    np.savez(entry / "index.npz", **{**arrays, "labels": arrays["labels"][::-1]})
    _, logs = _run(model, folder)
    assert len(logs) == 1 and "they changed since they were written" in logs[0]


def test_two_models_entries_swapped_are_run_again(cache: Path, tmp_path: Path, tiny_hf_dir: Path) -> None:
    demo, tiny = load_model(DEMO_MODEL), load_model(tiny_hf_dir)
    folder = demo_eval_subset(tmp_path / "eval", per_class=1)
    models = {"demo": demo, "tiny": tiny}
    first = {name: _run(model, folder, demo.image_processor)[0].logits.to_array() for name, model in models.items()}
    a, b = _entries(cache)
    shutil.move(a, tmp_path / "a")
    shutil.move(b, a)
    shutil.move(tmp_path / "a", b)
    for name, model in models.items():
        again, logs = _run(model, folder, demo.image_processor)
        assert len(logs) == 1 and "they changed since they were written" in logs[0]
        np.testing.assert_array_equal(again.logits.to_array(), first[name])


def test_an_unchanged_listing_is_not_hashed_again(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bitedge.parity import reference_cache

    model = load_model(DEMO_MODEL)
    images = scan_images(demo_eval_subset(tmp_path / "eval", per_class=1), model.config.labels)
    key = reference_key(model, images, model.image_processor)
    read: list[Path] = []
    monkeypatch.setattr(reference_cache, "sha256_file", lambda path: read.append(path) or "0" * 64)
    assert reference_key(model, images, model.image_processor) == key and read == []  # remembered: nothing read
    images.files[0].touch()  # a newer time: the listing changed, so the contents are hashed again
    assert reference_key(model, images, model.image_processor) != key and len(read) == len(images.files)


def test_eviction_removes_only_folders_that_hold_nothing_but_an_entry(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bitedge.parity import reference_cache

    ours, theirs = cache / ("a" * 64), cache / ("b" * 64)  # both named like keys
    for folder in (ours, theirs):
        folder.mkdir(parents=True)
        (folder / "logits.f32").write_bytes(bytes(64))
    (ours / "index.npz").write_bytes(bytes(8))
    (theirs / "notes.txt").write_text("a user's file")
    monkeypatch.setattr(reference_cache, "MAX_CACHE_BYTES", 0)  # every entry is over the limit
    reference_cache._evict(cache)
    assert not ours.exists()
    assert (theirs / "notes.txt").read_text() == "a user's file" and (theirs / "logits.f32").exists()
