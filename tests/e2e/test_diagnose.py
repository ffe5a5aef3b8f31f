"""``bitedge diagnose`` (issue 30): a fault injected into one named layer of a real artifact is found at that
layer, in onnxruntime and OpenVINO (Core ML and ExecuTorch: test_diagnose_coreml.py, _executorch.py); a
clean artifact falls off nowhere; what cannot be diagnosed is refused, naming why."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import demo_eval_subset
from hostile_fixtures import digests, run, tamper
from onnx import numpy_helper

from bitedge.artifacts.integrity import Allowances
from bitedge.cli import main
from bitedge.converters.base import Converter
from bitedge.converters.onnx import OnnxConverter
from bitedge.diagnose.compare import CLIFF_DB
from bitedge.diagnose.run import diagnose

LOOSE = Allowances(failed=True, modified=True)  # the faults below change the artifact's files on purpose
WEIGHT, NORM, QDQ = "bit.encoder.stages.1.layers.0.conv2", "bit.encoder.stages.1.layers.0.norm2", (
    "bit.encoder.stages.2.layers.0.conv1")  # fmt: skip


def _taps(model: onnx.ModelProto) -> dict[str, str]:
    recorded: dict[str, str] = json.loads({p.key: p.value for p in model.metadata_props}["bitedge.taps"])
    return recorded


def _onnx_weight(path: Path, layer: str) -> None:
    model = onnx.load(str(path))
    for tensor in model.graph.initializer:
        if tensor.name in (f"{layer}.weight", f"{layer}.weight_scale"):
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.5, tensor.name))
    onnx.save(model, str(path))


def _onnx_norm_eps(path: Path, layer: str) -> None:
    """The GroupNorm's InstanceNormalization (onnxruntime's form) gets eps 1 instead of 1e-5."""
    model = onnx.load(str(path))
    group_norm = _taps(model)[f"{layer}|relu"]
    node = next(n for n in model.graph.node if n.name == f"{group_norm}/in")
    next(a for a in node.attribute if a.name == "epsilon").f = 1.0
    onnx.save(model, str(path))


def _onnx_output_scale(path: Path, layer: str) -> None:
    """The conv's output DequantizeLinear reads twice the scale its QuantizeLinear wrote with."""
    model = onnx.load(str(path))
    scale = next(t for t in model.graph.initializer if t.name == f"{layer}.output_scale")
    doubled = numpy_helper.from_array(numpy_helper.to_array(scale) * 2, f"{layer}.output_scale_fault")
    model.graph.initializer.append(doubled)
    node = next(n for n in model.graph.node if n.name == f"{layer}.output/dq")
    node.input[1] = doubled.name
    onnx.save(model, str(path))


def _openvino_save(model: object, path: Path) -> None:
    """Beside, then over the original: OpenVINO maps the .bin it read, so writing into it would crash."""
    import openvino as ov

    ov.save_model(model, str(path.with_name("fault.xml")), compress_to_fp16=False)
    path.with_name("fault.bin").replace(path.with_suffix(".bin"))
    path.with_name("fault.xml").replace(path)


def _openvino_weight(path: Path, layer: str) -> None:
    """The layer's Convolution reads its weight (a constant, or int8's dequantizing Multiply) times 1.5."""
    import openvino as ov
    from openvino import opset13

    model = ov.Core().read_model(str(path))
    prefix = layer.replace(".", "_")
    conv = next(o for o in model.get_ops() if o.get_type_name() == "Convolution" and
                o.get_friendly_name().split("/")[0] == prefix)  # fmt: skip
    weight = conv.input(1).get_source_output()
    conv.input(1).replace_source_output(opset13.multiply(weight, opset13.constant(np.float32(1.5))).output(0))
    _openvino_save(model, path)


def _openvino_norm_eps(path: Path, layer: str) -> None:
    """The GroupNormalization op's epsilon, edited in the IR's XML."""
    import openvino as ov

    taps = json.loads(ov.Core().read_model(str(path)).get_rt_info(["bitedge", "taps"]).astype(str))
    text = path.read_text()
    start = text.index(f'name="{taps[f"{layer}|relu"]}" type="GroupNormalization"')
    at = text.index('epsilon="', start) + len('epsilon="')
    path.write_text(text[:at] + "1.0" + text[text.index('"', at) :])


def _openvino_output_scale(path: Path, layer: str) -> None:
    """The conv's output FakeQuantize maps to twice its range (its output_low and output_high doubled)."""
    import openvino as ov
    from openvino import opset13

    model = ov.Core().read_model(str(path))
    fq = next(o for o in model.get_ops() if o.get_friendly_name() == f"{layer}.output/dq")
    for port in (3, 4):
        source = fq.input(port).get_source_output().get_node()
        fq.input(port).replace_source_output(opset13.constant(source.get_data() * 2).output(0))
    _openvino_save(model, path)


