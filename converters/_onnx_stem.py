"""A stride-2 convolution on a few channels (BiT's 7x7 stem on RGB) as a stride-1 one on a space-to-depth input.

Pad -> SpaceToDepth(2) turns (N, C, H + 2p, W + 2p) into (N, 4C, (H + 2p) / 2, (W + 2p) / 2); a k x k stride-2
kernel, zero-extended to an even size, becomes a ceil(k/2)-square stride-1 kernel over those 4C channels: the same
products, so the same integer sums and the same output. onnxruntime's int8 convolution runs a 3-channel input
poorly (BiT-R50x1's stem profiled at 252 GOP/s, its other convolutions at ~600); on 12 channels the whole model
ran 0.99x as long (benchmarks/results/onnx_int8_glue.md). Only for an even padded size, where both forms give the
same output shape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
from torch import nn

if TYPE_CHECKING:
    import torch

    from bitedge.converters._onnx_graph import _Emitter as Emitter

BLOCK = 2
MAX_CHANNELS = 4  # beyond a few channels the convolution runs well as it is


def applies(layer: nn.Conv2d, input_shape: torch.Size) -> bool:
    """A stride-2, undilated, ungrouped convolution on at most ``MAX_CHANNELS`` channels, evenly padded."""
    height, width = input_shape[-2:]
    if isinstance(layer.padding, str):  # "same"/"valid": the emitter refuses those anyway
        return False
    pad_h, pad_w = cast(tuple[int, int], layer.padding)
    return (
        layer.stride == (BLOCK, BLOCK) and layer.dilation == (1, 1) and layer.groups == 1
        and layer.in_channels <= MAX_CHANNELS and (height + 2 * pad_h) % BLOCK == 0 and (width + 2 * pad_w) % BLOCK == 0
    )  # fmt: skip


def space_to_depth_input(e: Emitter, name: str, x: str, layer: nn.Conv2d) -> str:
    """The layer's input, padded as the layer pads it and rearranged by SpaceToDepth(2)."""
    pad_h, pad_w = cast(tuple[int, int], layer.padding)
    if (pad_h, pad_w) != (0, 0):
        pads = e.const(f"{name}.s2d_pads", np.array([0, 0, pad_h, pad_w, 0, 0, pad_h, pad_w], np.int64))
        x = e.node("Pad", [x, pads], f"{name}/s2d_pad", mode="constant")
    return e.node("SpaceToDepth", [x], f"{name}/s2d", blocksize=BLOCK)


def space_to_depth_weight(weight: np.ndarray) -> np.ndarray:
    """(O, C, k, k) -> (O, 4C, ceil(k/2), ceil(k/2)) in SpaceToDepth's channel order (row offset, column offset, c)."""
    out_channels, channels, kh, kw = weight.shape
    padded = np.zeros((out_channels, channels, kh + kh % BLOCK, kw + kw % BLOCK), weight.dtype)
    padded[:, :, :kh, :kw] = weight
    blocks = [padded[:, :, dy::BLOCK, dx::BLOCK] for dy in range(BLOCK) for dx in range(BLOCK)]
    return np.concatenate(blocks, axis=1)
