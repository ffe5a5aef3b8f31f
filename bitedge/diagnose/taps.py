"""The torch models' side of a diagnosis: every tap point's output during a forward pass (forward hooks), and
the order in which a network produces them (its depth axis)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from bitedge.model.taps import tap_points


@contextlib.contextmanager
def captured(model: nn.Module, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """While open, each forward pass of ``model`` fills the dict with ``layer -> output`` (a tensor, in the
    memory layout the layer wrote it: no copy)."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for name in layers:
        module = model.get_submodule(name)

        def hook(_: nn.Module, __: object, output: torch.Tensor, name: str = name) -> None:
            outputs[name] = output.detach()

        handles.append(module.register_forward_hook(hook))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def run_tapped(model: nn.Module, layers: list[str], pixels: np.ndarray) -> dict[str, torch.Tensor]:
    """``model``'s layer outputs on ``pixels`` (N, 3, H, W)."""
    with captured(model, layers) as outputs, torch.no_grad():
        model(torch.from_numpy(pixels))
    return dict(outputs)


def tap_order(model: nn.Module, input_size: tuple[int, int]) -> dict[str, str]:
    """Every tap point of ``model`` -> its kind, in the order a forward pass completes them (graph depth)."""
    points = tap_points(model)
    order: list[str] = []
    with captured(model, list(points)) as outputs, torch.no_grad():
        model(torch.zeros(1, 3, *input_size))
        order = list(outputs)  # dicts keep insertion order: the order the hooks fired
    return {name: points[name] for name in order}
