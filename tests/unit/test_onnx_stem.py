"""The space-to-depth stem (converters/_onnx_stem.py): the same convolution, on 4x the channels at stride 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bitedge.converters import _onnx_stem as stem


def _space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """ONNX SpaceToDepth(2): output channel (row offset * 2 + column offset) * C + c."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 3, 5, 1, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


@pytest.mark.parametrize(("kernel", "padding", "size"), [(7, 3, 64), (7, 3, 30), (4, 1, 16), (3, 1, 10), (5, 0, 12)])
def test_the_rewritten_convolution_computes_the_same(kernel: int, padding: int, size: int) -> None:
    generator = torch.Generator().manual_seed(kernel * 100 + size)
    weight = torch.randint(-127, 128, (8, 3, kernel, kernel), generator=generator).to(torch.float64)
    x = torch.randint(-127, 128, (2, 3, size, size), generator=generator).to(torch.float64)
    expected = F.conv2d(x, weight, stride=2, padding=padding)
    rewritten = torch.from_numpy(stem.space_to_depth_weight(weight.numpy()))
    got = F.conv2d(_space_to_depth(F.pad(x, [padding] * 4)), rewritten)
    assert got.shape == expected.shape and torch.equal(got, expected)  # integers in float64: exact


def test_it_applies_to_stride_2_convolutions_on_few_channels_evenly_padded() -> None:
    stem_conv = nn.Conv2d(3, 64, 7, stride=2, padding=3)
    assert stem.applies(stem_conv, torch.Size([1, 3, 224, 224]))
    assert not stem.applies(stem_conv, torch.Size([1, 3, 223, 224]))  # odd padded height: shapes would differ
    assert not stem.applies(nn.Conv2d(64, 64, 3, stride=2, padding=1), torch.Size([1, 64, 56, 56]))
    assert not stem.applies(nn.Conv2d(3, 64, 3, stride=1, padding=1), torch.Size([1, 3, 56, 56]))
    assert not stem.applies(nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3), torch.Size([1, 3, 56, 56]))
    assert not stem.applies(nn.Conv2d(3, 6, 3, stride=2, padding=2, dilation=2), torch.Size([1, 3, 56, 56]))
    assert np.array_equal(stem.space_to_depth_weight(np.ones((1, 1, 7, 7)))[0, :, 3, 3], [1, 0, 0, 0])
