"""The building blocks BiT is made of: weight-standardized conv, GroupNorm + activation, TF-style padding.

Each mirrors the transformers layer of the same role (module and parameter names included), so that a
transformers state dict loads without renaming and both compute the same function.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bitedge.errors import ConfigError


def make_div(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10% (timm's rule)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


def get_padding(padding: str | None, kernel_size: int, stride: int = 1, dilation: int = 1) -> tuple[int, bool]:
    """Static padding for a conv/pool, and whether it must instead be computed per input ("SAME", dynamic).

    ``None`` is PyTorch-style symmetric padding; "SAME" is TF-style, static when stride 1 and the kernel is
    odd, else dynamic (asymmetric, depends on the input size).
    """
    symmetric = ((stride - 1) + dilation * (kernel_size - 1)) // 2
    if padding is None:
        return symmetric, False
    if stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0:
        return symmetric, False
    return 0, True


class DynamicPad2d(nn.Module):
    """TF "SAME" padding: pad so that ``out = ceil(in / stride)``, the extra pixel going bottom/right."""

    def __init__(self, kernel_size: int, stride: int, dilation: int = 1, value: float = 0.0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.dilation, self.value = kernel_size, stride, dilation, value

    def _amount(self, size: int) -> int:
        needed = (math.ceil(size / self.stride) - 1) * self.stride + (self.kernel_size - 1) * self.dilation + 1
        return max(needed - size, 0)

    def forward(self, x: Tensor) -> Tensor:  # (N, C, H, W)
        pad_h, pad_w = self._amount(x.shape[-2]), self._amount(x.shape[-1])
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2], value=self.value)
        return x


class WeightStandardizedConv2d(nn.Conv2d):
    """Conv2d whose weight is standardized per output channel at every call.

    ``w' = (w - mean) / sqrt(var + eps)`` over (in, kh, kw) with the biased variance. ``bitedge.fold`` bakes
    ``w'`` into a plain conv for deployment; this class is the reference it is checked against.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        padding: str | None = None,
        eps: float = 1e-8,
    ) -> None:
        pad, dynamic = get_padding(padding, kernel_size, stride, dilation)
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=pad, dilation=dilation,
            groups=groups, bias=False,
        )  # fmt: skip
        self.pad = DynamicPad2d(kernel_size, stride, dilation) if dynamic else None
        self.eps = eps

    def standardized_weight(self) -> Tensor:
        """The weight the conv actually applies, (out, in/groups, kh, kw)."""
        # batch_norm over a (1, out, in*kh*kw) view computes exactly (w - mean) / sqrt(biased var + eps),
        # with the same kernel (and float32 rounding) transformers and timm use.
        flat = self.weight.reshape(1, self.out_channels, -1)
        return F.batch_norm(flat, None, None, training=True, momentum=0.0, eps=self.eps).reshape_as(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = self.pad(x)
        out: Tensor = self._conv_forward(x, self.standardized_weight(), self.bias)
        return out


def activation(name: str) -> nn.Module:
    """The activation module for a config's ``hidden_act``."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name in ("silu", "swish"):
        return nn.SiLU()
    raise ConfigError(f"unsupported activation {name!r}")


class BitGroupNormActivation(nn.GroupNorm):
    """GroupNorm (eps 1e-5, affine) followed by the config's activation, or by nothing."""

    def __init__(self, num_groups: int, num_channels: int, *, act: str | None = "relu", eps: float = 1e-5) -> None:
        if num_channels % num_groups:
            raise ConfigError(
                f"GroupNorm with {num_groups} groups cannot split {num_channels} channels; "
                "make every width a multiple of num_groups"
            )
        super().__init__(num_groups, num_channels, eps=eps, affine=True)
        self.activation = activation(act) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.activation(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))
        return out


class BitMaxPool2d(nn.Module):
    """3x3/2 max-pool of the stem, with optional TF-"SAME" dynamic padding (by zeros, as in transformers)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2, *, dynamic_padding: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.pad = DynamicPad2d(kernel_size, stride) if dynamic_padding else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(self.pad(x), self.kernel_size, self.stride)


class DropPath(nn.Module):
    """Stochastic depth per sample; the identity outside training."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device))
        return x / keep * mask
