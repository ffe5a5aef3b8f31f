"""The bundled demo model: trained accuracy holds, and `bitedge convert` with no arguments works offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bitedge import load_model
from bitedge.cli import main
from bitedge.converters import converter_classes
from bitedge.converters.registry import is_builtin
from bitedge.model.demo import DEMO_CALIBRATION, DEMO_EVAL
from bitedge.parity.images import Batches, scan_images

pytestmark = pytest.mark.slow  # end-to-end runs of seconds each: `pytest` runs them, `-m "not slow"` does not

RECORDED = Path(__file__).parents[2] / "benchmarks" / "results" / "demo_model.json"


def test_demo_accuracy_on_bundled_eval_split_is_the_recorded_one() -> None:
    model = load_model("bitedge/demo")
    assert model.source.format == "transformers" and model.config.labels == [str(d) for d in range(10)]
    images = scan_images(DEMO_EVAL, model.config.labels)
    assert images.labels is not None and len(images.files) == 400
    correct = total = 0
    with torch.no_grad():
        for pixels, _, labels in Batches(images, model.image_processor, batch_size=100):
            correct += int((model(torch.from_numpy(pixels)).logits.argmax(1).numpy() == labels).sum())
            total += len(labels)
    recorded = json.loads(RECORDED.read_text())["eval_top1_accuracy"]
    assert correct / total * 100 == pytest.approx(recorded, abs=1e-9)
    assert recorded >= 95.0


def test_bundled_splits_are_disjoint_class_folders() -> None:
    calibration = {p.name for p in DEMO_CALIBRATION.rglob("*.png")}
    evaluation = {p.name for p in DEMO_EVAL.rglob("*.png")}
    assert len(calibration) == 200 and len(evaluation) == 400 and not calibration & evaluation
    assert sorted(p.name for p in DEMO_EVAL.iterdir()) == [str(d) for d in range(10)]


def test_convert_with_no_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["convert"]) == 0
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    root = tmp_path / "bitedge-artifacts"
    expected = [f"{t}-{p}" for t in ("onnx", "openvino") for p in ("fp16", "fp32", "int8")]
    expected = sorted(
        expected + [f"coreml-{p}" for p in ("fp16", "fp32", "int8", "w8")] + ["executorch-fp32", "executorch-int8"]
    )
    built = sorted(p.name for p in root.iterdir() if p.is_dir())
    # an outside target installed beside bitedge converts too: only the built-ins' artifacts are fixed here
    outside = {c.name for c in converter_classes() if not is_builtin(c.name)}
    assert [name for name in built if name.rsplit("-", 1)[0] not in outside] == expected
    assert (root / "report.html").is_file() and (root / "report.md").is_file()
    manifest = json.loads((root / "onnx-fp32" / "bitedge.json").read_text())
    assert manifest["status"] == "passed" and manifest["parity"]["artifact_accuracy"] >= 95.0
    assert "skipped tensorrt" in out.out
    assert main(["convert", "--out", str(root)]) == 2  # a second run does not overwrite good artifacts
