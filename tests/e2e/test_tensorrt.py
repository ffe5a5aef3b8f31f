"""TensorRT bundles: built and verified here up to the engine; the engine itself only on a GPU device."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from bitedge.cli import main
from bitedge.converters._tensorrt_engine import engine_unavailable
from bitedge.converters.tensorrt import lint_tensorrt

pytestmark = pytest.mark.slow  # end-to-end runs of seconds each: `pytest` runs them, `-m "not slow"` does not


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trt") / "demo"
    assert main(["convert", "--target", "tensorrt", "--out", str(root)]) == 0  # fp16 and int8
    return root


def test_bundles_pass_lint_and_onnxruntime_parity(bundles: Path) -> None:
    for precision in ("fp16", "int8"):
        directory = bundles / f"tensorrt-{precision}"
        manifest = json.loads((directory / "bitedge.json").read_text())
        assert manifest["status"] == "passed", precision
        assert {"model.onnx", "build_spec.json"} <= set(manifest["files"])
        proto = onnx.load(str(directory / "model.onnx"))
        assert lint_tensorrt(proto, int8=precision == "int8", allowed_float=set()) == []
        spec = json.loads((directory / "build_spec.json").read_text())
        assert spec["strongly_typed"] and spec["precision"] == precision and spec["batch_profile"]["max"] == 16
    int8 = json.loads((bundles / "tensorrt-int8" / "bitedge.json").read_text())["parity"]
    assert int8["top1_agreement"] >= 0.99
    assert int8["comparisons"]["artifact vs simulated-quantized (conversion fidelity)"]["top1"] >= 0.995
    report = (bundles / "tensorrt-int8" / "parity.md").read_text()
    if engine_unavailable() is not None:
        assert "engine deferred" in report


def _planted(proto: onnx.ModelProto, violation: str) -> onnx.ModelProto:
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    nodes = broken.graph.node
    if violation == "asymmetric":
        zp = next(t for t in broken.graph.initializer if t.name.endswith("input_zero_point"))
        zp.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(zp) + 3, zp.name))
    elif violation == "unquantized-input":
        conv = next(n for n in nodes if n.op_type == "Conv" and "stages_1" in n.name)
        dq = next(n for n in nodes if n.output[0] == conv.input[0])
        q = next(n for n in nodes if n.output[0] == dq.input[0])
        conv.input[0] = q.input[0]  # bypass the activation's Q/DQ
    elif violation == "qdq-in-norm":
        gn = next(n for n in nodes if n.op_type == "GroupNormalization")
        dq = next(n for n in nodes if n.op_type == "DequantizeLinear" and n.name.endswith("/dq"))
        gn.input[0] = dq.output[0]
    return broken


@pytest.mark.parametrize(
    ("violation", "message"),
    [
        ("asymmetric", "non-zero int8 zero point"),
        ("unquantized-input", "input is not quantized"),
        ("qdq-in-norm", "GroupNormalization"),
    ],
)
def test_lint_catches_planted_violations(bundles: Path, violation: str, message: str) -> None:
    proto = onnx.load(str(bundles / "tensorrt-int8" / "model.onnx"))
    problems = lint_tensorrt(_planted(proto, violation), int8=True, allowed_float=set())
    assert any(message in p for p in problems), problems


def test_default_convert_includes_tensorrt_only_where_engines_can_be_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", "--target", "all", "--precision", "fp32", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    reason = engine_unavailable()
    if reason is not None:  # no GPU or no tensorrt here: left out, and the summary says why
        assert f"skipped tensorrt: {reason}" in out
    else:  # a GPU machine: tensorrt takes part, and only its missing fp32 support keeps it out of this run
        assert "skipped tensorrt: fp32 is not supported by tensorrt" in out


def test_build_engine_builds_on_a_gpu_or_says_what_to_do(bundles: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs everywhere: without TensorRT and a GPU the command must explain itself; with them it must build."""
    code = main(["build-engine", str(bundles / "tensorrt-int8")])
    err = capsys.readouterr().err
    if engine_unavailable() is not None:
        assert code == 2
        assert "pip install 'bitedge[tensorrt]'" in err and "on the device" in err
    else:  # pragma: no cover - only on a machine with TensorRT and an NVIDIA GPU
        assert code == 0
        assert (bundles / "tensorrt-int8" / "model.engine").is_file()
    assert main(["build-engine", str(bundles.parent)]) == 2  # not an artifact at all
