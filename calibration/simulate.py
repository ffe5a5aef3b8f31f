"""The simulated-quantized model: the deploy graph with explicit quantize/dequantize where a target's Q/DQ go.

It is the second parity reference. Artifact vs simulated measures how faithfully a runtime executes the
quantized graph (conversion error); simulated vs float measures what int8 itself costs (quantization
error). ``simulate(deploy, table, placement)`` follows one target's placement (``calibration/placement.py``):
activations per tensor (int8 symmetric or uint8 affine; round half to even and clamp, as ONNX
QuantizeLinear), conv outputs too where the placement says so, and weights per output channel, symmetric,
stored as int8 with float scales (7 bits where the placement says). With an int32 bias (QLinearConv's), the
bias is rounded to its grid too. The ONNX emitter reads these modules to place QuantizeLinear/
DequantizeLinear at exactly the same points with the same parameters.

``explicit_qdq(model)`` gives a copy that computes the same numbers with torch's quantize/dequantize ops
instead of fake quantization: a traced graph then carries real int8 tensors, which the Core ML converter
turns into MIL quantize/dequantize (activations) and int8 weight constants.
"""

from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bitedge.calibration.placement import IntType, Placement, QParams
from bitedge.calibration.table import CalibrationTable


def quantize_weight(weight: Tensor, bits: int = 8) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel weights: (int8 values within +-(2^(bits-1) - 1), float32 scales (out,))."""
    levels = 2 ** (bits - 1) - 1
    amax = weight.detach().abs().flatten(1).amax(dim=1).clamp(min=1e-12)
    scale = (amax / levels).float()
    shape = (-1,) + (1,) * (weight.ndim - 1)
    q = torch.clamp(torch.round(weight.detach() / scale.reshape(shape)), -levels, levels).to(torch.int8)
    return q, scale


class _Quantized(nn.Module):
    """Shared part: int8 weight + per-channel scales, the input (and output) quantize/dequantize."""

    weight_int8: Tensor
    weight_scale: Tensor

    explicit = False  # True: torch quantize/dequantize ops (for tracing to Core ML), same numbers

    def __init__(
        self, layer: nn.Conv2d | nn.Linear, input_q: QParams, output_q: QParams | None = None, *,
        weight_bits: int = 8, integer_bias: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.layer = layer  # geometry and float bias; its float weight is not used
        self.input_q, self.output_q, self.integer_bias = input_q, output_q, integer_bias
        q, scale = quantize_weight(layer.weight, weight_bits)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)

    @property
    def input_scale(self) -> float:
        return self.input_q.scale

    def dequantized_weight(self) -> Tensor:
        shape = (-1,) + (1,) * (self.weight_int8.ndim - 1)
        weight = self.weight_int8.float() * self.weight_scale.reshape(shape)
        if self.explicit:  # exact: weight is already on the int8 grid; traced as an int8 constant
            zeros = torch.zeros(self.weight_scale.shape[0], dtype=torch.long)
            quantized = torch.quantize_per_channel(weight, self.weight_scale, zeros, 0, torch.qint8)
            return torch.dequantize(quantized)
        return weight

    def bias_scale(self) -> Tensor:
        """The int32 bias's per-channel scale: input scale x weight scale (QLinearConv's convention)."""
        return self.weight_scale * self.input_q.scale

    def bias(self) -> Tensor | None:
        bias = self.layer.bias
        if bias is None or not self.integer_bias:
            return bias
        return torch.round(bias.detach() / self.bias_scale()) * self.bias_scale()

    def quantize_input(self, x: Tensor) -> Tensor:
        return self._fake_quantize(x, self.input_q)

    def quantize_output(self, y: Tensor) -> Tensor:
        return y if self.output_q is None else self._fake_quantize(y, self.output_q)

    def _fake_quantize(self, x: Tensor, q: QParams) -> Tensor:
        if self.explicit:
            dtype = torch.qint8 if q.dtype == IntType.INT8 else torch.quint8
            return torch.dequantize(torch.quantize_per_tensor(x.float(), q.scale, q.zero_point, dtype))
        # quantize -> dequantize in one op (torch's quantized-tensor functions are deprecated as of 2.13)
        return torch.fake_quantize_per_tensor_affine(x.float(), q.scale, q.zero_point, q.qmin, q.qmax)


class QuantizedConv2d(_Quantized):
    def forward(self, x: Tensor) -> Tensor:
        conv = cast(nn.Conv2d, self.layer)  # simulate() wraps convolutions in this class
        y = F.conv2d(
            self.quantize_input(x), self.dequantized_weight(), self.bias(), conv.stride, conv.padding,
            conv.dilation, conv.groups,
        )  # fmt: skip
        return self.quantize_output(y)


class QuantizedLinear(_Quantized):
    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantize_input(x), self.dequantized_weight(), self.bias())


def simulate(deploy: nn.Module, table: CalibrationTable, placement: Placement) -> nn.Module:
    """A copy of ``deploy`` quantized as ``placement`` places it; layers the table excludes stay float."""
    model = copy_sharing_tensors(deploy)
    for name, ranges in table.layers.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, child)
        conv = isinstance(layer, nn.Conv2d)
        wrapper = QuantizedConv2d if conv else QuantizedLinear
        output_q = placement.output(ranges["output"]) if conv else None  # logits stay float
        quantized = wrapper(layer, placement.input(ranges["input"]), output_q, weight_bits=placement.weight_bits,
                            integer_bias=placement.integer_bias)  # fmt: skip
        setattr(parent, child, quantized)
    return model


def explicit_qdq(simulated: nn.Module) -> nn.Module:
    """A copy of a simulated-quantized model that uses explicit torch quantize/dequantize ops."""
    model = copy_sharing_tensors(simulated)
    for module in model.modules():
        if isinstance(module, _Quantized):
            module.explicit = True
    return model


def copy_sharing_tensors(module: nn.Module) -> nn.Module:
    """A copy of ``module``'s structure whose parameters and buffers are the original's (not copies).

    Swapping layers in the copy leaves the original intact while the weights exist once: for a 936 M
    parameter BiT that is 3.7 GB not allocated again. Nothing here writes to the shared tensors.
    """
    memo: dict[int, object] = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return copy.deepcopy(module, memo).eval()
