"""Checkpoint formats: safe readers (`io`), renaming to transformers' names (`keymaps`), config inference
(`infer`). :func:`bitedge.load_model` ties them together."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckpointSource:
    """Provenance of a loaded model, copied into every artifact's manifest."""

    path: str
    format: str  # "transformers" | "timm" | "npz" | "state-dict" | "preset"
    sha256: str | None  # of the weight file(s); None for presets
