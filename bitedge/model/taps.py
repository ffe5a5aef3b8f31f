"""Tap points: the layers whose outputs ``bitedge diagnose`` compares across the float, simulated-quantized and
deployed graphs, named by their module path in bitedge's model (transformers' names).

Every convolution and the linear head (what int8 quantizes), every GroupNorm (+ activation), the stem's output
and every residual unit's output. The simulated int8 model keeps these names (its quantized wrappers replace
the modules at the same paths), and each target records where they are in its artifact.
"""

from __future__ import annotations

from torch import nn

from bitedge.model.blocks import BitBottleneckLayer, BitEmbeddings, BitPreActivationBottleneckLayer
from bitedge.model.layers import BitGroupNormActivation

KINDS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], str], ...] = (
    ((nn.Conv2d,), "conv"),
    ((nn.Linear,), "head"),
    ((BitGroupNormActivation,), "norm"),
    ((BitEmbeddings,), "stem"),
    ((BitPreActivationBottleneckLayer, BitBottleneckLayer), "unit"),
)


def tap_kind(module: nn.Module) -> str | None:
    """ "conv", "head", "norm", "stem" or "unit" for a tap point, else None. A quantized wrapper (anything with
    a ``layer`` conv or linear it stands in for) is the tap point of that layer."""
    inner = getattr(module, "layer", None)
    if isinstance(inner, nn.Conv2d | nn.Linear) and not isinstance(module, nn.Conv2d | nn.Linear):
        module = inner
    for types, kind in KINDS:
        if isinstance(module, types):
            return kind
    return None


def tap_points(model: nn.Module) -> dict[str, str]:
    """Every tap point of ``model`` (a deploy or simulated graph), path -> kind, in module order (a quantized
    wrapper's inner layer is not a tap point of its own)."""
    points: dict[str, str] = {}
    for path, module in model.named_modules():
        parent, _, leaf = path.rpartition(".")
        if leaf == "layer" and parent in points:
            continue
        kind = tap_kind(module)
        if kind is not None:
            points[path] = kind
    return points
