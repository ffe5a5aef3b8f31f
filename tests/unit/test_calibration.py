"""Calibration data, observers, recipe and tables: the bad-data paths and the round-trips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bitedge import BitImageProcessor, load_model
from bitedge.calibration.calibrate import collect_ranges, make_table
from bitedge.calibration.observers import AbsRange
from bitedge.calibration.recipe import select_layers
from bitedge.calibration.sources import open_calibration
from bitedge.calibration.table import CalibrationTable
from bitedge.errors import BadInputError, ImageError
from bitedge.fold import fold
from bitedge.model.demo import DEMO_CALIBRATION

PROCESSOR = BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})


def _count(data) -> int:  # type: ignore[no-untyped-def]
    return sum(len(b) for b in data.batches(PROCESSOR, raw_pixels=False))


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """30 real calibration images (3 classes x 10) copied from the demo split."""
    root = tmp_path / "calib"
    for label in ("0", "1", "2"):
        (root / label).mkdir(parents=True)
        for path in sorted((DEMO_CALIBRATION / label).iterdir())[:10]:
            shutil.copy(path, root / label / path.name)
    return root


def test_folder_is_recursive_sorted_and_sampled_with_a_seed(images: Path) -> None:
    everything = open_calibration(images)
    assert len(everything.paths) == 30 and everything.paths == sorted(everything.paths)
    a, b = open_calibration(images, size=12, seed=3), open_calibration(images, size=12, seed=3)
    assert a.paths == b.paths and len(a.paths) == 12
    assert open_calibration(images, size=12, seed=4).paths != a.paths
    assert a.manifest.digest() == b.manifest.digest()
    assert _count(a) == 12 and a.manifest.used == 12


def test_manifest_hash_follows_file_contents(images: Path) -> None:
    before = open_calibration(images).manifest.digest()
    victim = next(images.rglob("*.png"))
    victim.write_bytes(next(DEMO_CALIBRATION.rglob("*.png")).read_bytes())  # other content, same name
    assert open_calibration(images).manifest.digest() != before


def test_list_file_with_relative_paths_and_comments(images: Path, tmp_path: Path) -> None:
    listed = sorted(images.rglob("*.png"))[:5]
    lst = images / "list.txt"
    lst.write_text("# calibration subset\n\n" + "\n".join(str(p.relative_to(images)) for p in listed) + "\n")
    data = open_calibration(lst)
    assert data.paths == [images / p.relative_to(images) for p in listed]
    lst.write_text("0/nope.png\n")
    with pytest.raises(BadInputError, match="do not exist"):
        open_calibration(lst)


def test_arrays(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).standard_normal((10, 3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "a.npy", pixels)
    np.savez(tmp_path / "b.npz", pixel_values=pixels)
    for name in ("a.npy", "b.npz"):
        data = open_calibration(tmp_path / name, size=4)
        batches = list(data.batches(PROCESSOR, raw_pixels=False, batch_size=3))
        assert sum(len(b) for b in batches) == 4 and data.manifest.kind == "array"
    np.savez(tmp_path / "two.npz", x=pixels, y=pixels)
    with pytest.raises(BadInputError, match="pixel_values"):
        open_calibration(tmp_path / "two.npz")
    np.save(tmp_path / "flat.npy", pixels[:, 0])
    with pytest.raises(BadInputError, match=r"\(N, 3, H, W\)"):
        open_calibration(tmp_path / "flat.npy")


def test_unreadable_images_are_counted_or_fatal(images: Path) -> None:
    (images / "0" / "broken.png").write_bytes(b"not a png")
    data = open_calibration(images)
    assert _count(data) == 30 and len(data.manifest.skipped) == 1 and "broken.png" in data.manifest.skipped[0]
    with pytest.raises(ImageError, match="strict"):  # bad input: exit code 2
        _count(open_calibration(images, strict=True))


def test_empty_or_all_bad_sets_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no calibration images"):
        open_calibration(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.jpg").write_bytes(b"")
    with pytest.raises(BadInputError, match="none of the 3"):
        _count(open_calibration(tmp_path / "bad"))
    with pytest.raises(BadInputError, match="no such calibration source"):
        open_calibration(tmp_path / "missing")


def test_range_methods_on_known_distributions() -> None:
    gen = torch.Generator().manual_seed(0)
    stats = AbsRange()
    for _ in range(4):
        x = torch.randn(100_000, generator=gen)
        x[0] = 40.0  # one outlier
        stats.update(x)
    assert stats.amax("minmax") == pytest.approx(40.0)
    for method in ("percentile", "entropy"):
        assert 2.0 < stats.amax(method) < 8.0, method  # clip the outlier, keep the Gaussian
    # mse weighs the outlier's squared clipping error against everyone's rounding noise: it clips, less
    assert 4.0 < stats.amax("mse") < 40.0
    relu = AbsRange()
    relu.update(torch.randn(200_000, generator=gen).relu())
    assert 2.0 < relu.amax("entropy") <= relu.amax("minmax")  # the zero spike does not force hard clipping


def test_recipe_exclusions(tiny_hf_dir: Path) -> None:
    deploy = fold(load_model(tiny_hf_dir))
    quantized, excluded = select_layers(deploy, ["stem", "head"])
    assert excluded == ["bit.embedder.convolution", "classifier.1"]
    assert len(quantized) == 19 and all(n.startswith("bit.encoder") for n in quantized)
    _, stage = select_layers(deploy, ["bit.encoder.stages.1"])
    assert len(stage) == 7  # two units: 3 convs each + the projection
    with pytest.raises(BadInputError, match="matches no layer"):
        select_layers(deploy, ["stages.9"])


def test_table_round_trip_and_checks(tmp_path: Path) -> None:
    model = load_model("bitedge/demo")
    deploy = fold(model)
    data = open_calibration(DEMO_CALIBRATION, size=40)
    ranges, excluded = collect_ranges(deploy, data, model.image_processor, exclude=["head"], raw_pixels=False)
    table = make_table(
        ranges,
        excluded,
        data,
        method="entropy",
        model_sha256=model.source.sha256,
        input_size=(64, 64),
        raw_pixels=False,
    )
    assert "classifier.1" not in table.layers and table.excluded == ["classifier.1"]
    stem = table.layers["bit.embedder.convolution"]
    assert stem["input"].low < 0 < stem["input"].high and stem["output"].low < 0  # normalized pixels; conv output
    conv1 = table.layers["bit.encoder.stages.0.layers.0.conv1"]["input"]
    assert conv1.low == 0 and 0 < conv1.amax <= conv1.high  # a ReLU output: never negative
    again = CalibrationTable.load(table.save(tmp_path / "t.json"))
    assert again == table
    layers = list(table.layers)
    again.check_matches(model_sha256=model.source.sha256, size=[64, 64], raw_pixels=False, layers=layers)
    with pytest.raises(BadInputError, match="another checkpoint"):
        again.check_matches(model_sha256="0" * 64, size=[64, 64], raw_pixels=False, layers=layers)
    with pytest.raises(BadInputError, match="input"):
        again.check_matches(model_sha256=model.source.sha256, size=[96, 96], raw_pixels=False, layers=layers)
    with pytest.raises(BadInputError, match="does not quantize"):
        again.check_matches(model_sha256=model.source.sha256, size=[64, 64], raw_pixels=False, layers=layers[1:])
    with pytest.raises(BadInputError, match="no range for extra_conv"):
        again.check_matches(
            model_sha256=model.source.sha256, size=[64, 64], raw_pixels=False, layers=["extra_conv", *layers]
        )


_RANGE = '{"amax": 2.0, "low": -1.0, "high": 2.0}'
_TABLE = (
    f'{{"version": 2, "method": "entropy", "layers": {{"stem": {{"input": {_RANGE}, "output": {_RANGE}}}}}, '
    '"excluded": [], "model_sha256": null, "input": {"size": [64, 64], "raw_pixels": false}}'
)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"method": "entropy"}', "missing layers"),
        ("[1, 2]", "expected an object"),
        ("{", "not a bitedge calibration table"),
        ('{"version": 1, "method": "entropy", "amax": {"stem": 1.0}}', "format 1 records only convolution-input"),
        (_TABLE.replace('"high": 2.0', '"high": "x"'), "expected a number"),
        (_TABLE.replace('"low": -1.0', '"low": 5.0'), "low <= high"),
        (_TABLE.replace(', "output": {"amax": 2.0, "low": -1.0, "high": 2.0}', ""), "missing the output range"),
        (_TABLE.replace('"amax": 2.0', '"amax": NaN'), "finite"),
    ],
)
def test_malformed_tables_are_refused_by_name(tmp_path: Path, content: str, message: str) -> None:
    CalibrationTable.load(_write(tmp_path / "ok.json", _TABLE))  # the unbroken one loads
    with pytest.raises(BadInputError, match=message):
        CalibrationTable.load(_write(tmp_path / "bad.json", content))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
