"""The GroupNorm the ExecuTorch target lowers (ops XNNPACK runs) computes torch's GroupNorm, + its activation."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close
from torch import nn

from bitedge.converters._executorch_group_norm import DecomposedGroupNorm
from bitedge.model.layers import BitGroupNormActivation


@pytest.mark.parametrize(("channels", "groups"), [(64, 32), (256, 8), (16, 4)])
def test_it_is_group_norm_even_far_from_zero(channels: int, groups: int) -> None:
    torch.manual_seed(0)
    norm = nn.GroupNorm(groups, channels)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = 3 * torch.randn(2, channels, 7, 5) + 100  # a large mean: E[x^2] - E[x]^2 would cancel here
    assert_close(DecomposedGroupNorm(norm)(x), norm(x), atol=5e-5)


def test_bits_activation_comes_along() -> None:
    torch.manual_seed(1)
    norm = BitGroupNormActivation(4, 16)
    x = torch.randn(1, 16, 6, 6)
    out = DecomposedGroupNorm(norm)(x)
    assert_close(out, norm(x), atol=1e-5)
    assert out.min() >= 0  # the ReLU
