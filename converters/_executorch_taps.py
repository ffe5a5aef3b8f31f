"""Taps for ``bitedge diagnose`` in ExecuTorch: a tapped twin of the program, run in ExecuTorch's runtime beside
the artifact itself.

Why a twin. ExecuTorch's own debugging (ETDump with a debug buffer, read by the devtools Inspector) records the
values that cross a delegate's boundary: measured on the demo's ``model.pte`` with executorch 1.5.1, the debug
buffer held 55 tensors, the program's input, the delegate's constant inputs (GroupNorm weights, its broadcast
ones) and the logits, while XNNPACK logged only its operators' names and times. The default program is ONE
XNNPACK delegate, so no layer inside it can be read from the artifact's own file (``--executorch-group-norm
native`` would expose only the values between its partitions).

What the twin is. The deploy graph, and for int8 the simulated model's table, through ``build_program``: the
function ``convert`` wrote the artifact with (same GroupNorm form, same PT2E flow imposing the table, same XNNPACK
partitioner and kernels, same batch), with one difference: the model's ``forward`` also returns every tap
point's output (forward hooks on a copy whose class is a subclass of the model's, so every layer keeps its path
and the int8 flow finds its table entry by name). Lowered, loaded and run in ExecuTorch's runtime here.

What it proves, and what not. A fault the lowering, the int8 flow or XNNPACK's kernels make shows at its layer,
because the twin is made and run by the same code. It is not the artifact's bytes: the artifact runs beside it,
its output is taken as the head's tap (the one layer read from the artifact itself), and ``notes`` say whether
the twin's logits equal the artifact's (measured: exactly, on the demo in fp32 and int8). A file changed after
conversion, or made by another bitedge or ExecuTorch, therefore shows as a fall-off at the head alone. Outputs
added to a delegate can also change what XNNPACK fuses; the equal logits say they did not change the result.

A workaround for ExecuTorch 1.5.1's XNNPACK backend: its ``ChannelsLastTaggedReshapePass`` converts a program
output from channels-last to NCHW; when the output is a dequantized int8 value that layers inside the delegate
also read (an int8 conv's output), the copy it inserts replaces every use of that value, so those layers read
NCHW data as NHWC: the program fails at its first run ("Propagating input shapes failed", measured with the
demo's int8 conv3 and stem taps). So each tap is returned negated twice (``neg(neg(x))``): exact in float, an
operator of its own, which the pass converts alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bitedge.converters.base import TapSource, fixed_batch_taps
from bitedge.parity.metrics import Runner
from bitedge.precisions import Precision

LOGITS = "(logits)"  # the twin's own output, kept apart from the layers (no module path has parentheses)


def tapped(model: nn.Module, layers: Sequence[str], example: Tensor) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``model`` (sharing its tensors) whose forward returns ``(logits, *layer outputs)``, and for each
    layer the index of its output there (0: the layer's output is the logits, e.g. the head). A layer whose
    output is not a tensor, or that ``forward`` does not run, is left out."""
    from bitedge.calibration.simulate import copy_sharing_tensors

    copy = copy_sharing_tensors(model)
    base = type(copy)
    seen: dict[str, Tensor] = {}
    index: dict[str, int] = {}
    for name in layers:

        def keep(_: nn.Module, __: object, output: object, name: str = name) -> None:
            if isinstance(output, Tensor):
                seen[name] = output

        copy.get_submodule(name).register_forward_hook(keep)

    def forward(self: nn.Module, pixels: Tensor) -> tuple[Tensor, ...]:
        seen.clear()
        logits: Tensor = base.forward(self, pixels)  # (N, K)
        outputs, where = [logits], {id(logits): 0}
        index.clear()
        for name in layers:
            value = seen.get(name)
            if value is None:
                continue
            if id(value) not in where:  # one output per tensor: two layers may end in the same one
                where[id(value)] = len(outputs)
                outputs.append(torch.neg(torch.neg(value)))  # exact, an op of its own (XNNPACK workaround above)
            index[name] = where[id(value)]
        return tuple(outputs)

    copy.__class__ = type(f"Tapped{base.__name__}", (base,), {"forward": forward})
    with torch.no_grad():
        copy(example)  # fills ``index``: tracing the same forward later gives the same outputs in the same order
    return copy, dict(index)


def twin_taps(source: TapSource, precision: Precision, artifact: Runner) -> TwinTaps:
    """The twin of the artifact ``artifact`` runs, built from ``source`` (a lowering: as long as a conversion's)
    and loaded in ExecuTorch's runtime."""
    from executorch.runtime import Runtime

    from bitedge.converters.executorch import _partitions, build_program

    spec = source.spec
    example = torch.zeros(spec.batch or 1, 3, *spec.input_size)  # (N, 3, H, W), N as the artifact's
    index: dict[str, int] = {}

    def wrap(model: nn.Module) -> nn.Module:
        copy, found = tapped(model, source.layers, example)
        index.update(found)
        return copy

    program = build_program(source.deploy, precision, spec, wrap=wrap)
    partitions, outside = _partitions(program)
    buffer = program.buffer  # the loaded program reads it: kept alive by TwinTaps
    loaded = Runtime.get().load_program(buffer)
    note = (f"layers tapped in a twin program (the artifact's lowering with each layer's output as an output: "
            f"{partitions} XNNPACK partitions, outside them: {', '.join(outside) or 'nothing'}); the head read from "
            "the artifact itself")  # fmt: skip
    return TwinTaps(loaded, buffer, index, artifact, batch=spec.batch or 1, note=note)


class TwinTaps:
    """``pixels (N, 3, H, W) -> {layer: output (N, ...)}``: the twin's layers, and the head (the layers whose output
    is the logits) from the artifact; ``notes`` say how far the twin's logits were from the artifact's."""

    def __init__(
        self, program: Any, buffer: bytes, index: dict[str, int], artifact: Runner, *, batch: int, note: str
    ) -> None:
        self.program, self.buffer, self.index, self.artifact = program, buffer, index, artifact
        self.method = program.load_method("forward")
        self.batched = fixed_batch_taps(self._run_twin, batch)
        self.note = note
        self.largest: float | None = None  # max |twin logits - artifact logits| so far

    def _run_twin(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.method.execute([torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))])
        arrays = [out.numpy().copy() for out in outputs]  # copies: the runtime reuses its output memory
        found = {layer: arrays[i] for layer, i in self.index.items() if i > 0}
        return {**found, LOGITS: arrays[0]}

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        tapped = self.batched(pixels)
        twin_logits = tapped.pop(LOGITS)  # (N, K)
        logits = np.asarray(self.artifact(pixels), dtype=np.float32)  # (N, K): the artifact's own
        difference = float(np.abs(twin_logits - logits).max(initial=0.0))
        self.largest = difference if self.largest is None else max(self.largest, difference)
        return {**tapped, **{layer: logits for layer, i in self.index.items() if i == 0}}

    @property
    def notes(self) -> list[str]:
        if self.largest is None:
            return [self.note]
        if self.largest == 0:
            return [self.note, "the twin's logits equal the artifact's on every image"]
        return [self.note, f"the twin's logits differ from the artifact's by up to {self.largest:.3g}: the artifact "
                "does not compute what its lowering computes now; only the head is its own"]  # fmt: skip
