"""ExecuTorch target: ``model.pte`` for ExecuTorch's XNNPACK backend (Android, iOS, Linux), verified in the
ExecuTorch runtime on this machine.

The deploy graph is exported with ``torch.export`` at a fixed batch (1 unless ``--batch`` says otherwise: an
app classifies one camera frame at a time), lowered with the XNNPACK partitioner and serialized. GroupNorm has
no XNNPACK kernel: as ``aten.native_group_norm`` it runs in ExecuTorch's portable kernels and splits BiT-R50x1
into 50 XNNPACK partitions. By default (``--executorch-group-norm decomposed``) it is written as per-channel
means averaged per group, sub, mul, rsqrt and add, which XNNPACK runs: one partition, and faster
(benchmarks/results/executorch.md). The parity report's notes say how many partitions the lowering made.
Beside the program: ``labels.txt`` (one label per line, index order), ``preprocessing.json`` (resize, crop,
mean and std the app must apply, unless ``--raw-pixel-input`` folded the normalization in) and ``USAGE.md``
with a Kotlin snippet for Android.

INT8 (``XNNPACK_INT8`` placement): bitedge's calibration table, imposed on PyTorch's PT2E flow so XNNPACK runs
int8 convolutions with exactly the simulated model's scales (``_executorch_quantize.py``); GroupNorm, the
residual adds and the logits stay float. Verified against the simulated model as well as the float one.

``bitedge diagnose`` taps a twin of the program, lowered by the same ``build_program`` with every layer's output
added as a program output (``_executorch_taps.py``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bitedge.artifacts.manifest import InputRecord, Manifest, OutputRecord
from bitedge.calibration.placement import XNNPACK_INT8
from bitedge.converters.base import (
    ConvertedFiles,
    Converter,
    DeviceBundle,
    ExportSpec,
    Taps,
    TapSource,
    TargetOptions,
    fixed_batch,
    keep_weights,
    option,
)
from bitedge.converters.registry import register
from bitedge.errors import BadInputError, ExportError, MissingRuntimeError
from bitedge.parity.metrics import Runner
from bitedge.precisions import Precision

if TYPE_CHECKING:
    from torch import Tensor, nn

MODEL_FILE, LABELS_FILE, PREPROCESSING_FILE, USAGE_FILE = "model.pte", "labels.txt", "preprocessing.json", "USAGE.md"
# ExecuTorch imports torchao, which warns at import about its CUDA-only kernels ("Failed to load
# _C_mxfp8...so"): nothing bitedge uses, and noise on every command that loads this target.
logging.getLogger("torchao").setLevel(logging.ERROR)
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's "register_constant() ... deprecated"
MIN_VERSION = (1, 5)  # the export, PT2E and runtime APIs this target uses (tested with 1.5.1)


GROUP_NORMS = ("decomposed", "native")  # the default first


@dataclass(frozen=True)
class ExecuTorchOptions(TargetOptions):
    group_norm: str = field(
        default=GROUP_NORMS[0],
        metadata=option(
            "GroupNorm as means, sub, mul, rsqrt and add, which XNNPACK runs (default: one partition for the whole "
            "network), or the native op, which runs in the portable kernels between XNNPACK partitions",
            choices=GROUP_NORMS,
        ),
    )


@register
class ExecuTorchConverter(Converter):
    name = "executorch"
    description = "model.pte for ExecuTorch's XNNPACK backend (Android, iOS), verified in ExecuTorch's runtime"
    precisions = (Precision.FP32, Precision.INT8)
    extra = "executorch"
    modules = ("executorch.exir", "executorch.runtime", "executorch.backends.xnnpack")
    Options = ExecuTorchOptions
    placement = XNNPACK_INT8

    def check_runtime(self) -> None:
        super().check_runtime()
        from importlib.metadata import version

        found = version("executorch")
        parts = tuple(int(p) for p in found.split("+")[0].split(".")[:2] if p.isdigit())
        if parts < MIN_VERSION:
            needed = ".".join(map(str, MIN_VERSION))
            raise MissingRuntimeError(f"target executorch needs executorch >= {needed} (found {found}); install it "
                                      "with: pip install 'bitedge[executorch]'")  # fmt: skip

    def io_records(self, spec: ExportSpec, num_labels: int) -> tuple[InputRecord, OutputRecord]:
        return super().io_records(replace(spec, batch=spec.batch or 1), num_labels)  # static shapes: batch 1

    def convert(
        self,
        deploy: nn.Module,
        directory: Path,
        *,
        precision: Precision,
        spec: ExportSpec,
        release_weights: Callable[[], None] = keep_weights,
    ) -> ConvertedFiles:
        batch = spec.batch or 1
        int8 = precision == Precision.INT8
        program = build_program(deploy, precision, spec)
        release_weights()  # the program holds its own copy of the weights now
        (directory / MODEL_FILE).write_bytes(program.buffer)
        partitions, outside = _partitions(program)
        (directory / LABELS_FILE).write_text("".join(f"{label}\n" for label in spec.labels), encoding="utf-8")
        preprocessing = spec.processor.to_dict() if spec.processor is not None else {}
        record = {"input": [batch, 3, *spec.input_size], "raw_pixel_input": spec.raw_pixel_input, **preprocessing}
        (directory / PREPROCESSING_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        from bitedge.converters._executorch_usage import usage_markdown

        (directory / USAGE_FILE).write_text(usage_markdown(spec, precision), encoding="utf-8")
        note = (f"lowered to {partitions} XNNPACK partitions; outside them (portable kernels): "
                f"{', '.join(outside) or 'nothing'}")  # fmt: skip
        files = [MODEL_FILE, LABELS_FILE, PREPROCESSING_FILE, USAGE_FILE]
        return ConvertedFiles(files, notes=[note], quantizer="bitedge" if int8 else None, simulated_reference=int8)

    def load_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        import torch
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        # ExecuTorch has one process-wide thread pool (one thread per core by default) that XNNPACK takes when a
        # method loads: resized before loading it works (R50x1: 208.5 ms on 1 thread, 111.7 ms on 2); resized
        # after, methods loaded earlier point at a destroyed pool (1.9x slower), so it is only resized when the
        # count changes, and every bitedge command asks all its artifacts for the same count.
        if threads and threads != _threadpool_get_thread_count():
            _unsafe_reset_threadpool(threads)
        try:
            method = Runtime.get().load_program(str(directory / MODEL_FILE)).load_method("forward")
        except Exception as exc:  # the runtime raises RuntimeError/ValueError for corrupt programs
            raise BadInputError(f"{directory / MODEL_FILE}: ExecuTorch cannot load it ({exc})") from None
        if method is None:
            raise BadInputError(f"{directory / MODEL_FILE}: the program has no forward method")

        def run(pixels: np.ndarray) -> np.ndarray:
            out = method.execute([torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))])[0]
            logits: np.ndarray = out.numpy().copy()
            return logits

        return fixed_batch(run, manifest.input.batch)

    def tap_runner(self, directory: Path, manifest: Manifest, *, source: TapSource, threads: int | None = None) -> Taps:
        """Every layer's output from a tapped twin of the program (``_executorch_taps``: inside the one XNNPACK
        delegate ExecuTorch records no intermediate values), beside the artifact's own, whose output is the head's."""
        from bitedge.converters._executorch_taps import twin_taps

        artifact = self.load_runner(directory, manifest, threads=threads)  # sizes the thread pool first
        return twin_taps(source, Precision(manifest.precision), artifact)

    def device_bundle(self, directory: Path, manifest: Manifest) -> DeviceBundle:
        """run.py with ExecuTorch's Python runtime (pip's executorch, which brings torch); on Android or iOS,
        ExecuTorch's executor_runner or Minibench app (its JSON imports, latency only)."""
        native = f"executor_runner --model_path {MODEL_FILE} --num_executions {{runs}}"
        notes = ["ExecuTorch: on a phone, time it with the Minibench app (extension/benchmark in ExecuTorch's "
                 "repository) and import its benchmark_results.json; executor_runner prints totals only"]  # fmt: skip
        return DeviceBundle("executorch", MODEL_FILE, [MODEL_FILE], {"executor_runner": native}, notes=notes)

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None, runs: str | None = None
    ) -> tuple[Runner, dict[str, Any]]:
        from importlib.metadata import version

        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count

        runner = self.load_runner(directory, manifest, threads=threads)
        info = {"runtime": f"executorch {version('executorch')} (XNNPACK)", "threads": _threadpool_get_thread_count()}
        return runner, info


