"""TensorRT target: a bundle to build the engine on the device, verified before it leaves this machine.

TensorRT 11 removed implicit INT8 calibration and the precision builder flags: networks are strongly
typed, INT8 comes only from explicit symmetric Q/DQ in the ONNX, FP16 from an fp16-typed graph. A bundle
holds exactly that ONNX (int8: bitedge's Q/DQ from the shared calibration table, GroupNormalization native
and unquantized; fp16: fp16 weights and activations with GroupNorm kept in fp32), a ``build_spec.json``
(optimization profile, input, workspace, builder optimization level, timing cache) and the manifest.

Engines are GPU- and version-specific, so they are built where they run: ``convert`` builds right away
when ``tensorrt`` imports and a CUDA GPU is present, otherwise it records the engine as deferred and
``bitedge build-engine DIR`` builds it on the device. Until then, the bundle's ONNX is verified here in
onnxruntime against the float and the simulated-quantized model, and linted against TensorRT's
explicit-quantization rules (violations are errors).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitedge.artifacts.manifest import Manifest
from bitedge.converters.base import (
    ConvertedFiles,
    Converter,
    DeviceBundle,
    ExportSpec,
    Taps,
    TapSource,
    keep_weights,
)
from bitedge.converters.onnx import DATA_FILE, MODEL_FILE, OnnxConverter, save_onnx
from bitedge.converters.registry import register
from bitedge.errors import BadInputError, ExportError, MissingRuntimeError
from bitedge.fileio import write_json_atomic
from bitedge.parity.metrics import Runner
from bitedge.precisions import Precision

if TYPE_CHECKING:
    from torch import nn

BUILD_SPEC = "build_spec.json"
ENGINE_FILE = "model.engine"
TIMING_CACHE = "timing.cache"
# Ops every TensorRT 10/11 ONNX parser maps natively (GroupNormalization since TensorRT 10.0).
SUPPORTED_OPS = {
    "Conv", "Gemm", "GroupNormalization", "Relu", "Gelu", "Sigmoid", "Mul", "Add", "Sub", "Pad", "MaxPool",
    "GlobalAveragePool", "Flatten", "Identity", "Cast", "QuantizeLinear", "DequantizeLinear",
}  # fmt: skip


@register
class TensorRTConverter(Converter):
    name = "tensorrt"
    description = "a bundle (ONNX + build spec) whose engine is built on the device; its ONNX verified here"
    precisions = (Precision.FP16, Precision.INT8)
    extra = "tensorrt"
    modules = ("onnx", "onnxruntime")  # for the bundle; the engine needs tensorrt on the device

    def default_skip_reason(self) -> str | None:
        """Left out of a default convert unless this machine can build and run an engine."""
        from bitedge.converters._tensorrt_engine import engine_unavailable

        return engine_unavailable()

    def convert(
        self,
        deploy: nn.Module,
        directory: Path,
        *,
        precision: Precision,
        spec: ExportSpec,
        release_weights: Callable[[], None] = keep_weights,
    ) -> ConvertedFiles:
        from bitedge.converters._onnx_graph import build_onnx

        int8 = precision == Precision.INT8
        graph = spec.simulated if int8 else deploy
        if graph is None:
            raise ExportError("int8 needs the simulated-quantized model (a calibration table)")
        model = build_onnx(
            graph, input_size=spec.input_size, batch=spec.batch, fp16=not int8, metadata=spec.metadata,
            external_data=directory / DATA_FILE,
        )  # fmt: skip
        release_weights()
        problems = lint_tensorrt(model, int8=int8, allowed_float=_excluded(graph) if int8 else set())
        if problems:
            raise ExportError("the bundle breaks TensorRT's rules: " + "; ".join(problems[:5]))
        files = save_onnx(model, directory / MODEL_FILE)
        write_json_atomic(directory / BUILD_SPEC, build_spec(spec, precision))
        notes = []
        from bitedge.converters._tensorrt_engine import build_engine, engine_unavailable

        reason = engine_unavailable()
        if reason is None:
            files += build_engine(directory)
        else:
            notes.append(f"engine deferred ({reason}); run `bitedge build-engine DIR` on the target device")
        return ConvertedFiles(
            [*files, BUILD_SPEC], notes, quantizer="bitedge" if int8 else None, simulated_reference=int8
        )

    def load_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        """The engine in the TensorRT runtime once built; before that, the bundle's ONNX in onnxruntime."""
        if (directory / ENGINE_FILE).is_file():
            from bitedge.converters._tensorrt_engine import engine_runner

            return engine_runner(directory, manifest)
        return OnnxConverter().load_runner(directory, manifest, threads=threads)

    def tap_runner(self, directory: Path, manifest: Manifest, *, source: TapSource, threads: int | None = None) -> Taps:
        """The bundle's ONNX in onnxruntime, tapped (TensorRT fuses away what it could tap; Polygraphy's job)."""
        return OnnxConverter().tap_runner(directory, manifest, source=source, threads=threads)

    def device_bundle(self, directory: Path, manifest: Manifest) -> DeviceBundle:
        """trtexec builds the engine on the device and times it; run.py cannot (it would need CUDA bindings)."""
        flags = "--int8 --fp16" if manifest.precision == "int8" else "--fp16"
        native = (f"trtexec --onnx={MODEL_FILE} {flags} --saveEngine=model.engine --warmUp=1000 --iterations={{runs}} "
                  "--duration={seconds} --useSpinWait")  # fmt: skip
        notes = [
            "TensorRT: run the trtexec command on the device, then bring its output back with bitedge bench "
            "--import trtexec.log (latency only); bitedge build-engine DIR verifies the engine's outputs there"
        ]
        files = [f for f in manifest.files if f != ENGINE_FILE]
        return DeviceBundle(None, MODEL_FILE, files, {"trtexec": native}, notes=notes)

    def build_on_device(self, directory: Path) -> list[str]:
        """The engine, built on this machine (it must have the GPU and TensorRT that will run it)."""
        from bitedge.converters._tensorrt_engine import HOW_TO, build_engine, engine_unavailable

        reason = engine_unavailable()
        if reason is not None:
            raise BadInputError(f"cannot build here: {reason}; {HOW_TO}")
        return build_engine(directory)

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None, runs: str | None = None
    ) -> tuple[Runner, dict[str, Any]]:
        """Only a built engine is timed: an onnxruntime stand-in would say nothing about TensorRT's speed."""
        from bitedge.converters._tensorrt_engine import HOW_TO, device, engine_runner

        if not (directory / ENGINE_FILE).is_file():
            raise MissingRuntimeError(f"{directory}: the engine is not built yet; {HOW_TO}, then bench it there")
        return engine_runner(directory, manifest), {"runtime": "TensorRT", **device()}


