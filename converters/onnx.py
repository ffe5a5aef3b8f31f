"""ONNX target: fp32, fp16 and int8 (Q/DQ) opset-21 graphs, verified in onnxruntime (CPU provider).

INT8 is explicit, in the ``X86_UINT8`` placement (calibration/placement.py): QuantizeLinear/DequantizeLinear
on every convolution's input and output (uint8, per tensor), int8 weights per output channel and an int32
bias, which onnxruntime fuses into QLinearConv (docs/int8.md); linted for that placement before it is
written. The TensorRT bundle is the symmetric int8 graph. GroupNorm is an InstanceNormalization chain by default,
which onnxruntime runs faster than the native op (``--onnx-group-norm``; TensorRT's bundle has the native op).

Files: ``model.onnx``, plus ``model.onnx.data`` when the weights pass ONNX's 2 GB protobuf limit (external
data; BiT-R152x4 is 3.7 GB in fp32). Labels, preprocessing and provenance go into ``metadata_props``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bitedge import __version__
from bitedge.artifacts.manifest import Manifest
from bitedge.calibration.placement import X86_UINT8
from bitedge.converters.base import (
    ConvertedFiles,
    Converter,
    DeviceBundle,
    ExportSpec,
    Taps,
    TapSource,
    TargetOptions,
    fixed_batch,
    fixed_batch_taps,
    keep_weights,
    option,
)
from bitedge.converters.registry import register
from bitedge.errors import BadInputError, ExportError
from bitedge.parity.metrics import Runner
from bitedge.precisions import Precision

if TYPE_CHECKING:
    from torch import nn

MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"
# GroupNorm forms, the default first: an InstanceNormalization chain (opset 6; onnxruntime's CPU provider has a
# kernel for it, ~18% faster on BiT-R50x1) or the native GroupNormalization-21, which onnxruntime expands.
GROUP_NORMS = ("instance", "native")


@dataclass(frozen=True)
class OnnxOptions(TargetOptions):
    group_norm: str = field(
        default=GROUP_NORMS[0],
        metadata=option(
            "GroupNorm as an InstanceNormalization chain (default; onnxruntime's CPU provider runs it in ~18% "
            "less time) or the native GroupNormalization-21 op",
            choices=GROUP_NORMS,
        ),
    )


@register
class OnnxConverter(Converter):
    name = "onnx"
    description = "model.onnx (opset 21), verified in onnxruntime's CPU provider"
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)
    extra = "onnx"
    modules = ("onnx", "onnxruntime")
    Options = OnnxOptions
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
        from bitedge.converters._onnx_graph import build_onnx
        from bitedge.converters._qdq_lint import lint_int8

        int8 = precision == Precision.INT8
        if int8 and spec.simulated is None:
            raise ExportError("int8 needs the simulated-quantized model (a calibration table)")
        options = spec.options if isinstance(spec.options, OnnxOptions) else OnnxOptions()
        model = build_onnx(
            spec.simulated if int8 and spec.simulated is not None else deploy,
            input_size=spec.input_size,
            batch=spec.batch,
            fp16=precision == Precision.FP16,
            group_norm=options.group_norm,
            metadata=spec.metadata,
            producer_version=__version__,
            external_data=directory / DATA_FILE,
        )
        release_weights()  # the weights are in the data file or the protobuf now
        if int8:
            placement = spec.placement or self.placement
            problems = lint_int8(model, placement)
            if problems:
                raise ExportError(f"the INT8 graph breaks its placement's rules ({placement.name}): "
                                  + "; ".join(problems[:5]))  # fmt: skip
        files = save_onnx(model, directory / MODEL_FILE)
        return ConvertedFiles(files, quantizer="bitedge" if int8 else None, simulated_reference=int8)

    def load_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None = None, spinning: bool = True
    ) -> Runner:
        import onnxruntime as ort

        from bitedge.converters._onnx_graph import INPUT_NAME, OUTPUT_NAME

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(str(directory / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt models
            raise BadInputError(f"{directory / MODEL_FILE}: onnxruntime cannot load it ({exc})") from None

        def run(pixels: np.ndarray) -> np.ndarray:
            out: np.ndarray = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.astype(np.float32)})[0]
            return out

        return fixed_batch(run, manifest.input.batch)

    def tap_runner(self, directory: Path, manifest: Manifest, *, source: TapSource, threads: int | None = None) -> Taps:
        from bitedge.converters._onnx_taps import onnx_taps

        return fixed_batch_taps(onnx_taps(directory / MODEL_FILE, threads=threads), manifest.input.batch)

    def device_bundle(self, directory: Path, manifest: Manifest) -> DeviceBundle:
        native = "onnxruntime_perf_test -e cpu -m times -r {runs} -x {threads} -I " + MODEL_FILE
        files = [name for name in manifest.files if name in (MODEL_FILE, DATA_FILE)]
        return DeviceBundle("onnxruntime", MODEL_FILE, files, {"onnxruntime_perf_test": native})

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None, runs: str | None = None
    ) -> tuple[Runner, dict[str, Any]]:
        import onnxruntime as ort

        # bench interleaves targets on the same cores: spinning worker threads would steal them from the next
        # target's call (onnxruntime's own, and other runtimes'), so spinning is off.
        runner = self.load_runner(directory, manifest, threads=threads, spinning=False)
        info = {"runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider", "threads": threads}
        return runner, {**info, "thread_spinning": False}


def save_onnx(model: Any, path: Path) -> list[str]:
    """Check and save ``model`` beside its external data, if build_onnx streamed any. Returns file names."""
    import onnx

    external = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
    if not external:
        onnx.checker.check_model(model, full_check=True)
        onnx.save_model(model, str(path))
        return [path.name]
    onnx.save_model(model, str(path))  # the graph only: the weights are already in the data file
    onnx.checker.check_model(str(path), full_check=True)  # by path, so the checker finds the external data
    return [path.name, *sorted(external)]
