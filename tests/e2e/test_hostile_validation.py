"""Hostile and careless use, part 3 (issue 22): the model you mean, and every option checked before work.

A config beside a checkpoint, conflicting or unused flags, sizes out of bounds, bad calibration arrays: each
refused with exit 2 and a message naming it, before any heavy work, leaving nothing behind.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import hf_classifier
from hostile_fixtures import run

from bitedge.cli import main

# ----------------------------------------------------------------------------------------- the model you mean


def test_a_checkpoint_file_uses_the_config_beside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """8 GroupNorm groups: loaded with BiT's default 32 it would be a different model that still converts."""
    import torch

    from bitedge import load_model

    oracle = hf_classifier(num_groups=8, embedding_size=32, hidden_sizes=[32, 64, 64, 128])
    folder = tmp_path / "ckpt"
    oracle.save_pretrained(folder)
    loaded = load_model(folder / "model.safetensors")
    assert loaded.config.num_groups == 8
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded(pixels).logits, oracle(pixels).logits, atol=1e-5)
    code, out, _ = run(capsys, "inspect", str(folder / "model.safetensors"))
    assert code == 0 and "config.json" not in out


def test_a_config_that_contradicts_the_weights_names_both(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(tiny / "model.safetensors", folder / "weights.safetensors")
    config = json.loads((tiny / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_sizes": [16, 32, 64, 64]}))
    code, _, err = run(capsys, "inspect", str(folder / "weights.safetensors"))
    assert code == 2 and "weights.safetensors" in err and str(folder / "config.json") in err


def test_a_foreign_config_beside_a_checkpoint_is_refused(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(tiny / "model.safetensors", folder / "weights.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet", "depths": [3, 4, 6, 3]}))
    code, _, err = run(capsys, "inspect", str(folder / "weights.safetensors"))
    assert code == 2 and "'resnet'" in err


# ------------------------------------------------------------------------------------ validate before work


def test_repeated_precisions_are_merged(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = run(
        capsys, *convert_args, "--precision", "fp32", "fp32", "--target", "onnx", "onnx", "--out", str(out)
    )
    assert code == 0 and "another bitedge run" not in err and (out / "bitedge.json").is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--precision", "int8", "--calibration-table", "T", "--exclude", "stem"], "--exclude would be ignored"),
        (["--calibration", "X"], "only apply to int8"),
        (["--quantizer", "bitedge"], "only apply to int8"),
        (["--coreml-target", "iOS17"], "options of the coreml target were given, but no coreml artifact"),
        (["--tensor-input"], "options of the coreml target were given"),
        (["--target", "openvino", "--onnx-group-norm", "native"], "options of the onnx target were given"),
        (["--precision", "int8", "--quantizer", "nncf"], "--quantizer nncf is not available for onnx"),
        (["--precision", "int8", "--calibration-table", "T", "--calibration", "X"], "--calibration would be"),
        (["--image-size", "100000"], "2048 px"),
        (["--image-size", "8"], "32..2048"),
        (["--batch", "0"], "positive integer"),
        (["--batch", "100000"], "must fit in memory"),
        (["--threads", "0"], "positive integer"),
        (["--calibration-size", "0"], "positive integer"),
        (["--precision", "fp32", "--fallback", "auto"], "no int8 artifact is planned: add --precision int8"),
        (["--fallback", "sometimes"], "invalid choice: 'sometimes' (choose from 'none', 'auto')"),
        (
            ["--target", "openvino", "--precision", "int8", "--quantizer", "nncf", "--fallback", "auto"],
            "pass --quantizer bitedge",
        ),
        (["--min-cosine", "1.5"], "--min-cosine 1.5: expected -1..1"),
        (["--max-accuracy-drop", "-0.5"], "--max-accuracy-drop -0.5: expected 0..100"),
        (["--min-top1-agreement", "99.5"], "--min-top1-agreement 99.5: expected 0..1 (a fraction"),
    ],
)
def test_conflicting_or_out_of_bounds_flags_fail_before_any_work(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = tmp_path / "out"
    start = time.monotonic()
    try:
        code = main([*convert_args, "--out", str(out), *flags])
    except SystemExit as exc:  # argparse's own bounds: usage line and exit 2
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert time.monotonic() - start < 10 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_unknown_layer_in_exclude_is_refused_with_examples(
    convert_args: list[str], eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    flags = ["--precision", "int8", "--calibration", str(eval_dir), "--exclude", "stages.9", "--out", str(out)]
    code, _, err = run(capsys, *convert_args, *flags)
    assert code == 2 and "--exclude stages.9 matches no layer; e.g. stem, head" in err and not out.exists()


def test_absurd_preprocessing_size_is_refused_with_the_reason(
    tiny: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    (model / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 16384}, "crop_size": 16384}))
    out = tmp_path / "out"
    args = ["convert", str(model), "--target", "onnx", "--precision", "fp32", "--eval", str(eval_dir)]
    code, _, err = run(capsys, *args, "--out", str(out))
    assert code == 2 and "preprocessing" in err and "16384x16384" in err and not out.exists()


@pytest.mark.parametrize("problem", ["nan", "size"])
def test_bad_calibration_arrays_fail_before_the_reference_pass(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    pixels = np.zeros((4, 3, 64 if problem == "nan" else 32, 64 if problem == "nan" else 32), np.float32)
    if problem == "nan":
        pixels[2, 0, 5, 5] = np.nan
    np.save(tmp_path / "pixels.npy", pixels)
    out = tmp_path / "out"
    flags = ["--precision", "int8", "--calibration", str(tmp_path / "pixels.npy"), "--out", str(out)]
    code, _, err = run(capsys, *convert_args, *flags)
    assert code == 2 and ("sample 2 holds NaN" in err if problem == "nan" else "model takes 64x64" in err)
    assert "float reference" not in err and not out.exists()


@pytest.fixture(scope="module")
def tiny_table(tiny: Path, eval_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real calibration table of the tiny model, as JSON (its ranges are not the point here)."""
    path = tmp_path_factory.mktemp("table") / "table.json"
    args = ["calibrate", str(tiny), "--calibration", str(eval_dir), "--image-size", "64", "--out", str(path)]
    assert main(args) == 0
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("rename", "no range for bit.embedder.convolution"),
        ("extra", "bit.encoder.stages.9.conv, which this model does not quantize"),
        ("excluded", "which this model does not quantize (another model, or layers it keeps in float)"),
        ("format-1", "format 1 records only convolution-input ranges, and is not the format this bitedge reads"),
        ("format-1-bare", "format 1 records only convolution-input ranges, and is not the format"),
        ("no-output", "missing the output range"),
        ("method", "unknown calibration method 'magic' (bitedge's are minmax, percentile, entropy, mse)"),
        ("excluded-unknown", "its excluded layers bit.no_such_layer are not layers of this model"),
    ],
)
def test_a_table_that_does_not_fit_the_model_is_refused_by_name(
    tiny_table: dict[str, Any], convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    change: str, message: str,
) -> None:  # fmt: skip
    data = json.loads(json.dumps(tiny_table))
    layers = data["layers"]
    if change == "rename":
        layers["stem_conv"] = layers.pop("bit.embedder.convolution")
    elif change == "extra":
        layers["bit.encoder.stages.9.conv"] = layers["classifier.1"]
    elif change == "format-1":
        data = {**data, "version": 1, "amax": {name: sites["input"]["amax"] for name, sites in layers.items()}}
        del data["layers"]
    elif change == "excluded":
        data["excluded"] = ["classifier.1"]  # the head kept float, yet the table has its range
    elif change == "format-1-bare":  # some format-1 tables wrote no version
        data = {"method": data["method"], "amax": {name: sites["input"]["amax"] for name, sites in layers.items()}}
    elif change == "no-output":
        del layers["classifier.1"]["output"]
    elif change == "method":
        data["method"] = "magic"
    elif change == "excluded-unknown":
        data["excluded"] = ["bit.no_such_layer"]
    table, out = tmp_path / "table.json", tmp_path / "out"
    table.write_text(json.dumps(data))
    flags = ["--precision", "int8", "--calibration-table", str(table), "--out", str(out)]
    code, _, err = run(capsys, *convert_args, *flags)
    assert code == 2 and message in err, err
    assert "--exclude" not in err and not out.exists()  # the table is to blame, not a flag the user did not give
    if change.startswith("format-1") or change in ("method", "excluded-unknown"):
        assert "calibrate again" in err


def test_verify_refuses_a_budget_outside_its_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "verify", str(tmp_path), "--min-top1-agreement", "1.5")
    assert code == 2 and "--min-top1-agreement 1.5: expected 0..1" in err
