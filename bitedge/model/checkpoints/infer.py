"""Inferring a `BitConfig` from tensor shapes, for checkpoints that come without a config (timm, .npz).

Widths and depths are read off the tensors; what shapes cannot tell (GroupNorm groups, strides, padding)
takes BiT's values: 32 groups, output stride 32, "fixed" padding. A checkpoint with other settings needs an
explicit config (``load_model(path, config=...)``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bitedge.errors import CheckpointError
from bitedge.model.checkpoints.io import StateDict
from bitedge.model.config import BitConfig

_UNIT = re.compile(r"^bit\.encoder\.stages\.(\d+)\.layers\.(\d+)\.conv3\.weight$")
STEM_KEY = "bit.embedder.convolution.weight"
HEAD_KEY = "classifier.1.weight"


def infer_config(tensors: StateDict, path: Path, **overrides: Any) -> BitConfig:
    """A config whose model has exactly these transformers-named tensors (checked later on load)."""
    stem = tensors.get(STEM_KEY)
    if stem is None or stem.ndim != 4 or tuple(stem.shape[2:]) != (7, 7):
        raise CheckpointError(f"{path}: no 7x7 stem convolution ({STEM_KEY}); this is not a BiT checkpoint")
    units: dict[int, dict[int, int]] = {}
    for key, value in tensors.items():
        match = _UNIT.match(key)
        if match:
            units.setdefault(int(match[1]), {})[int(match[2])] = int(value.shape[0])
    if not units or sorted(units) != list(range(len(units))):
        raise CheckpointError(f"{path}: cannot find consecutive BiT stages (…stages.N.layers.M.conv3)")
    depths, widths = [], []
    for stage in range(len(units)):
        layers = units[stage]
        if sorted(layers) != list(range(len(layers))):
            raise CheckpointError(f"{path}: stage {stage} has missing units ({sorted(layers)})")
        depths.append(len(layers))
        widths.append(layers[0])
    head = tensors.get(HEAD_KEY)
    values: dict[str, Any] = {
        "num_channels": int(stem.shape[1]),
        "embedding_size": int(stem.shape[0]),
        "hidden_sizes": widths,
        "depths": depths,
        "layer_type": "bottleneck" if "bit.embedder.norm.weight" in tensors else "preactivation",
        "num_labels": int(head.shape[0]) if head is not None else 0,
    }
    values.update(overrides)
    return BitConfig(**values)
