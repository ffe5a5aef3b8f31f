"""GroupNorm in the ONNX forms runtimes run fastest (``build_onnx``'s ``group_norm``): an InstanceNormalization
chain for onnxruntime and per-channel statistics averaged per group for OpenVINO (the native
GroupNormalization-21, TensorRT's, is one node and stays in ``_onnx_graph``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import torch.fx

    from bitedge.converters._onnx_graph import _Emitter as Emitter


def as_instance_norm(
    e: Emitter, n: torch.fx.Node, x: str, groups: int, eps: float, gamma: torch.Tensor, beta: torch.Tensor
) -> str:
    """GroupNorm as Reshape (N, G, -1) -> InstanceNormalization -> Reshape back -> per-channel affine.

    onnxruntime's CPU provider has no GroupNormalization-21 kernel and expands the op's function body, while
    it has one for InstanceNormalization (opset 6, which every ONNX runtime implements): the onnx target's
    default (benchmarks/results/suite.md). TensorRT wants the native op. The affine is one BatchNormalization
    (mean 0, variance 1, epsilon 0: gamma * x + beta exactly), one pass instead of a Mul and an Add (docs/int8.md).
    """
    channels, height, width = n.meta["tensor_meta"].shape[1:]
    grouped = e.node("Reshape", [x, e.const(f"{n.name}.grouped", np.array([0, groups, -1], np.int64))], f"{n.name}/g")
    ones = e.const(f"{n.name}.ones", np.ones(groups, np.float32), keep_fp32=True)
    zeros = e.const(f"{n.name}.zeros", np.zeros(groups, np.float32), keep_fp32=True)
    normed = e.node("InstanceNormalization", [grouped, ones, zeros], f"{n.name}/in", epsilon=eps)
    shape = e.const(f"{n.name}.shape", np.array([0, channels, height, width], np.int64))
    back = e.node("Reshape", [normed, shape], f"{n.name}/back")
    scale = e.const(f"{n.name}.gamma", gamma.reshape(-1), keep_fp32=True)
    shift = e.const(f"{n.name}.beta", beta.reshape(-1), keep_fp32=True)
    mean = e.const(f"group_norm.mean.{channels}", np.zeros(channels, np.float32), keep_fp32=True)  # shared
    variance = e.const(f"group_norm.variance.{channels}", np.ones(channels, np.float32), keep_fp32=True)
    return e.node("BatchNormalization", [back, scale, shift, mean, variance], n.name, epsilon=0.0)


def from_channel_stats(
    e: Emitter, n: torch.fx.Node, x: str, groups: int, eps: float, gamma: torch.Tensor, beta: torch.Tensor
) -> str:
    """GroupNorm without reshaping the activation: statistics per channel, averaged per group on tiny tensors.

    Every op on the full (N, C, H, W) tensor is a spatial reduction or an elementwise op, which the
    OpenVINO CPU plugin runs in its blocked channel layout; the (N, G, C/G * H * W) reshape of the native
    op instead forces a layout reorder before and after every GroupNorm. The per-channel scale
    gamma / sqrt(var + eps) is finished on the (N, G, C/G) tensor and only then reshaped: left after the
    reshape, the plugin fuses the sqrt and the division into the full-size elementwise kernel, which then
    computes them once per pixel instead of once per channel.
    """
    channels = n.meta["tensor_meta"].shape[1]
    name, per_group = n.name, channels // groups
    to_groups = e.const(f"{name}.to_groups", np.array([0, groups, per_group], np.int64))
    to_channels = e.const(f"{name}.to_channels", np.array([0, channels, 1, 1], np.int64))
    axes_hw = e.const(f"{name}.axes_hw", np.array([2, 3], np.int64))
    axis_g = e.const(f"{name}.axis_g", np.array([2], np.int64))

    def group_mean(t: str, tag: str) -> str:  # (N, C, H, W) -> per-group mean, (N, G, 1)
        per_channel = e.node("ReduceMean", [t, axes_hw], f"{name}/{tag}_c", keepdims=1)
        grouped = e.node("Reshape", [per_channel, to_groups], f"{name}/{tag}_cg")
        return e.node("ReduceMean", [grouped, axis_g], f"{name}/{tag}_g", keepdims=1)

    expand = e.const(f"{name}.expand", np.array([1, groups, per_group], np.int64))
    mean = e.node("Expand", [group_mean(x, "mean"), expand], f"{name}/mean_gc")
    centered = e.node("Sub", [x, e.node("Reshape", [mean, to_channels], f"{name}/mean")], f"{name}/centered")
    variance = group_mean(e.node("Mul", [centered, centered], f"{name}/squared"), "var")
    eps_c = e.const(f"{name}.eps", np.array(eps, np.float32), keep_fp32=True)
    std = e.node("Sqrt", [e.node("Add", [variance, eps_c], f"{name}/var_eps")], f"{name}/std")
    gamma_g = e.const(f"{name}.gamma", gamma.reshape(1, groups, per_group), keep_fp32=True)
    scale = e.node("Reshape", [e.node("Div", [gamma_g, std], f"{name}/scale_g"), to_channels], f"{name}/scale")
    shift = e.const(f"{name}.beta", beta.reshape(1, -1, 1, 1), keep_fp32=True)
    return e.node("Add", [e.node("Mul", [centered, scale], f"{name}/scaled"), shift], name)
