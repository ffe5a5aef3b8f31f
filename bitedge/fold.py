"""Fold: turn a reference BiT into its deploy graph.

1. Every weight-standardized conv becomes a plain conv whose weight is the standardized one,
   ``w' = (w - mean) / sqrt(var + eps)`` (per output channel, biased variance, the source model's eps),
   computed once in float64 and stored in float32. No weight-side normalization is left to run.
2. Optionally (``raw_pixel_input``) the input normalization moves into the stem, so the deploy graph takes
   raw RGB pixels in 0..255. With ``y = a_c * x - m_c / s_c`` (``a_c = rescale / s_c``), the scale folds
   into the stem weights exactly. The mean must respect the stem's zero padding, which pads *normalized*
   values: in raw space that pad value is ``p_c = m_c / rescale``.
   - all ``p_c`` equal (BiT's mean = std = 0.5: p = 127.5): pad with ``p`` and fold the mean into a conv
     bias — fully folded, nothing extra runs;
   - otherwise: one per-channel subtraction of ``p_c`` in front of the stem, then zero padding as before.
   Both are exact (up to float32 rounding).

The caller's model is never modified: folding works on a deep copy.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import Tensor, nn

from bitedge.errors import ConfigError
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.layers import DynamicPad2d, WeightStandardizedConv2d
from bitedge.model.modeling import BitPreTrainedModel


class DeployModel(nn.Module):
    """The folded network: ``pixel_values (N, 3, H, W) -> logits (N, num_labels)``, nothing else."""

    def __init__(self, bit: nn.Module, classifier: nn.Module, input_shift: Tensor | None = None) -> None:
        super().__init__()
        self.bit = bit
        self.classifier = classifier
        self.input_shift = InputShift(input_shift) if input_shift is not None else None

    def forward(self, pixel_values: Tensor) -> Tensor:
        if self.input_shift is not None:
            pixel_values = self.input_shift(pixel_values)
        logits: Tensor = self.classifier(self.bit(pixel_values, output_hidden_states=False).pooler_output)
        return logits


class InputShift(nn.Module):
    """``x - shift[c]``: the part of a per-channel input mean that cannot fold into the stem exactly."""

    shift: Tensor

    def __init__(self, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("shift", shift.reshape(1, -1, 1, 1).float())

    def forward(self, x: Tensor) -> Tensor:
        return x - self.shift


def standardize(weight: Tensor, eps: float) -> Tensor:
    """``(w - mean) / sqrt(var + eps)`` per output channel, biased variance, in float64; returns float32."""
    w = weight.detach().double()
    var, mean = torch.var_mean(w, dim=tuple(range(1, w.ndim)), keepdim=True, unbiased=False)
    return ((w - mean) / torch.sqrt(var + eps)).float()


def fold(
    model: BitPreTrainedModel,
    *,
    raw_pixel_input: bool = False,
    processor: BitImageProcessor | None = None,
) -> DeployModel:
    """The deploy graph of a `BitForImageClassification` (a copy; ``model`` is untouched).

    Args:
        model: the float reference.
        raw_pixel_input: take raw 0..255 RGB (after resize and crop) instead of normalized pixels.
        processor: the preprocessing to fold in; required with ``raw_pixel_input``.
    """
    if not hasattr(model, "classifier") or not hasattr(model, "bit"):
        raise ConfigError("fold needs a BitForImageClassification (a model with a classifier head)")
    bit = copy.deepcopy(model.get_submodule("bit")).eval()
    classifier = copy.deepcopy(model.get_submodule("classifier")).eval()
    # names, not modules: holding every replaced module until the loop ends would keep both weight sets alive
    names = [name for name, module in bit.named_modules() if isinstance(module, WeightStandardizedConv2d)]
    for name in names:
        _replace(bit, name, _plain_conv(cast(WeightStandardizedConv2d, bit.get_submodule(name))))
    shift = None
    if raw_pixel_input:
        if processor is None:
            raise ConfigError("raw-pixel input needs the model's preprocessing (an image processor)")
        shift = _fold_input_normalization(bit, processor)
    for param in [*bit.parameters(), *classifier.parameters()]:
        param.requires_grad_(False)
    return DeployModel(bit, classifier, shift).eval()


def _plain_conv(ws: WeightStandardizedConv2d) -> nn.Module:
    conv = _conv_like(ws)
    with torch.no_grad():
        conv.weight.copy_(standardize(ws.weight, ws.eps))
    return nn.Sequential(copy.deepcopy(ws.pad), conv) if ws.pad is not None else conv


def _fold_input_normalization(bit: nn.Module, processor: BitImageProcessor) -> Tensor | None:
    """Rewrite the stem conv for raw pixels; returns the per-channel input shift when one is needed."""
    rescale = processor.rescale_factor if processor.do_rescale else 1.0
    std = torch.tensor(processor.image_std if processor.do_normalize else [1.0] * 3, dtype=torch.float64)
    mean = torch.tensor(processor.image_mean if processor.do_normalize else [0.0] * 3, dtype=torch.float64)
    scale = rescale / std  # (C,)
    pad_value = mean / rescale  # raw value that normalizes to 0, (C,)

    embedder: Any = bit.embedder
    pad, conv = _stem(bit, channels=len(std))
    weight = conv.weight.double() * scale.reshape(1, -1, 1, 1)
    uniform = bool(torch.allclose(pad_value, pad_value[0].expand_as(pad_value), rtol=0, atol=1e-9))
    new_conv = _conv_like(conv, padding=0 if uniform else conv.padding, bias=uniform)
    with torch.no_grad():
        new_conv.weight.copy_(weight.float())
        if uniform:
            # sum over (c, kh, kw) of w * a_c * p_c: the mean's contribution, moved into a bias
            bias = -(weight * pad_value.reshape(1, -1, 1, 1)).sum(dim=(1, 2, 3))
            new_conv.bias.copy_(bias.float())  # type: ignore[union-attr]
    if not uniform:
        embedder.convolution = nn.Sequential(pad, new_conv) if pad is not None else new_conv
        return pad_value.float()
    p = float(pad_value[0])
    if pad is not None:  # "SAME": dynamic padding, now with the raw value of zero
        pad_module: nn.Module = DynamicPad2d(pad.kernel_size, pad.stride, pad.dilation, value=p)
    else:
        top, left = cast(tuple[int, int], conv.padding)
        pad_module = nn.ConstantPad2d((left, left, top, top), p)
    embedder.convolution = nn.Sequential(pad_module, new_conv)
    return None


def scale_stem_input(deploy: DeployModel, factors: list[float]) -> DeployModel:
    """A copy of ``deploy`` whose stem sees its input multiplied by ``factors`` per channel.

    Used where a runtime's image preprocessing can apply only one scale for all channels (Core ML's
    ``ImageType``): the runtime computes ``x * rescale - mean_c`` and the stem divides by ``std_c``
    (``factors = 1 / std``). Exact, because the stem's zero padding pads the normalized value 0 either way.
    """
    deploy = copy.deepcopy(deploy)
    _, conv = _stem(deploy.bit, channels=len(factors))
    with torch.no_grad():
        scale = torch.tensor(factors, dtype=torch.float64).reshape(1, -1, 1, 1)
        conv.weight.copy_((conv.weight.double() * scale).float())
    return deploy


def _stem(bit: nn.Module, *, channels: int) -> tuple[DynamicPad2d | None, nn.Conv2d]:
    """The stem's dynamic padding (if any) and convolution, checked to take ``channels`` input channels."""
    pad: DynamicPad2d | None = None
    conv: nn.Conv2d | None = None
    stem = cast(Any, bit).embedder.convolution
    for module in stem if isinstance(stem, nn.Sequential) else [stem]:
        if isinstance(module, DynamicPad2d):
            pad = module
        elif isinstance(module, nn.Conv2d):
            conv = module
    if conv is None:
        raise ConfigError("the stem has no convolution to fold the input normalization into")
    if conv.weight.shape[1] != channels:
        raise ConfigError(f"input folding supports 3-channel RGB stems, not {conv.weight.shape[1]} channels")
    return pad, conv


def _conv_like(conv: nn.Conv2d, **changes: Any) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` with ``conv``'s geometry (no bias unless ``bias=True`` is among ``changes``)."""
    kwargs: dict[str, Any] = {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size,
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "groups": conv.groups,
        "bias": False,
    }
    return nn.Conv2d(**(kwargs | changes))


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
