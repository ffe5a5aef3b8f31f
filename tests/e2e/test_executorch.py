"""The ExecuTorch target (issue 20): .pte programs built, run and gated in ExecuTorch's runtime here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from bitedge.artifacts.manifest import Manifest
from bitedge.cli import main
from bitedge.model.demo import DEMO_EVAL, DEMO_MODEL

pytest.importorskip("executorch.runtime", reason="install bitedge[executorch]")
pytestmark = pytest.mark.slow


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("executorch") / "demo-pte"
    assert main(["convert", "--target", "executorch", "--precision", "fp32", "--out", str(out)]) == 0
    return out


def test_the_demo_program_passes_in_executorch_with_one_xnnpack_partition(artifact: Path) -> None:
    manifest = Manifest.read(artifact)
    assert manifest.status == "passed" and manifest.precision == "fp32" and manifest.input.shape[0] == 1
    assert {"model.pte", "labels.txt", "preprocessing.json", "USAGE.md"} <= set(manifest.files)
    parity = json.loads((artifact / "parity.json").read_text())
    assert any("lowered to 1 XNNPACK partitions" in note for note in parity["notes"]), parity["notes"]
    assert (artifact / "labels.txt").read_text().splitlines() == manifest.labels
    preprocessing = json.loads((artifact / "preprocessing.json").read_text())
    assert (
        preprocessing["input"] == [1, 3, 64, 64] and preprocessing["image_mean"] == manifest.preprocessing["image_mean"]
    )
    usage = (artifact / "USAGE.md").read_text()
    assert "Module.load" in usage and "longArrayOf(1, 3, 64, 64)" in usage


def test_predict_bench_and_verify_run_the_program(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = sorted((DEMO_EVAL / "7").iterdir())[0]
    code, out, _ = _run(capsys, "predict", str(artifact), str(image), "--top-k", "1")
    assert code == 0 and out.split(": ")[1].startswith("7 ")
    code, out, _ = _run(capsys, "bench", str(artifact), "--runs", "5", "--duration", "0.2")
    assert code == 0 and "fp32" in out
    assert _run(capsys, "verify", str(artifact))[0] == 0


def test_native_group_norm_runs_between_partitions_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "native"
    args = [
        "convert",
        "--target",
        "executorch",
        "--precision",
        "fp32",
        "--executorch-group-norm",
        "native",
        "--raw-pixel-input",
    ]
    code, _, _ = _run(capsys, *args, "--out", str(out))
    assert code == 0
    notes = json.loads((out / "parity.json").read_text())["notes"]
    assert any("native_group_norm" in note and "14 XNNPACK partitions" in note for note in notes), notes
    assert Manifest.read(out).input.raw_pixels


def test_a_corrupt_program_is_refused_by_name(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    (broken / "model.pte").write_bytes(b"not a program" * 100)
    image = sorted((DEMO_EVAL / "7").iterdir())[0]
    code, _, err = _run(capsys, "predict", str(broken), str(image), "--no-verify-hashes")
    assert code == 2 and "ExecuTorch cannot load it" in err


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's int8 program from a table calibrated beforehand with one layer kept float."""
    root = tmp_path_factory.mktemp("executorch-int8")
    table = root / "table.json"
    assert main(["calibrate", "--out", str(table), "--exclude", "bit.encoder.stages.3.layers.0.conv3"]) == 0
    out = root / "demo-pte-int8"
    args = ["convert", "--target", "executorch", "--precision", "int8", "--calibration-table", str(table)]
    assert main([*args, "--out", str(out)]) == 0
    return out


def test_the_demo_int8_program_runs_the_tables_int8_in_one_partition(int8_artifact: Path) -> None:
    manifest = Manifest.read(int8_artifact)
    assert manifest.status == "passed" and manifest.precision == "int8"
    calibration = manifest.calibration
    assert calibration is not None and calibration.placement == "xnnpack-int8" and calibration.quantizer == "bitedge"
    assert calibration.excluded == ["bit.encoder.stages.3.layers.0.conv3"]  # the table's float layer, kept
    parity = json.loads((int8_artifact / "parity.json").read_text())
    versus_float, versus_simulated = parity["comparisons"][:2]
    assert versus_float["metrics"]["top1_agreement"] >= 0.99 and versus_simulated["passed"]
    # nothing int8 fell out of XNNPACK into slow portable kernels
    assert "lowered to 1 XNNPACK partitions; outside them (portable kernels): nothing" in parity["notes"]


def test_the_int8_stem_pads_with_zeros_exactly_as_the_simulated_stem(tmp_path: Path) -> None:
    """BiT's stem (conv 7x7/2, zero pad 1, max-pool 3x3/2) alone, int8 in ExecuTorch, against the simulated
    stem, on the demo's images, whose conv outputs are negative at the borders: there a max-pool padded with
    -inf (the usual way to lower a padded pool) differs; the program must not."""
    from executorch.runtime import Runtime

    import bitedge
    from bitedge.calibration.placement import XNNPACK_INT8
    from bitedge.calibration.simulate import simulate
    from bitedge.converters.executorch import lower
    from bitedge.fold import fold
    from bitedge.model.loading import load_model

    class Stem(nn.Module):  # keeps the deploy graph's layer names, so the table's ranges apply
        def __init__(self, embedder: nn.Module) -> None:
            super().__init__()
            self.bit = nn.Module()
            self.bit.embedder = embedder

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.bit.embedder(x)
            return out

    conv_name = "bit.embedder.convolution"
    table = bitedge.calibrate(out=tmp_path / "table.json").only([conv_name])
    model = load_model(DEMO_MODEL)
    stem = Stem(fold(model).bit.embedder).eval()
    simulated = simulate(stem, table, XNNPACK_INT8)
    images = [image for digit in sorted(DEMO_EVAL.iterdir()) for image in sorted(digit.iterdir())[:2]]
    pixels = [model.image_processor(Image.open(image).convert("RGB"), return_tensors="np")["pixel_values"]
              for image in images]  # fmt: skip
    example = (torch.zeros(1, 3, *pixels[0].shape[-2:]),)
    buffer = lower(stem, example, simulated).buffer  # the loaded program reads it: keep it alive
    method = Runtime.get().load_program(buffer).load_method("forward")
    step = simulated.get_submodule(conv_name).output_q.scale  # one int8 step of the stem's output
    with torch.no_grad():
        for array in pixels:
            x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            program = torch.from_numpy(method.execute([x])[0].numpy().copy())
            expected = simulated(x)
            assert (program - expected).abs().max().item() <= step * 1.001  # at most one rounding step
            inf_padded = F.max_pool2d(simulated.get_submodule(conv_name)(x), 3, 2, padding=1)
            assert (inf_padded - expected).abs().max().item() > 2 * step  # the borders are negative here
