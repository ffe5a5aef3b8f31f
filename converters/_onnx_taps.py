"""Taps for ``bitedge diagnose`` in ONNX-based artifacts: the layer map the emitter records in the model's
metadata (``tap_values``, under ``TAPS_KEY``), and in onnxruntime a copy of the artifact's graph whose extra
outputs are the values that map names.

Only graph outputs are added, so the runtime fuses and runs everything else as in the artifact: an int8
layer's tap is its output DequantizeLinear (the int8 tensor the fused QLinearConv wrote, dequantized), which
does not stop the fusion. The copy is written to a temporary folder, beside a link to the external weights.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from bitedge.converters.base import Taps
from bitedge.errors import BadInputError

if TYPE_CHECKING:
    import torch.fx


def tap_values(
    deploy: nn.Module, graph_module: torch.fx.GraphModule, names: dict[str, str], result: str, output_name: str
) -> dict[str, str]:
    """Each tap point's output value (``names``: fx node -> ONNX value): the value of the last node traced inside
    its module (``nn_module_stack``). A module ending in a ReLU also gets ``"<path>|relu"``: the value before it,
    for runtimes that fuse the ReLU into what follows (OpenVINO folds it into an unsigned FakeQuantize) and so
    drop its output's name. The logits' value (``result``) is named ``output_name``, as runtimes rename it."""
    from bitedge.converters._onnx_graph import RELU_SUFFIX
    from bitedge.model.taps import tap_points

    points = tap_points(deploy)
    last: dict[str, str] = {}
    before: dict[str, str] = {}
    for n in graph_module.graph.nodes:
        if n.name not in names or n.op == "placeholder":
            continue
        for key, value in n.meta.get("nn_module_stack", {}).items():
            path = value[0] if isinstance(value, tuple) else key
            if path not in points:
                continue
            relu = n.op == "call_module" and isinstance(graph_module.get_submodule(str(n.target)), nn.ReLU)
            if relu and path in last:
                before[f"{path}{RELU_SUFFIX}"] = last[path]
            else:
                before.pop(f"{path}{RELU_SUFFIX}", None)
            last[path] = names[n.name]
    taps = {path: last[path] for path in points if path in last} | before
    return {path: output_name if value == result else value for path, value in taps.items()}


def recorded_taps(metadata: dict[str, str], where: Path, available: set[str] | None = None) -> dict[str, Tap]:
    """The layer -> tap map a conversion recorded (an artifact of an older bitedge has none), each layer's output
    value if the runtime kept it (``available``: its value names; None: all), else the value its final ReLU
    read, to apply the ReLU to."""
    from bitedge.converters._onnx_graph import RELU_SUFFIX, TAPS_KEY

    if TAPS_KEY not in metadata:
        raise BadInputError(f"{where}: records no layer outputs (converted by an older bitedge); convert it again "
                            "to diagnose it")  # fmt: skip
    recorded: dict[str, str] = json.loads(metadata[TAPS_KEY])
    taps = {}
    for layer, value in recorded.items():
        if RELU_SUFFIX in layer:
            continue
        before = recorded.get(f"{layer}{RELU_SUFFIX}")
        if available is None or value in available:
            taps[layer] = Tap(value, relu=False)
        elif before is not None and before in available:
            taps[layer] = Tap(before, relu=True)
    return taps


@dataclass(frozen=True)
class Tap:
    value: str  # the runtime's name of the tapped value
    relu: bool  # apply a ReLU to it: the layer's own output was fused away

    def read(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        out = np.asarray(outputs[self.value], np.float32)
        return np.maximum(out, 0) if self.relu else out


@contextlib.contextmanager
def tapped_model(path: Path, values: list[str]) -> Iterator[Path]:
    """A copy of the ONNX model at ``path`` with ``values`` as extra graph outputs, in a temporary folder."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(v) for v in values if v not in present)
    with tempfile.TemporaryDirectory(prefix="bitedge-taps-") as scratch:
        for data in path.parent.glob(f"{path.name}.data"):
            (Path(scratch) / data.name).symlink_to(data.absolute())
        copy = Path(scratch) / path.name
        onnx.save_model(model, str(copy))
        yield copy


def onnx_taps(path: Path, *, threads: int | None = None) -> Taps:
    """The ONNX artifact at ``path`` in onnxruntime's CPU provider, tapped."""
    import onnx
    import onnxruntime as ort

    from bitedge.converters._onnx_graph import INPUT_NAME

    metadata = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    taps = recorded_taps(metadata, path)
    values = list(dict.fromkeys(tap.value for tap in taps.values()))
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    with tapped_model(path, values) as copy:
        session = ort.InferenceSession(str(copy), options, providers=["CPUExecutionProvider"])

    def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
        outputs: list[Any] = session.run(values, {INPUT_NAME: pixels.astype(np.float32)})
        found = dict(zip(values, outputs, strict=True))
        return {layer: tap.read(found) for layer, tap in taps.items()}

    return run
