"""ONNX target: fp32, fp16 and int8 (Q/DQ) opset-21 graphs, verified in onnxruntime (CPU provider).

INT8 is explicit: QuantizeLinear/DequantizeLinear around every quantized convolution's input (per tensor)
and weight (per output channel), symmetric with zero points 0 — the Q/DQ rules TensorRT's parser enforces —
and linted for those rules before it is written. GroupNorm is an InstanceNormalization chain by default,
which onnxruntime runs faster than the native op (``--onnx-group-norm``; TensorRT's bundle has the native op).

Files: ``model.onnx``, plus ``model.onnx.data`` when the weights pass ONNX's 2 GB protobuf limit (external
data; BiT-R152x4 is 3.7 GB in fp32). Labels, preprocessing and provenance go into ``metadata_props``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bitedge import __version__
from bitedge.converters.base import ConvertedFiles, Converter, ExportSpec, Runner, fixed_batch
from bitedge.converters.onnx_graph import INPUT_NAME, OUTPUT_NAME, ExportError, build_onnx
from bitedge.converters.qdq_lint import lint_int8
from bitedge.errors import BadInputError, UnknownTargetError
from bitedge.manifest import Manifest
from bitedge.targets import ONNX_GROUP_NORMS, Precision, Target

MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"


class OnnxConverter(Converter):
    target = Target.ONNX
    precisions = (Precision.FP32, Precision.FP16, Precision.INT8)
    extra = "onnx"
    modules = ("onnx", "onnxruntime")

    def convert(self, deploy: nn.Module, directory: Path, *, precision: Precision, spec: ExportSpec) -> ConvertedFiles:
        int8 = precision == Precision.INT8
        if int8 and spec.quantizer not in (None, "bitedge"):
            raise UnknownTargetError(f"the onnx target quantizes with bitedge's table only, not {spec.quantizer!r}")
        if int8 and spec.simulated is None:
            raise ExportError("int8 needs the simulated-quantized model (a calibration table)")
        if spec.onnx_group_norm not in ONNX_GROUP_NORMS:
            raise UnknownTargetError(f"unknown GroupNorm form {spec.onnx_group_norm!r}; choose from {ONNX_GROUP_NORMS}")
        model = build_onnx(
            spec.simulated if int8 and spec.simulated is not None else deploy,
            input_size=spec.input_size,
            batch=spec.batch,
            fp16=precision == Precision.FP16,
            group_norm=spec.onnx_group_norm,
            metadata=spec.metadata,
            producer_version=__version__,
            external_data=directory / DATA_FILE,
        )
        spec.source_released()  # the weights are in the data file or the protobuf now
        if int8:
            problems = lint_int8(model)
            if problems:
                raise ExportError("the INT8 graph breaks TensorRT's Q/DQ rules: " + "; ".join(problems[:5]))
        files = save_onnx(model, directory / MODEL_FILE)
        return ConvertedFiles(files, quantizer="bitedge" if int8 else None, simulated_reference=int8)

    def load_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None = None, spinning: bool = True
    ) -> Runner:
        import onnxruntime as ort

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

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None
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
