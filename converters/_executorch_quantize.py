"""INT8 for ExecuTorch: bitedge's calibration table imposed on PyTorch's PT2E quantization flow.

XNNPACK recognizes int8 operators by the quantize/dequantize pattern PT2E's ``convert_pt2e`` writes. Instead
of letting a quantizer calibrate its own ranges, ``TableQuantizer`` annotates exactly the layers the simulated
model quantizes (``calibration/simulate.py``, placement ``xnnpack-int8``) with that model's fixed scales and
zero points, and weights per output channel (the simulated model's int8 grid). Nothing else is annotated:
GroupNorm, the residual adds and the pooling run in float inside the XNNPACK partition.

The stem: a quantized convolution, a constant-zero pad, a 3x3 max-pool. ExecuTorch 1.5.1's ``InsertPadQDQPass``
gives a zero pad fed by a dequantize an int8 output while the max-pool after it stays float, and XNNPACK
refuses that graph at load time (pytorch/executorch issue 20517). So a pad or max-pool that reads a quantized
layer's output shares that output's scale and zero point: zero is exactly representable (an integer zero
point), and max commutes with the monotone quantization, so pad and pool in int8 compute what the simulated
model computes in float, exactly. The stem-alone parity test (tests/e2e/test_executorch.py) checks it against
the simulated stem on inputs whose borders are negative, where a -inf-padded pool would differ.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bitedge.calibration.placement import QParams
from bitedge.calibration.simulate import QuantizedConv2d, _Quantized, copy_sharing_tensors
from bitedge.errors import ExportError

LAYERS = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)
# Ops that move values without arithmetic: int8 in and out with their input's parameters, exactly.
PASS_THROUGH = (torch.ops.aten.pad.default, torch.ops.aten.constant_pad_nd.default, torch.ops.aten.max_pool2d.default)


def quantized_graph(model: nn.Module, simulated: nn.Module, example: tuple[Tensor, ...]) -> torch.fx.GraphModule:
    """``model`` (the float graph ExecuTorch lowers) with the Q/DQ of ``simulated``, ready to export and lower."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    layers = {name: m for name, m in simulated.named_modules() if isinstance(m, _Quantized)}
    model = copy_sharing_tensors(model)
    for name, layer in layers.items():
        if not isinstance(layer, QuantizedConv2d):  # the classifier: a float GEMM on int8-rounded weights
            target = model.get_submodule(name)
            target.weight = nn.Parameter(layer.dequantized_weight().detach(), requires_grad=False)
            bias = layer.bias()
            if bias is not None:
                target.bias = nn.Parameter(bias.detach(), requires_grad=False)
    graph = torch.export.export(model, example).module()
    quantizer = _table_quantizer(layers)
    prepared = prepare_pt2e(graph, quantizer)
    missing = sorted(set(layers) - quantizer.annotated)
    if missing:
        raise ExportError(f"ExecuTorch int8: layers not found in the exported graph: {', '.join(missing[:3])}")
    with torch.no_grad():
        prepared(*example)  # weight observers see their weights (activation parameters are fixed)
    converted: torch.fx.GraphModule = convert_pt2e(prepared)
    return converted


def _table_quantizer(layers: dict[str, _Quantized]) -> Any:
    from torchao.quantization.pt2e import PerChannelMinMaxObserver
    from torchao.quantization.pt2e.quantizer.quantizer import (
        FixedQParamsQuantizationSpec,
        QuantizationAnnotation,
        QuantizationSpec,
        Quantizer,
        SharedQuantizationSpec,
    )

    # symmetric per output channel over +-127 (amax / 127): the simulated model's quantize_weight
    weight_spec = QuantizationSpec(
        dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric, ch_axis=0,
        observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=1e-12 / 127),
    )  # fmt: skip

    def fixed(q: QParams) -> FixedQParamsQuantizationSpec:
        return FixedQParamsQuantizationSpec(
            dtype=torch.int8, scale=q.scale, zero_point=q.zero_point, quant_min=q.qmin, quant_max=q.qmax,
            qscheme=torch.per_tensor_affine,
        )  # fmt: skip

    class TableQuantizer(Quantizer):  # type: ignore[misc]
        def __init__(self) -> None:
            self.annotated: set[str] = set()

        def annotate(self, graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
            for node in graph.graph.nodes:
                if node.op != "call_function":
                    continue
                if node.target in LAYERS:
                    name = _module_name(node)
                    layer = layers.get(name)
                    if layer is None:
                        continue
                    specs = {node.args[0]: fixed(layer.input_q)}
                    if layer.output_q is not None:  # a convolution: int8 in, int8 weights, int8 out
                        specs[node.args[1]] = weight_spec
                    output = fixed(layer.output_q) if layer.output_q is not None else None
                    node.meta["quantization_annotation"] = QuantizationAnnotation(specs, output, _annotated=True)
                    self.annotated.add(name)
                elif node.target in PASS_THROUGH:
                    source = node.args[0]
                    annotation = source.meta.get("quantization_annotation")
                    if annotation is not None and annotation.output_qspec is not None:
                        shared = SharedQuantizationSpec(source)
                        node.meta["quantization_annotation"] = QuantizationAnnotation({source: shared}, shared,
                                                                                      _annotated=True)  # fmt: skip
            return graph

        def validate(self, graph: torch.fx.GraphModule) -> None:
            pass

    return TableQuantizer()


def _module_name(node: torch.fx.Node) -> str:
    """The dotted name of the module a traced op came from (torch.export records the module stack)."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""