@pytest.fixture(scope="module")
def demo_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo model in onnx and openvino, fp32 and int8, verified on 20 held-out digits."""
    root = tmp_path_factory.mktemp("diagnose")
    images = demo_eval_subset(root / "eval", per_class=2)
    args = ["convert", "--target", "onnx", "openvino", "--precision", "fp32", "int8", "--eval", str(images)]
    assert main([*args, "--out", str(root / "arts"), "--calibration-size", "64"]) == 0
    return root / "arts"


FAULTS: dict[str, tuple[str, str, Callable[[Path, str], None], str]] = {
    "onnx-fp32-weight": ("onnx-fp32", "model.onnx", _onnx_weight, WEIGHT),
    "onnx-fp32-norm-eps": ("onnx-fp32", "model.onnx", _onnx_norm_eps, NORM),
    "onnx-int8-weight": ("onnx-int8", "model.onnx", _onnx_weight, WEIGHT),
    "onnx-int8-qdq-scale": ("onnx-int8", "model.onnx", _onnx_output_scale, QDQ),
    "openvino-fp32-weight": ("openvino-fp32", "model.xml", _openvino_weight, WEIGHT),
    "openvino-fp32-norm-eps": ("openvino-fp32", "model.xml", _openvino_norm_eps, NORM),
    "openvino-int8-weight": ("openvino-int8", "model.xml", _openvino_weight, WEIGHT),
    "openvino-int8-qdq-scale": ("openvino-int8", "model.xml", _openvino_output_scale, QDQ),
}


@pytest.mark.slow
@pytest.mark.parametrize("artifact", ["onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"])
def test_a_clean_artifact_falls_off_nowhere_and_every_layer_is_tapped(demo_artifacts: Path, artifact: str) -> None:
    result = diagnose(demo_artifacts / artifact, images=16)
    assert result.untapped == [] and result.fall_offs["conversion"].layer is None, result.fall_offs
    if artifact.endswith("int8"):
        assert result.fall_offs["quantization"].comparison == "simulated vs float"


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_in_one_layer_is_found_at_that_layer(demo_artifacts: Path, tmp_path: Path, fault: str) -> None:
    name, model_file, inject, layer = FAULTS[fault]
    artifact = Path(shutil.copytree(demo_artifacts / name, tmp_path / name))
    inject(artifact / model_file, layer)
    result = diagnose(artifact, images=16, allow=LOOSE)
    fall = result.fall_offs["conversion"]
    assert fall.layer == layer, (fall, [(s.name, {k: v.snr_db for k, v in s.pairs.items()}) for s in result.layers])
    layers = [s.name for s in result.layers]
    assert fall.previous == layers[layers.index(layer) - 1]  # everything before it still matches
    assert fall.steepest == layer and fall.steepest_drop_db >= CLIFF_DB  # and it stands out: a cliff, not a slope


def test_the_command_writes_its_files_and_names_the_faulty_layer(
    template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tiny model's ONNX fp32 artifact (seconds): a weight scaled by 1.5 in its second stage's conv2."""
    artifact = Path(shutil.copytree(template, tmp_path / "artifact"))
    code, out, _ = run(capsys, "diagnose", str(artifact), "--images", "4")
    assert code == 0 and "conversion / runtime: no layer falls below 60 dB" in out
    _onnx_weight(artifact / "model.onnx", WEIGHT)
    code, _, err = run(capsys, "diagnose", str(artifact), "--images", "4")
    assert code == 1 and "model.onnx changed since the artifact was verified" in err  # refused like predict
    code, out, _ = run(capsys, "diagnose", str(artifact), "--images", "4", "--no-verify-hashes", "--out",
                       str(tmp_path / "diagnosis"))  # fmt: skip
    assert code == 0 and f"first falls off at {WEIGHT}, right after bit.encoder.stages.1.layers.0.norm2" in out
    data = json.loads((tmp_path / "diagnosis" / "diagnose.json").read_text())
    assert data["fall_offs"]["conversion"]["layer"] == WEIGHT and data["images"] == 4
    assert (tmp_path / "diagnosis" / "diagnose.md").read_text().startswith("# bitedge diagnose: onnx fp32")
    assert (tmp_path / "diagnosis" / "diagnose.png").read_bytes()[:4] == b"\x89PNG"
    assert run(capsys, "diagnose", str(artifact), "--images", "4", "--no-verify-hashes")[0] == 0  # into the artifact
    code, _, _ = run(capsys, "report", str(artifact), "--no-verify-hashes")
    report = (artifact / "report.md").read_text()
    assert code == 0 and f"conversion / runtime: first falls off at {WEIGHT}" in report
    assert "Where each artifact diverges" in (artifact / "report.html").read_text()


def test_a_target_without_taps_is_refused_naming_the_ones_with(
    artifact: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(OnnxConverter, "tap_runner", Converter.tap_runner)
    before = digests(artifact)
    code, _, err = run(capsys, "diagnose", str(artifact))
    assert code == 2 and "onnx artifacts cannot be tapped layer by layer; bitedge diagnose supports" in err
    assert "openvino" in err.split("supports")[1] and "onnx," not in err.split("supports")[1]
    assert digests(artifact) == before


def test_an_artifact_diagnosed_before_taps_were_recorded_is_refused(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = onnx.load(str(artifact / "model.onnx"))
    kept = [p for p in model.metadata_props if p.key != "bitedge.taps"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(artifact / "model.onnx"))
    code, _, err = run(capsys, "diagnose", str(artifact), "--no-verify-hashes")
    assert code == 2 and "records no layer outputs (converted by an older bitedge); convert it again" in err


def test_a_failing_verify_suggests_diagnose(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(artifact)
    code, _, err = run(capsys, "verify", str(artifact))
    assert code == 1 and f"to find the first layer where it diverges: bitedge diagnose {artifact}" in err


def test_snr_of_identical_and_noisy_outputs() -> None:
    from bitedge.diagnose.compare import LayerStats, fall_off

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4, 8, 5, 5)).astype(np.float32)
    a, b = LayerStats("a", "conv"), LayerStats("b", "conv")
    a.add("x", reference.copy(), reference)
    b.add("x", reference + 0.1 * rng.normal(size=reference.shape).astype(np.float32), reference)
    assert a.pairs["x"].snr_db == float("inf") and b.pairs["x"].snr_db == pytest.approx(20, abs=0.5)
    assert fall_off([a, b], "x", 27.0).layer == "b" and fall_off([a, b], "x", 15.0).layer is None
