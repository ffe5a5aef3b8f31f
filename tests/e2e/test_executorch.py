"""The ExecuTorch target (issue 20): .pte programs built, run and gated in ExecuTorch's runtime here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitedge.artifacts.manifest import Manifest
from bitedge.cli import main
from bitedge.model.demo import DEMO_EVAL

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
    assert main(["convert", "--target", "executorch", "--out", str(out)]) == 0
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
    args = ["convert", "--target", "executorch", "--executorch-group-norm", "native", "--raw-pixel-input"]
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
