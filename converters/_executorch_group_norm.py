"""GroupNorm written with ops XNNPACK delegates (reshape, mean, sub, mul, rsqrt, add), for ExecuTorch.

``aten.native_group_norm`` has no XNNPACK kernel: left as it is, each GroupNorm runs in ExecuTorch's portable
kernels and cuts the network into XNNPACK partitions. The same function in elementary ops keeps the whole
network in one partition. Variance is the mean of squared deviations (as ``F.group_norm``), not
E[x^2] - E[x]^2, which cancels badly for large activations.
"""

from __future__ import annotations

from torch import Tensor, nn


class DecomposedGroupNorm(nn.Module):
    """``norm``'s function (its GroupNorm and, for bitedge's ``BitGroupNormActivation``, the activation after
    it) in elementary ops; the affine parameters are ``norm``'s own tensors."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias
        self.activation: nn.Module = getattr(norm, "activation", nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        grouped = x.reshape(n, self.groups, c // self.groups, h * w)
        centered = grouped - grouped.mean(dim=(2, 3), keepdim=True)
        variance = (centered * centered).mean(dim=(2, 3), keepdim=True)
        y = (centered * (variance + self.eps).rsqrt()).reshape(n, c, h, w)
        if self.weight is not None and self.bias is not None:
            y = y * self.weight.reshape(1, c, 1, 1) + self.bias.reshape(1, c, 1, 1)
        out: Tensor = self.activation(y)
        return out
