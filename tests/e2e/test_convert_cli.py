"""`bitedge convert` / `bitedge verify` end to end: artifacts, manifests, the parity gate, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bitedge.cli import main
from bitedge.converters.onnx import OnnxConverter


def _convert(model: Path, out: Path, eval_dir: Path, *extra: str) -> int:
    """One ONNX fp32 artifact into ``out`` (later flags in ``extra`` override these)."""
    args = ["convert", str(model), "--out", str(out), "--eval", str(eval_dir), "--image-size", "64"]
    return main([*args, "--target", "onnx", "--precision", "fp32", *extra])


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


def test_convert_writes_a_verified_artifact(
    tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "onnx-fp32"
    assert _convert(tiny_hf_dir, out, eval_dir) == 0
    assert "PASS" in capsys.readouterr().out
    assert {"model.onnx", "bitedge.json", "parity.json", "parity.md"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "bitedge.json").read_text())
    assert manifest["status"] == "passed" and manifest["target"] == "onnx" and manifest["precision"] == "fp32"
    assert manifest["source"]["format"] == "transformers" and len(manifest["source"]["sha256"]) == 64
    assert manifest["labels"] == [f"LABEL_{i}" for i in range(5)]
    assert manifest["preprocessing"]["crop_size"] == {"height": 64, "width": 64}
    assert manifest["input"]["shape"] == ["batch", 3, 64, 64]
    assert manifest["parity"]["eval"]["images"] == 10
    assert manifest["parity"]["reference_accuracy"] is not None  # class folders named like the labels
    assert {"bitedge", "torch", "onnx", "onnxruntime"} <= manifest["tool_versions"].keys()
    assert _siblings(out) == []  # no temp or backup directory left behind
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)


def test_fp16_fixed_batch_and_raw_pixels(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx-fp16"
    assert _convert(tiny_hf_dir, out, eval_dir, "--precision", "fp16", "--batch", "4", "--raw-pixel-input") == 0
    manifest = json.loads((out / "bitedge.json").read_text())
    assert manifest["input"]["shape"] == [4, 3, 64, 64] and manifest["input"]["raw_pixels"] is True
    assert manifest["parity"]["top1_agreement"] >= 0.995


def test_verify_passes_then_fails_on_a_corrupted_artifact(
    tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "artifact"
    assert _convert(tiny_hf_dir, out, eval_dir) == 0
    assert main(["verify", str(out)]) == 0
    proto = onnx.load(str(out / "model.onnx"))
    for tensor in proto.graph.initializer:
        if tensor.name == "classifier.1.weight":  # a corruption of 1% in the head
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1.01), tensor.name))
    onnx.save(proto, str(out / "model.onnx"))
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    assert "FAIL" in capsys.readouterr().out
    manifest = json.loads((out / "bitedge.json").read_text())
    assert manifest["status"] == "failed" and not manifest["parity"]["passed"]
    parity = (out / "parity.md").read_text()
    assert "max |Δlogit|" in parity and "model.onnx changed since the artifact was written" in parity


def test_verify_detects_changed_files_even_when_numbers_still_pass(
    tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "artifact"
    assert _convert(tiny_hf_dir, out, eval_dir) == 0
    proto = onnx.load(str(out / "model.onnx"))
    proto.doc_string = "edited by hand"  # same numbers, different file
    onnx.save(proto, str(out / "model.onnx"))
    capsys.readouterr()
    assert main(["verify", str(out)]) == 1
    assert "model.onnx changed since the artifact was written" in capsys.readouterr().out


def test_existing_output_needs_overwrite(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "artifact"
    assert _convert(tiny_hf_dir, out, eval_dir) == 0
    before = (out / "model.onnx").read_bytes()
    assert _convert(tiny_hf_dir, out, eval_dir, "--precision", "fp16") == 2
    assert (out / "model.onnx").read_bytes() == before
    assert _convert(tiny_hf_dir, out, eval_dir, "--precision", "fp16", "--overwrite") == 0
    assert json.loads((out / "bitedge.json").read_text())["precision"] == "fp16"
    assert _siblings(out) == []


def test_failed_conversion_leaves_old_artifact_and_no_partial_directory(
    tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "artifact"
    assert _convert(tiny_hf_dir, out, eval_dir) == 0
    before = sorted(p.name for p in out.iterdir())

    def broken_runner(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # e.g. Ctrl-C during verification, after the model file was written

    monkeypatch.setattr(OnnxConverter, "load_runner", broken_runner)
    assert _convert(tiny_hf_dir, out, eval_dir, "--overwrite") == 130
    assert sorted(p.name for p in out.iterdir()) == before
    assert _siblings(out) == []
    fresh = tmp_path / "fresh"
    assert _convert(tiny_hf_dir, fresh, eval_dir) == 130
    assert not fresh.exists() and _siblings(fresh) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "tflite"], "unknown target"),
        (["--target", "onnx", "--precision", "w8"], "does not support w8"),
        (["--target", "coreml", "--precision", "int8", "--coreml-target", "iOS16", "--calibration", "."], "iOS17"),
        (["--target", "coreml", "--coreml-target", "iOS99"], "unknown Core ML deployment target"),
        (["--precision", "int4"], "unknown precision"),
    ],
)
def test_bad_target_or_precision(
    tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert _convert(tiny_hf_dir, tmp_path / "x", eval_dir, *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_bad_paths(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert _convert(tiny_hf_dir, a_file, eval_dir) == 2
    assert "not a directory" in capsys.readouterr().err
    assert _convert(tiny_hf_dir, tmp_path / "missing" / "out", eval_dir) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _convert(tiny_hf_dir, tmp_path / "out", tmp_path / "no-images-here") == 2
    assert "not a directory of images" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 2
    assert "not a bitedge artifact" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_parent(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert _convert(tiny_hf_dir, locked / "out", eval_dir) == 2


def test_unreadable_images_are_skipped_and_reported(
    tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    images = tmp_path / "images"
    shutil.copytree(eval_dir, images)
    (images / "LABEL_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert _convert(tiny_hf_dir, tmp_path / "out", images) == 0
    assert "skipped 1 images that could not be used" in capsys.readouterr().out
