"""INT8 ONNX: Q/DQ rules, fidelity to the simulated model, demo accuracy, table reuse, verify."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import onnx
import pytest
from onnx import helper, numpy_helper

from bitedge.calibration.placement import X86_UINT8
from bitedge.cli import main
from bitedge.converters._qdq_lint import lint_int8

pytestmark = pytest.mark.slow  # end-to-end runs of seconds each: `pytest` runs them, `-m "not slow"` does not
AVX2 = ["--cpu", "avx2"]  # the 7-bit x86-uint8 placement, whatever CPU runs the tests (test_int8_cpu.py: vnni)


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "demo-int8"
    assert main(["convert", "--target", "onnx", "--precision", "int8", "--out", str(out), *AVX2]) == 0
    return out


def test_demo_int8_meets_the_budgets(int8_artifact: Path) -> None:
    manifest = json.loads((int8_artifact / "bitedge.json").read_text())
    assert manifest["status"] == "passed" and manifest["precision"] == "int8"
    parity = manifest["parity"]
    assert parity["top1_agreement"] >= 0.99
    assert parity["reference_accuracy"] - parity["artifact_accuracy"] <= 0.5
    fidelity = parity["comparisons"]["artifact vs simulated-quantized (conversion fidelity)"]
    assert fidelity["gated"] and fidelity["top1"] >= 0.995
    calibration = manifest["calibration"]
    assert calibration["method"] == "entropy" and calibration["used"] == 200 and calibration["requested"] == 512
    assert len(calibration["manifest_sha256"]) == 64 and (int8_artifact / "calibration.json").is_file()
    report = (int8_artifact / "parity.md").read_text()
    assert "quantization error" in report and "conversion fidelity" in report


def test_graph_follows_its_placement(int8_artifact: Path) -> None:
    proto = onnx.load(str(int8_artifact / "model.onnx"))
    assert lint_int8(proto, X86_UINT8) == []
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    # 17 convs with Q/DQ on input and output, the head on its input, less the 4 inputs a stage's first conv
    # shares with its projection shortcut; DQ: those activations, 18 weights, the head's bias
    assert ops["QuantizeLinear"] == 18 + 17 - 4 and ops["DequantizeLinear"] == 35 - 4 + 18 + 1
    assert ops["InstanceNormalization"] == 13
    weights = [t for t in proto.graph.initializer if t.name.endswith("weight_int8")]
    assert len(weights) == 18 and all(t.data_type == onnx.TensorProto.INT8 for t in weights)
    types = collections.Counter(
        t.data_type for t in proto.graph.initializer if t.name.endswith(("input_zero_point", "output_zero_point"))
    )  # uint8, except the stem's signed input (symmetric int8)
    assert types == {onnx.TensorProto.UINT8: 34 - 4, onnx.TensorProto.INT8: 1}
    assert all(abs(numpy_helper.to_array(t)).max() == 63 for t in weights)  # 7 bits: no vpmaddubsw saturation


def test_onnxruntime_fuses_every_convolution(int8_artifact: Path, tmp_path: Path) -> None:
    """The point of the x86-uint8 placement: onnxruntime runs every conv as QLinearConv, none in float."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(int8_artifact / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops["QLinearConv"] == 17 and ops["QGemm"] == 1, ops
    assert not {"Conv", "FusedConv", "Gemm"} & set(ops), ops


