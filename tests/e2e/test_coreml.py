"""The Core ML target: bitedge's .mlpackages, checked by the emulator (and by Core ML itself on macOS)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

from conftest import hf_classifier  # noqa: E402

from bitedge.cli import main  # noqa: E402
from bitedge.converters._coreml_package import MLPackage  # noqa: E402
from bitedge.converters._coreml_runner import EmulatedRunner  # noqa: E402
from bitedge.converters.coreml import PACKAGE  # noqa: E402
from bitedge.model.demo import DEMO_EVAL  # noqa: E402

pytestmark = pytest.mark.slow  # end-to-end runs of seconds each: `pytest` runs them, `-m "not slow"` does not

CLIP_PREPROCESSING = {
    "do_resize": True, "size": {"shortest_edge": 64}, "do_center_crop": True, "crop_size": {"height": 64, "width": 64},
    "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
}  # fmt: skip


def _convert(out: Path, *extra: str) -> int:
    return main(["convert", "--target", "coreml", "--out", str(out), *extra])


def _manifest(directory: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((directory / "bitedge.json").read_text())  # type: ignore[no-any-return]


def _comparison(directory: Path, prefix: str) -> dict:  # type: ignore[type-arg]
    report = json.loads((directory / "parity.json").read_text())
    return next(c for c in report["comparisons"] if c["name"].startswith(prefix))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def demo_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coreml") / "demo"
    assert _convert(root) == 0  # fp32, fp16, w8, int8 of the demo model, each verified by the emulator
    return root


def test_demo_fp32_agrees_exactly(demo_packages: Path) -> None:
    parity = _manifest(demo_packages / "coreml-fp32")["parity"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] < 1e-3


@pytest.mark.parametrize("precision", ["fp16", "w8"])
def test_demo_fp16_and_w8_pass_their_budgets(demo_packages: Path, precision: str) -> None:
    manifest = _manifest(demo_packages / f"coreml-{precision}")
    assert manifest["status"] == "passed"
    notes = json.loads((demo_packages / f"coreml-{precision}" / "parity.json").read_text())["notes"]
    assert not [n for n in notes if "overflow (inf" in n]


def test_demo_w8a8_matches_float_and_the_simulated_model(demo_packages: Path) -> None:
    directory = demo_packages / "coreml-int8"
    assert _manifest(directory)["status"] == "passed"
    assert _comparison(directory, "artifact vs float")["metrics"]["top1_agreement"] >= 0.99
    assert _comparison(directory, "artifact vs simulated")["metrics"]["top1_agreement"] >= 0.995
    ops = MLPackage(directory / PACKAGE).op_histogram()
    assert ops["quantize"] >= 10 and ops["dequantize"] == ops["quantize"] and ops["constexpr_affine_dequantize"] >= 10


@pytest.mark.parametrize(("precision", "spec_version"), [("fp32", 6), ("fp16", 6), ("w8", 7), ("int8", 8)])
def test_packages_are_app_ready(demo_packages: Path, precision: str, spec_version: int) -> None:
    directory = demo_packages / f"coreml-{precision}"
    spec = MLPackage(directory / PACKAGE).spec
    assert spec.specificationVersion == spec_version  # the lowest deployment target the precision allows
    (image,) = spec.description.input
    assert image.type.WhichOneof("Type") == "imageType" and image.type.imageType.width == 64
    assert image.shortDescription
    assert [o.name for o in spec.description.output] == ["classLabel", "classLabel_probs"]
    metadata = spec.description.metadata
    assert metadata.author and metadata.license and metadata.shortDescription
    assert json.loads(metadata.userDefined["bitedge.labels"]) == [str(d) for d in range(10)]
    assert metadata.userDefined["bitedge.precision"] == precision
    usage = (directory / "USAGE.md").read_text()
    assert "VNCoreMLRequest" in usage and ".centerCrop" in usage


def test_classifier_probabilities_are_the_softmax_of_the_logits(demo_packages: Path) -> None:
    runner = EmulatedRunner(demo_packages / "coreml-fp32" / PACKAGE, batch=1)
    pixels = np.random.default_rng(0).integers(0, 256, (1, 3, 64, 64)).astype(np.float32)
    execution = runner.emulator.run({"image": pixels})
    logits = execution.values[runner.logits_name].reshape(-1)
    probs = np.array(list(execution.outputs["classLabel_probs"].values()))
    assert np.allclose(probs, np.exp(logits) / np.exp(logits).sum(), atol=1e-6)
    assert execution.outputs["classLabel"] == str(int(logits.argmax()))


def test_verify_rechecks_and_detects_a_damaged_package(demo_packages: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "int8"
    shutil.copytree(demo_packages / "coreml-int8", copy)
    assert main(["verify", str(copy)]) == 0
    weights = copy / PACKAGE / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.write_bytes(weights.read_bytes()[:200])
    assert main(["verify", str(copy)]) != 0


def test_predict_runs_a_package(demo_packages: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = sorted((DEMO_EVAL / "7").iterdir())[0]
    assert main(["predict", str(demo_packages / "coreml-int8"), str(image), "--json", "--top-k", "1"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["predictions"][0]["label"] == "7"


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS bench runs MLModel.predict")
def test_bench_says_it_needs_a_mac(demo_packages: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(demo_packages / "coreml-fp16"), "--runs", "1", "--duration", "0.1"]) == 1
    assert "needs a Mac" in capsys.readouterr().err


def test_tensor_input(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tensor"
    assert main(["convert", str(tiny_hf_dir), "--target", "coreml", "--precision", "fp32", "--tensor-input",
                 "--eval", str(eval_dir), "--out", str(out)]) == 0  # fmt: skip
    manifest = _manifest(out)
    assert manifest["input"]["name"] == "pixel_values" and manifest["input"]["normalization"] == "caller"
    (feature,) = MLPackage(out / PACKAGE).spec.description.input
    assert feature.type.WhichOneof("Type") == "multiArrayType"
    assert manifest["parity"]["max_abs_diff"] < 1e-4


def test_per_channel_std_folds_into_the_stem_exactly(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path) -> None:
    (tiny_hf_dir / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSING))
    out = tmp_path / "clip"
    args = ["convert", str(tiny_hf_dir), "--target", "coreml", "--eval", str(eval_dir), "--out", str(out)]
    assert main([*args, "--precision", "fp32"]) == 0
    assert _manifest(out)["parity"]["max_abs_diff"] < 1e-4
    assert main([*args, "--precision", "int8", "--overwrite"]) == 2  # refused before any work


def test_fp16_groupnorm_statistics_do_not_overflow(tmp_path: Path, eval_dir: Path) -> None:
    """GroupNorm inputs in the thousands: the variance would overflow fp16; bitedge keeps it in fp32."""
    model = hf_classifier()
    with torch.no_grad():
        model.bit.encoder.stages[0].layers[0].norm1.weight.mul_(300.0)
    model.save_pretrained(tmp_path / "loud")
    out = tmp_path / "fp16"
    args = ["convert", str(tmp_path / "loud"), "--target", "coreml", "--precision", "fp16"]
    assert main([*args, "--eval", str(eval_dir), "--out", str(out)]) == 0
    runner = EmulatedRunner(out / PACKAGE, batch=1)
    shape = _manifest(out)["input"]["shape"]
    pixels = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    execution = runner.emulator.run({"image": pixels})
    squares = [execution.values[op.outputs[0].name] for op in runner.package.block.operations if op.type == "square"]
    assert execution.overflows == [] and max(float(np.abs(v).max()) for v in squares) > 65504


@pytest.mark.macos
@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction runs only on macOS")
def test_core_ml_itself_agrees_with_the_emulator(demo_packages: Path) -> None:  # pragma: no cover - macOS
    report = json.loads((demo_packages / "coreml-fp32" / "parity.json").read_text())
    shown = [c for c in report["comparisons"] if c["name"].startswith("artifact run with MLModel.predict")]
    assert len(shown) == 2 and all(c["metrics"]["top1_agreement"] == 1.0 for c in shown)
