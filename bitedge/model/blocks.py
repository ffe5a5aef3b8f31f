"""Residual units, stages and the stem of BiT, with transformers' module names.

Pre-activation unit (BiT proper)::

    x ── GN+ReLU ─┬─ conv1 1x1 ── GN+ReLU ── conv2 3x3/s ── GN+ReLU ── conv3 1x1 ──(+)──>   (no ReLU after add)
                  └─ downsample 1x1/s (first unit of each stage) ──────────────────┘
                     (otherwise the shortcut is x itself, before the norm)

Bottleneck unit (ViT-hybrid backbone): post-activation, conv -> GN -> ReLU, GN without ReLU after conv3 and
on the projection, ReLU after the add.
"""

from __future__ import annotations

import torch.fx
from torch import Tensor, nn

from bitedge.model.config import BitConfig
from bitedge.model.layers import (
    BitGroupNormActivation,
    BitMaxPool2d,
    DropPath,
    WeightStandardizedConv2d,
    activation,
    make_div,
)


@torch.fx.wrap
def check_pixel_values(pixel_values: Tensor, num_channels: int) -> Tensor:
    """Refuse inputs that are not (N, num_channels, H, W); a graph tracer records this as one opaque call."""
    if pixel_values.ndim != 4 or pixel_values.shape[1] != num_channels:
        raise ValueError(f"expected pixel values of shape (N, {num_channels}, H, W), got {tuple(pixel_values.shape)}")
    return pixel_values


def _ws_conv(config: BitConfig, cin: int, cout: int, k: int, *, stride: int = 1, dilation: int = 1) -> nn.Module:
    return WeightStandardizedConv2d(
        cin, cout, k, stride=stride, dilation=dilation, padding=config.global_padding,
        eps=config.weight_standardization_eps,
    )  # fmt: skip


def _norm(config: BitConfig, channels: int, *, act: bool = True) -> BitGroupNormActivation:
    return BitGroupNormActivation(config.num_groups, channels, act=config.hidden_act if act else None)


class BitEmbeddings(nn.Module):
    """The stem: WS conv 7x7/2, zero pad 1 (unless "SAME"), [GN+ReLU for bottleneck], max-pool 3x3/2.

    The zero pad then an unpadded max-pool is BiT's "fixed" padding; it differs from max-pool padding=1
    (which pads with -inf) whenever the conv output is negative at the border.
    """

    def __init__(self, config: BitConfig) -> None:
        super().__init__()
        self.num_channels = config.num_channels
        self.convolution = _ws_conv(config, config.num_channels, config.embedding_size, 7, stride=2)
        self.pooler = BitMaxPool2d(3, 2, dynamic_padding=config.embedding_dynamic_padding)
        self.pad: nn.Module = nn.Identity() if config.global_padding == "SAME" else nn.ConstantPad2d(1, 0.0)
        preact = config.layer_type == "preactivation"
        self.norm: nn.Module = nn.Identity() if preact else _norm(config, config.embedding_size)

    def forward(self, pixel_values: Tensor) -> Tensor:  # (N, C, H, W) -> (N, E, H/4, W/4)
        pixel_values = check_pixel_values(pixel_values, self.num_channels)
        out: Tensor = self.pooler(self.norm(self.pad(self.convolution(pixel_values))))
        return out


class BitDownsampleConv(nn.Module):
    """The 1x1 projection shortcut of a stage's first unit (GN without activation in bottleneck mode)."""

    def __init__(self, config: BitConfig, cin: int, cout: int, stride: int, *, preact: bool) -> None:
        super().__init__()
        self.conv = _ws_conv(config, cin, cout, 1, stride=stride)
        self.norm: nn.Module = nn.Identity() if preact else _norm(config, cout, act=False)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(self.conv(x))
        return out


class BitPreActivationBottleneckLayer(nn.Module):
    """Pre-activation bottleneck unit; stride on the 3x3 conv."""

    def __init__(
        self, config: BitConfig, cin: int, cout: int, *, stride: int, mid: int, drop_path: float, first: bool
    ) -> None:
        super().__init__()
        self.downsample = BitDownsampleConv(config, cin, cout, stride, preact=True) if first else None
        self.norm1 = _norm(config, cin)
        self.conv1 = _ws_conv(config, cin, mid, 1)
        self.norm2 = _norm(config, mid)
        # transformers passes no dilation to this conv (dilated pre-activation models are not BiT); we match it.
        self.conv2 = _ws_conv(config, mid, mid, 3, stride=stride)
        self.norm3 = _norm(config, mid)
        self.conv3 = _ws_conv(config, mid, cout, 1)
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        preact = self.norm1(x)
        shortcut = x if self.downsample is None else self.downsample(preact)
        x = self.conv1(preact)
        x = self.conv2(self.norm2(x))
        x = self.conv3(self.norm3(x))
        out: Tensor = self.drop_path(x) + shortcut
        return out


class BitBottleneckLayer(nn.Module):
    """Post-activation bottleneck unit (ViT-hybrid backbone)."""

    def __init__(
        self,
        config: BitConfig,
        cin: int,
        cout: int,
        *,
        stride: int,
        mid: int,
        drop_path: float,
        first: bool,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.downsample = BitDownsampleConv(config, cin, cout, stride, preact=False) if first else None
        self.conv1 = _ws_conv(config, cin, mid, 1)
        self.norm1 = _norm(config, mid)
        self.conv2 = _ws_conv(config, mid, mid, 3, stride=stride, dilation=dilation)
        self.norm2 = _norm(config, mid)
        self.conv3 = _ws_conv(config, mid, cout, 1)
        self.norm3 = _norm(config, cout, act=False)
        self.drop_path: nn.Module = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.activation = activation(config.hidden_act)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        out: Tensor = self.activation(self.drop_path(x) + shortcut)
        return out


class BitStage(nn.Module):
    """``depth`` units; the first one projects the shortcut and carries the stride."""

    def __init__(
        self,
        config: BitConfig,
        cin: int,
        cout: int,
        *,
        stride: int,
        dilation: int,
        depth: int,
        drop_paths: list[float],
    ) -> None:
        super().__init__()
        mid = make_div(cout * 0.25)
        first_dilation = 1 if dilation in (1, 2) else 2
        self.layers = nn.Sequential()
        for idx in range(depth):
            unit_stride, first, rate = (stride if idx == 0 else 1), idx == 0, drop_paths[idx]
            layer: nn.Module
            if config.layer_type == "bottleneck":
                layer = BitBottleneckLayer(
                    config, cin, cout, stride=unit_stride, mid=mid, drop_path=rate, first=first,
                    dilation=first_dilation,
                )  # fmt: skip
            else:
                layer = BitPreActivationBottleneckLayer(
                    config, cin, cout, stride=unit_stride, mid=mid, drop_path=rate, first=first
                )
            self.layers.add_module(str(idx), layer)
            cin, first_dilation = cout, dilation

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # type: ignore[no-any-return]