def build_program(
    deploy: nn.Module, precision: Precision, spec: ExportSpec, *, wrap: Callable[[nn.Module], nn.Module] | None = None
) -> Any:
    """The ExecuTorch program of ``deploy`` that ``convert`` writes; with ``wrap`` (the model just before export ->
    a model with more outputs), the tapped twin ``bitedge diagnose`` runs (``_executorch_taps``). One function for
    both, so the twin gets the artifact's GroupNorm form, int8 flow and XNNPACK lowering by the same code."""
    import torch

    example = (torch.zeros(spec.batch or 1, 3, *spec.input_size),)  # (N, 3, H, W): static shapes
    options = spec.options if isinstance(spec.options, ExecuTorchOptions) else ExecuTorchOptions()
    model = decompose_group_norm(deploy) if options.group_norm == "decomposed" else deploy
    if wrap is not None:
        model = wrap(model)
    int8 = precision == Precision.INT8
    if int8 and spec.simulated is None:
        raise ExportError("int8 needs the simulated-quantized model (a calibration table)")
    return lower(model, example, spec.simulated if int8 else None)


def lower(model: nn.Module, example: tuple[Tensor, ...], simulated: nn.Module | None = None) -> Any:
    """``model`` exported at ``example``'s shape and lowered to XNNPACK: an ExecuTorch program (``.buffer`` is
    the .pte). With ``simulated``, int8 with that simulated-quantized model's Q/DQ."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    model = model.eval()
    with warnings.catch_warnings():
        # torch.export's pytree warns, once per copied graph, that LeafSpec is deprecated: noise for our users
        warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
        try:
            if simulated is not None:
                from bitedge.converters._executorch_quantize import quantized_graph

                model = quantized_graph(model, simulated, example)
            exported = torch.export.export(model, example)
            return to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
        except Exception as exc:  # export and lowering raise many types; the message names the op
            raise ExportError(f"ExecuTorch could not lower the model ({type(exc).__name__}: {exc})") from None


def _partitions(program: Any) -> tuple[int, list[str]]:
    """How many XNNPACK delegate calls the program makes, and which operators run outside them (an int8
    operator left there, e.g. ``quantized_decomposed.dequantize_per_channel``, would run in slow portable code)."""
    import torch

    graph = program.exported_program().graph_module.graph
    calls = [node.target for node in graph.nodes if node.op == "call_function"]
    delegates = sum("executorch_call_delegate" in str(call) for call in calls)
    operators = [str(call) for call in calls if isinstance(call, torch._ops.OpOverload)]  # e.g. aten.add.out
    ops = {op.removeprefix("aten.").rsplit(".", 1)[0] for op in operators}
    return delegates, sorted(ops)


def decompose_group_norm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (sharing its weights) whose GroupNorms compute with ops XNNPACK delegates."""
    from torch import nn

    from bitedge.calibration.simulate import copy_sharing_tensors
    from bitedge.converters._executorch_group_norm import DecomposedGroupNorm

    copy = copy_sharing_tensors(model)
    for name, module in list(copy.named_modules()):
        if isinstance(module, nn.GroupNorm):
            parent_name, _, child = name.rpartition(".")
            setattr(copy.get_submodule(parent_name) if parent_name else copy, child, DecomposedGroupNorm(module))
    return copy