def _broken(proto: onnx.ModelProto, change: str) -> onnx.ModelProto:
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    graph = broken.graph
    if change == "weight-zero-point":
        zp = next(t for t in graph.initializer if t.name.endswith("weight_zero_point"))
        zp.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(zp) + 1, zp.name))
    elif change == "axis":
        dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.name.endswith("/weight"))
        next(a for a in dq.attribute if a.name == "axis").i = 1
    elif change == "int16":
        zp = next(t for t in graph.initializer if t.name.endswith("output_zero_point"))
        zp.CopyFrom(helper.make_tensor(zp.name, onnx.TensorProto.INT16, [], [0]))
    elif change == "asymmetric-int8":
        zp = next(t for t in graph.initializer if t.name.endswith("convolution.input_zero_point"))
        zp.CopyFrom(helper.make_tensor(zp.name, onnx.TensorProto.INT8, [], [3]))
    elif change == "scale":
        scale = next(t for t in graph.initializer if t.name.endswith("output_scale"))
        scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * 0, scale.name))
    return broken


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("weight-zero-point", "zero points of 0"),
        ("axis", "axis 0"),
        ("int16", "is not"),
        ("asymmetric-int8", "non-zero int8 zero point"),
        ("scale", "positive and finite"),
    ],
)
def test_lint_catches_a_graph_off_its_placement(int8_artifact: Path, change: str, message: str) -> None:
    problems = lint_int8(_broken(onnx.load(str(int8_artifact / "model.onnx")), change), X86_UINT8)
    assert any(message in p for p in problems), problems


def test_lint_refuses_a_float_graph(tmp_path: Path) -> None:
    out = tmp_path / "fp32"
    assert main(["convert", "--target", "onnx", "--precision", "fp32", "--out", str(out)]) == 0
    assert lint_int8(onnx.load(str(out / "model.onnx")), X86_UINT8) == [
        "the graph has no QuantizeLinear/DequantizeLinear: it is not an INT8 graph"
    ]


def test_verify_int8_artifact(int8_artifact: Path) -> None:
    assert main(["verify", str(int8_artifact)]) == 0


def test_table_reuse_gives_identical_artifacts(
    int8_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "table.json"
    assert main(["calibrate", "--out", str(table)]) == 0
    assert json.loads(table.read_text()) == json.loads((int8_artifact / "calibration.json").read_text())
    out = tmp_path / "reused"
    args = ["convert", "--target", "onnx", "--precision", "int8", "--out", str(out), "--calibration-table", str(table)]
    assert main([*args, *AVX2]) == 0
    assert (out / "model.onnx").read_bytes() == (int8_artifact / "model.onnx").read_bytes()
    assert main(["calibrate", "--out", str(table)]) == 2  # no silent overwrite
    capsys.readouterr()


def test_table_for_another_model_is_refused(
    tmp_path: Path, tiny_hf_dir: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "table.json"
    assert main(["calibrate", "--out", str(table), "--calibration-size", "20"]) == 0
    args = ["convert", str(tiny_hf_dir), "--target", "onnx", "--precision", "int8", "--out", str(tmp_path / "o")]
    assert main([*args, "--image-size", "64", "--calibration-table", str(table), "--eval", str(eval_dir)]) == 2
    err = capsys.readouterr().err
    assert "another checkpoint" in err and "float reference" not in err  # refused before any work
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--calibration", "/nonexistent/images"], "no such calibration source"),
        (["--exclude", "stages.42"], "matches no layer"),
        (["--calibration-table", "/nonexistent/table.json"], "no such calibration table"),
    ],
)
def test_bad_calibration_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "x"
    assert main(["convert", "--target", "onnx", "--precision", "int8", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_excluded_layers_stay_float(tmp_path: Path) -> None:
    out = tmp_path / "excl"
    args = ["convert", "--target", "onnx", "--precision", "int8", "--out", str(out), "--exclude", "stem", "head"]
    assert main(args) == 0
    proto = onnx.load(str(out / "model.onnx"))
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    # 16 convs: input and output, less the 4 inputs shared with a projection shortcut
    assert ops["QuantizeLinear"] == 2 * 16 - 4 and ops["Conv"] == 17 and ops["Gemm"] == 1
    assert not any(n.op_type == "DequantizeLinear" and "embedder" in n.name for n in proto.graph.node)
    assert json.loads((out / "bitedge.json").read_text())["calibration"]["excluded"] == [
        "bit.embedder.convolution",
        "classifier.1",
    ]
