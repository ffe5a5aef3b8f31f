"""GroupNorm written with ops XNNPACK delegates (mean, reshape, sub, mul, rsqrt, add), for ExecuTorch.

``aten.native_group_norm`` has no XNNPACK kernel: left as it is, each GroupNorm runs in ExecuTorch's portable
kernels and cuts the network into XNNPACK partitions. The same function in elementary ops keeps the whole
network in one partition. Statistics are taken per channel over the image (a 4-D mean over H and W, which
XNNPACK runs as global average pooling in its channels-last layout), then averaged per group on the small
(N, C, 1, 1) tensor: reshaping the full activation into groups instead made XNNPACK convert the layout of every
GroupNorm's input and output (BiT-R50x1: 113 ms against 107 ms in fp32, 68 against 62 ms in int8, measured in
one run). Variance is the mean of squared deviations from the group mean (as ``F.group_norm``), not
E[x^2] - E[x]^2, which cancels badly for large activations.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class DecomposedGroupNorm(nn.Module):
    """``norm``'s function (its GroupNorm and, for bitedge's ``BitGroupNormActivation``, the activation after
    it) in elementary ops; the affine parameters are ``norm``'s own tensors."""

    ones: Tensor

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias
        self.activation: nn.Module = getattr(norm, "activation", nn.Identity())
        # broadcasts a group's statistic to its channels (XNNPACK has no expand)
        self.register_buffer("ones", torch.ones(1, 1, norm.num_channels // norm.num_groups, 1), persistent=False)

    def _group_mean(self, per_channel: Tensor) -> Tensor:
        """(N, C, 1, 1) per-channel statistics -> their group's mean, for every channel of the group."""
        n, c = per_channel.shape[0], per_channel.shape[1]
        grouped = per_channel.reshape(n, self.groups, c // self.groups, 1).mean(dim=(2, 3), keepdim=True)
        return (grouped * self.ones).reshape(n, c, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        centered = x - self._group_mean(x.mean(dim=(2, 3), keepdim=True))
        variance = self._group_mean((centered * centered).mean(dim=(2, 3), keepdim=True))
        scale = (variance + self.eps).rsqrt()
        if self.weight is not None and self.bias is not None:
            y = centered * (scale * self.weight.reshape(1, c, 1, 1)) + self.bias.reshape(1, c, 1, 1)
        else:
            y = centered * scale
        out: Tensor = self.activation(y)
        return out
