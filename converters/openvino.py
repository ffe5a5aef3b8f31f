"""OpenVINO target: IR (model.xml + model.bin) in fp32, fp16 (compressed weights) and int8, run on the CPU.

The IR is read from bitedge's folded graph (no weight standardization), emitted through ONNX with GroupNorm
written as per-channel statistics averaged per group, a form the CPU plugin runs in its blocked layout.
INT8 has two routes, chosen with ``--quantizer``:

- ``bitedge`` (default): the Q/DQ graph of bitedge's calibration table in the x86-uint8 placement (conv
  inputs and outputs, uint8; calibration/placement.py), the same table as every other target; verified
  against the simulated-quantized model. Measured in one run (benchmarks/results/int8_runtimes.md, BiT-R50x1
  at 224, AVX2): 0.92x the hand-wired NNCF flow and 0.93x the nncf route; on the demo, 99.50 % top-1
  agreement with float (nncf: 99.25 %) and 37.4 dB SNR (32.7 dB).
- ``nncf``: NNCF post-training quantization of the fp32 IR, fed with bitedge's calibration images.

``--raw-pixel-input`` adds a PrePostProcessor step: the IR takes uint8 NHWC RGB (camera pixels after resize
and crop) and converts type and layout itself; normalization is already folded into the stem exactly.
Verification compiles with ``INFERENCE_PRECISION_HINT=f32``: CPUs with avx512_bf16 otherwise run bf16
silently. What that default gives is reported next to the gated result.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bitedge.artifacts.manifest import Manifest
from bitedge.calibration.placement import X86_UINT8
from bitedge.converters.base import (
    ConvertedFiles,
    Converter,
    DeviceBundle,
    ExportSpec,
    Taps,
    TapSource,
    fixed_batch,
    fixed_batch_taps,
    keep_weights,
)
from bitedge.converters.registry import register
from bitedge.errors import CalibrationError, ExportError, MissingRuntimeError
from bitedge.parity.metrics import Runner
from bitedge.precisions import Precision

if TYPE_CHECKING:
    from torch import nn

MODEL_XML = "model.xml"
# GroupNorm as per-channel statistics averaged per group: the native op's (N, G, -1) reshape makes the CPU
# plugin reorder layouts around every GroupNorm (4-6 of 12-13 ms in the hand-wired int8 R50x1). Measured
# (benchmarks/results/openvino.md): at 224 px it makes BiT-R50x1 int8 0.93x the hand-wired NNCF flow's
# latency and fp32 0.8x; at 64 px (the demo) the extra reductions cost more than the reorders they save
# (1.5x). So the form follows the input size, between those two measured points.
CHANNEL_STATS_MIN_INPUT = 128
QUANTIZERS = ("bitedge", "nncf")
DEFAULT_QUANTIZER = QUANTIZERS[0]


@register
class OpenVinoConverter(Converter):
    name = "openvino"
    description = "OpenVINO IR (model.xml + model.bin), verified on the CPU plugin at f32"
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)
    extra = "openvino"
    modules = ("openvino",)
    quantizers = QUANTIZERS
    placement = X86_UINT8

    def convert(
        self,
        deploy: nn.Module,
        directory: Path,
        *,
        precision: Precision,
        spec: ExportSpec,
        release_weights: Callable[[], None] = keep_weights,
    ) -> ConvertedFiles:
        import openvino as ov

        from bitedge.converters._onnx_graph import TAPS_KEY, build_onnx

        quantizer = (spec.quantizer or DEFAULT_QUANTIZER) if precision == Precision.INT8 else None
        graph = spec.simulated if quantizer == "bitedge" else deploy
        if graph is None:
            raise ExportError("int8 with bitedge's quantizer needs the simulated-quantized model (a calibration table)")
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            onnx_path = Path(scratch) / "model.onnx"
            # both int8 routes too: with the x86-uint8 placement the plugin runs bitedge's Q/DQ around the
            # channel-statistics form as faithfully as around the native op (demo, forced: cosine 0.999993
            # against the simulated model), and 0.89x as long at 224 px
            form = "channel-stats" if min(spec.input_size) >= CHANNEL_STATS_MIN_INPUT else "native"
            onnx_model = build_onnx(graph, input_size=spec.input_size, batch=spec.batch, group_norm=form,
                                    external_data=Path(scratch) / "model.onnx.data")  # fmt: skip
            _save_onnx(onnx_model, onnx_path)
            model = ov.convert_model(str(onnx_path))
        release_weights()  # OpenVINO holds the weights now; NNCF works on its copy
        if quantizer == "nncf":
            model = _nncf_quantize(model, spec)
        if spec.raw_pixel_input:
            model = _raw_pixel_input(model)
        metadata = {**spec.metadata, TAPS_KEY: {p.key: p.value for p in onnx_model.metadata_props}[TAPS_KEY]}
        for key, value in metadata.items():
            model.set_rt_info(value, ["bitedge", key.removeprefix("bitedge.")])
        ov.save_model(model, str(directory / MODEL_XML), compress_to_fp16=precision == Precision.FP16)
        return ConvertedFiles([MODEL_XML, "model.bin"], quantizer=quantizer, simulated_reference=quantizer == "bitedge")

    def load_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        return self._runner(directory, manifest, {"INFERENCE_PRECISION_HINT": "f32"}, threads)

    def bench_precisions(self, manifest: Manifest) -> tuple[str, ...]:
        """f32 always; bf16 too where the CPU has it (the plugin's default there): separate rows, never mixed."""
        return ("f32", "bf16") if _cpu_has_bf16() else ("f32",)

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None, runs: str | None = None
    ) -> tuple[Runner, dict[str, Any]]:
        """LATENCY hint and an explicit inference precision (``runs``; default: the CPU's default), recorded."""
        import openvino as ov

        precision = runs or ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
        info = {"runtime": f"OpenVINO {ov.__version__} CPU", "performance_hint": "LATENCY",
                "inference_precision": precision, "threads": threads}  # fmt: skip
        if not _cpu_has_bf16():
            info["notes"] = ["OpenVINO bf16: this CPU has no bf16 support, so the plugin runs f32 (no bf16 row)"]
        return self._runner(directory, manifest, {"INFERENCE_PRECISION_HINT": precision}, threads), info

    def informational_runners(self, directory: Path, manifest: Manifest) -> dict[str, Runner]:
        import openvino as ov

        default = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
        if default == ov.Type.f32:
            return {}
        name = f"the CPU's default inference precision ({default.to_string()})"
        return {name: self._runner(directory, manifest, {}, None)}

    def tap_runner(self, directory: Path, manifest: Manifest, *, source: TapSource, threads: int | None = None) -> Taps:
        """The IR with each layer's output added as a model output (``add_outputs``), compiled at f32."""
        import openvino as ov

        from bitedge.converters._onnx_graph import TAPS_KEY
        from bitedge.converters._onnx_taps import recorded_taps

        core = ov.Core()
        model = core.read_model(str(directory / MODEL_XML))
        key = ["bitedge", TAPS_KEY.removeprefix("bitedge.")]
        metadata = {TAPS_KEY: model.get_rt_info(key).astype(str)} if model.has_rt_info(key) else {}
        names = {name for op in model.get_ops() for output in op.outputs() for name in output.get_names()}
        taps = recorded_taps(metadata, directory / MODEL_XML, names)
        values = list(dict.fromkeys(tap.value for tap in taps.values()))
        added = model.add_outputs(values)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, "CPU", config)
        ports = {value: compiled.output(out.get_any_name()) for value, out in zip(values, added, strict=True)}
        raw = manifest.input.raw_pixels

        def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
            if raw:
                pixels = np.ascontiguousarray(pixels.round().clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
            result = compiled(pixels)
            found = {value: result[port] for value, port in ports.items()}
            return {layer: tap.read(found) for layer, tap in taps.items()}

        return fixed_batch_taps(run, manifest.input.batch)

    def device_bundle(self, directory: Path, manifest: Manifest) -> DeviceBundle:
        raw = manifest.input.raw_pixels
        shape = "[{batch},{height},{width},3]" if raw else "[{batch},3,{height},{width}]"
        native = (f"benchmark_app -m {MODEL_XML} -d CPU -hint latency -api sync -niter {{runs}} -t {{seconds}} "
                  f"-shape {shape} -ip {'u8' if raw else 'f32'} -i {{input_bin}} -infer_precision f32 -json_stats "
                  "-report_type no_counters -report_folder .")  # fmt: skip
        notes = ["benchmark_app: -infer_precision f32 is what bitedge verified; drop it to time the CPU's default "
                 "(bf16 where the CPU has it), and say so"]  # fmt: skip
        return DeviceBundle("openvino", MODEL_XML, [MODEL_XML, "model.bin"], {"benchmark_app": native}, raw,
                            notes=notes)  # fmt: skip

    def _runner(self, directory: Path, manifest: Manifest, config: dict[str, Any], threads: int | None) -> Runner:
        import openvino as ov

        if threads:
            config = {**config, "INFERENCE_NUM_THREADS": threads}
        config = {"PERFORMANCE_HINT": "LATENCY", **config}
        compiled = ov.Core().compile_model(str(directory / MODEL_XML), "CPU", config)
        raw = manifest.input.raw_pixels

        def run(pixels: np.ndarray) -> np.ndarray:  # (N, 3, H, W) float32; raw pixels are 0..255
            if raw:  # what an app feeds: uint8 NHWC
                pixels = np.ascontiguousarray(pixels.round().clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
            out: np.ndarray = compiled(pixels)[0]
            return out.astype(np.float32)

        return fixed_batch(run, manifest.input.batch)


def _cpu_has_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _save_onnx(model: Any, path: Path) -> None:
    from bitedge.converters.onnx import save_onnx

    save_onnx(model, path)


def _nncf_quantize(model: Any, spec: ExportSpec) -> Any:
    try:
        import nncf
    except ImportError:
        raise MissingRuntimeError(
            "--quantizer nncf needs nncf; install it with: pip install 'bitedge[openvino]'"
        ) from None
    if spec.calibration is None:
        raise CalibrationError("the nncf quantizer needs calibration images")
    samples = list(spec.calibration())
    return nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))


def _raw_pixel_input(model: Any) -> Any:
    """uint8 NHWC RGB in; the IR converts type and layout (normalization is folded into the stem)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32)
    return ppp.build()