def build_spec(spec: ExportSpec, precision: Precision) -> dict[str, Any]:
    """How the device should build the engine: optimization profile, workspace, optimization level."""
    height, width = spec.input_size
    if spec.batch is not None:
        profile = {"min": spec.batch, "opt": spec.batch, "max": spec.batch}
    else:
        profile = {"min": 1, "opt": 1, "max": 16}
    return {
        "onnx": MODEL_FILE,
        "precision": precision.value,
        "strongly_typed": True,  # TensorRT 11 always; TensorRT 10 via the STRONGLY_TYPED network flag
        "input": {"name": "pixel_values", "channels": 3, "height": height, "width": width},
        "batch_profile": profile,
        "workspace_mib": 1024,
        "builder_optimization_level": 3,
        "timing_cache": TIMING_CACHE,
        "engine": ENGINE_FILE,
    }


def lint_tensorrt(model: Any, *, int8: bool, allowed_float: set[str]) -> list[str]:
    """TensorRT's explicit-quantization rules (int8) plus supported opset and ops (both precisions)."""
    from bitedge.converters._qdq_lint import lint_int8

    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not 13 <= opset <= 21:
        problems.append(f"opset {opset} is outside what TensorRT 10/11 parse (13..21)")
    unsupported = sorted({n.op_type for n in model.graph.node} - SUPPORTED_OPS)
    if unsupported:
        problems.append(f"ops TensorRT's parser may not support: {', '.join(unsupported)}")
    if int8:
        problems += lint_int8(model, TensorRTConverter.placement)
        problems += _unquantized_layers(model, allowed_float)
    return problems


def _unquantized_layers(model: Any, allowed_float: set[str]) -> list[str]:
    """Every Conv/Gemm input and weight must come from a DequantizeLinear, unless the recipe excluded it."""
    producers = {out: node for node in model.graph.node for out in node.output}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.name.split("/")[0] in allowed_float:
            continue
        for role, name in (("input", node.input[0]), ("weight", node.input[1])):
            source = producers.get(name)
            if source is None or source.op_type != "DequantizeLinear":
                problems.append(f"{node.name}: {role} is not quantized (TensorRT would run this layer in float)")
    return problems


def _excluded(graph: nn.Module) -> set[str]:
    """fx node names of the layers the calibration recipe kept in float (their Conv/Gemm may be float)."""
    from torch import nn

    from bitedge.calibration.simulate import QuantizedConv2d, QuantizedLinear

    modules = dict(graph.named_modules())
    wrapped = [n for n, m in modules.items() if isinstance(m, QuantizedConv2d | QuantizedLinear)]
    plain = [
        n for n, m in modules.items()
        if isinstance(m, nn.Conv2d | nn.Linear) and not any(n.startswith(w + ".") for w in wrapped)
    ]  # fmt: skip
    return {n.replace(".", "_") for n in plain}
