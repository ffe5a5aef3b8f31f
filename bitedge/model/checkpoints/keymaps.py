"""Renaming timm and original-Google (.npz) BiT tensors to transformers' names (``bit.*``, ``classifier.1.*``).

Every checkpoint is normalised to transformers naming before it meets a model, so one key check and one
config inference serve all formats. A rename that maps two source keys onto one name is an error: one of
them would silently shadow the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from bitedge.errors import CheckpointError
from bitedge.model.checkpoints.io import StateDict

_TIMM_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^stem\.conv\.weight$"), "bit.embedder.convolution.weight"),
    (re.compile(r"^stem\.norm\.(weight|bias)$"), r"bit.embedder.norm.\1"),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$"), r"bit.encoder.stages.\1.layers.\2.\3"),
    (re.compile(r"^norm\.(weight|bias)$"), r"bit.norm.\1"),
    (re.compile(r"^head\.fc\.(weight|bias)$"), r"classifier.1.\1"),
]

_NPZ_UNIT = re.compile(
    r"^block(\d+)/unit(\d+)/(a|b|c)/(proj/)?(group_norm/gamma|group_norm/beta|standardized_conv2d/kernel)$"
)
_NPZ_PART = {"a": "1", "b": "2", "c": "3"}
_NPZ_FIXED = {
    "root_block/standardized_conv2d/kernel": "bit.embedder.convolution.weight",
    "group_norm/gamma": "bit.norm.weight",
    "group_norm/beta": "bit.norm.bias",
    "head/conv2d/kernel": "classifier.1.weight",
    "head/conv2d/bias": "classifier.1.bias",
}


def looks_like_timm(keys: Iterable[str]) -> bool:
    return any(k.startswith(("stem.", "stages.")) for k in keys)


def timm_to_transformers(tensors: StateDict, path: Path) -> StateDict:
    """timm ``resnetv2_*_bit`` state dict -> transformers names; the 1x1-conv head becomes a linear."""
    out = _rename(tensors.items(), lambda key: _apply_rules(key, _TIMM_RULES), path, "timm")
    head = out.get("classifier.1.weight")
    if head is not None and head.ndim == 4:
        out["classifier.1.weight"] = head.flatten(1)  # (K, C, 1, 1) -> (K, C)
    return out


def npz_to_transformers(arrays: dict[str, np.ndarray], path: Path, prefix: str = "resnet/") -> StateDict:
    """Original BiT ``.npz`` -> transformers names; HWIO kernels become OIHW, the head a linear."""

    def name(key: str) -> str | None:
        if not key.startswith(prefix):
            return None
        key = key[len(prefix) :]
        if key in _NPZ_FIXED:
            return _NPZ_FIXED[key]
        match = _NPZ_UNIT.match(key)
        if match is None:
            return None
        block, unit, part, proj, leaf = match.groups()
        base = f"bit.encoder.stages.{int(block) - 1}.layers.{int(unit) - 1}"
        if proj:
            return f"{base}.downsample.conv.weight" if leaf.endswith("kernel") else None
        kind = {"group_norm/gamma": "norm{}.weight", "group_norm/beta": "norm{}.bias"}.get(leaf, "conv{}.weight")
        return f"{base}.{kind.format(_NPZ_PART[part])}"

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    out = _rename(tensors.items(), name, path, "npz")
    for key, value in out.items():
        if value.ndim == 4:  # HWIO -> OIHW
            value = value.permute(3, 2, 0, 1).contiguous()
        if key == "classifier.1.weight":
            value = value.flatten(1)
        elif value.ndim > 1 and (key.endswith(".bias") or ".norm" in key):
            value = value.reshape(-1)  # some exports store GN affine params as (1, 1, 1, C)
        out[key] = value.float()
    return out


def _apply_rules(key: str, rules: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, replacement in rules:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def _rename(
    items: Iterable[tuple[str, torch.Tensor]], rename: Callable[[str], str | None], path: Path, fmt: str
) -> StateDict:
    out: StateDict = {}
    unknown: list[str] = []
    for key, value in items:
        new = rename(key)
        if new is None:
            unknown.append(key)
        elif new in out:
            raise CheckpointError(f"{path}: two {fmt} keys map onto {new!r}; the checkpoint has duplicated tensors")
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(
            f"{path}: keys that are not part of a {fmt} BiT model: {', '.join(unknown[:5])}"
            + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
        )
    return out
