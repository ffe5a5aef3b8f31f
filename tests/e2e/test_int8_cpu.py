"""``--cpu vnni``: 8-bit weights for x86 CPUs with VNNI, proven on any CPU.

A CPU without VNNI may saturate 8-bit weights in its u8 x s8 kernels, so the VNNI graph is checked here where
no CPU instruction can interfere: by its graph rules, and by ONNX's own reference evaluator (numpy, exact
Q/DQ semantics in float) against the simulated model rebuilt from the manifest, as verify and diagnose rebuild it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from bitedge.artifacts.manifest import Manifest
from bitedge.calibration.placement import X86_UINT8
from bitedge.calibration.simulate import simulate
from bitedge.calibration.table import CalibrationTable
from bitedge.cli import main
from bitedge.converters._qdq_lint import lint_int8
from bitedge.cpu import Cpu, detect_cpu
from bitedge.model.demo import DEMO_EVAL
from bitedge.parity.images import Batches, scan_images
from bitedge.pipeline.rebuild import deploy_graph, float_reference, simulated_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vnni_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vnni") / "demo"
    args = ["convert", "--target", "onnx", "openvino", "tensorrt", "--precision", "int8", "--cpu", "vnni"]
    assert main([*args, "--out", str(out)]) == 0
    return out


def test_the_manifest_records_the_cpu_and_the_placement(vnni_artifacts: Path) -> None:
    for target in ("onnx", "openvino"):
        calibration = json.loads((vnni_artifacts / f"{target}-int8" / "bitedge.json").read_text())["calibration"]
        assert (calibration["placement"], calibration["cpu"], calibration["cpu_detected"]) == (
            "x86-uint8-vnni", "vnni", False,
        )  # fmt: skip
    tensorrt = json.loads((vnni_artifacts / "tensorrt-int8" / "bitedge.json").read_text())["calibration"]
    assert tensorrt["placement"] == "symmetric-int8" and tensorrt["cpu"] is None  # the same on every CPU


def test_the_graph_has_8_bit_weights_and_keeps_its_rules(vnni_artifacts: Path, capsys: pytest.CaptureFixture) -> None:
    proto = onnx.load(str(vnni_artifacts / "onnx-int8" / "model.onnx"))
    weights = [numpy_helper.to_array(t) for t in proto.graph.initializer if t.name.endswith("weight_int8")]
    assert len(weights) == 18 and all(int(np.abs(w.astype(np.int16)).max()) == 127 for w in weights)
    assert lint_int8(proto, X86_UINT8.for_cpu(Cpu.VNNI)) == []
    problems = lint_int8(proto, X86_UINT8)  # the AVX2 placement's rule: these weights would saturate there
    assert len(problems) == 18 and all("int8 weights beyond +-63" in p for p in problems)
    assert main(["inspect", str(vnni_artifacts / "onnx-int8")]) == 0
    assert "vnni CPUs (--cpu; placement x86-uint8-vnni)" in capsys.readouterr().out


def test_the_graph_computes_the_vnni_simulated_model_on_any_cpu(vnni_artifacts: Path) -> None:
    directory = vnni_artifacts / "onnx-int8"
    manifest = Manifest.read(directory)
    model = float_reference(manifest, None, log=lambda _: None)
    deploy = deploy_graph(model, manifest)
    simulated = simulated_model(directory, manifest, deploy)  # what verify and diagnose rebuild: 8-bit weights
    seven_bits = simulate(deploy, CalibrationTable.load(directory / "calibration.json"), X86_UINT8)
    images = scan_images(DEMO_EVAL, list(model.config.labels))
    pixels = next(iter(Batches(images, model.image_processor, batch_size=8)))[0]
    (graph,) = ReferenceEvaluator(str(directory / "model.onnx")).run(None, {manifest.input.name: pixels})
    assert simulated is not None
    with torch.no_grad():
        expected, other = (m(torch.from_numpy(pixels)).numpy() for m in (simulated, seven_bits))
    # float summation order flips a rare rounding tie by one step (measured 50 dB); the 7-bit model is 34 dB away
    assert _snr_db(graph, expected) > 45 > _snr_db(graph, other)
    assert (graph.argmax(1) == expected.argmax(1)).all()


def _snr_db(signal: np.ndarray, reference: np.ndarray) -> float:
    return float(10 * np.log10((reference**2).sum() / ((signal - reference) ** 2).sum()))


def test_verify_and_diagnose_rebuild_the_vnni_simulated_model(vnni_artifacts: Path, tmp_path: Path) -> None:
    assert main(["verify", str(vnni_artifacts / "openvino-int8")]) == 0
    out = tmp_path / "diagnosis"
    assert main(["diagnose", str(vnni_artifacts / "onnx-int8"), "--images", "8", "--out", str(out)]) in (0, 1)
    assert json.loads((out / "diagnose.json").read_text())["layers"]


def test_auto_is_this_machines_cpu_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "auto"
    assert main(["convert", "--target", "onnx", "--precision", "int8", "--out", str(out)]) == 0
    cpu = detect_cpu()
    calibration = json.loads((out / "bitedge.json").read_text())["calibration"]
    assert (calibration["cpu"], calibration["cpu_detected"]) == (cpu.value, True)
    assert calibration["placement"] == X86_UINT8.for_cpu(cpu).name
    captured = capsys.readouterr()
    assert f"made for {cpu.value} CPUs (this machine's, --cpu auto)" in captured.err  # the log
    assert f"int8 of onnx made for {cpu.value} CPUs (this machine's, --cpu auto" in captured.out  # the summary


def test_the_cpu_is_checked_at_the_boundary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import bitedge

    with pytest.raises(bitedge.BadInputError, match="unknown --cpu 'arm'"):
        bitedge.convert(out=tmp_path / "x", targets=["onnx"], precisions=["int8"], cpu="arm")
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal, usage and all
        main(["convert", "--target", "onnx", "--out", str(tmp_path / "y"), "--cpu", "arm"])
    assert exited.value.code == 2 and "invalid choice: 'arm'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_a_tensor_read_by_two_layers_is_quantized_once(vnni_artifacts: Path) -> None:
    """A stage's first block feeds one activation to its first convolution and to its projection shortcut: one
    Q/DQ pair serves both (two would keep a ReLU, a Q and a transpose onnxruntime otherwise drops)."""
    graph = onnx.load(str(vnni_artifacts / "onnx-int8" / "model.onnx")).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quantizers = [n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants]
    keys = [(n.input[0], float(constants[n.input[1]]), int(constants[n.input[2]])) for n in quantizers]
    assert len(keys) == len(set(keys))
    readers: dict[str, int] = {}
    for node in graph.node:
        if node.op_type == "Conv":
            readers[node.input[0]] = readers.get(node.input[0], 0) + 1
    shared = [dq for dq, count in readers.items() if count == 2]
    assert len(shared) == 4, shared  # each of the demo's four stages opens with a projection shortcut
