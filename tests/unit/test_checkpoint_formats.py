"""timm and original-.npz checkpoints load to the same function as the transformers checkpoint they came from.

The test files are written here by renaming and transposing a seeded model's tensors with the key maps of
DESIGN.md (timm: ``stem.conv``, ``stages.S.blocks.L``, ``head.fc`` as a 1x1 conv; npz: ``resnet/...`` HWIO).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_32_GROUPS, assert_close, hf_classifier, pixels
from safetensors.torch import save_file

from bitedge import BitConfig, load_model

_TIMM = [
    (r"^bit\.embedder\.convolution\.", "stem.conv."),
    (r"^bit\.encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"^bit\.norm\.", "norm."),
    (r"^classifier\.1\.", "head.fc."),
]


def to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in _TIMM:
            key = re.sub(pattern, repl, key)
        out[key] = value[:, :, None, None].contiguous() if key == "head.fc.weight" else value.contiguous()
    return out


def to_npz(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in state.items():
        array = value.numpy()
        if array.ndim == 4:
            array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        if key == "classifier.1.weight":
            array = array.T[None, None]  # (K, C) -> (1, 1, C, K)
        unit = re.match(r"bit\.encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)$", key)
        if unit:
            stage, layer, rest = int(unit[1]), int(unit[2]), unit[3]
            base = f"resnet/block{stage + 1}/unit{layer + 1:02d}"
            if rest == "downsample.conv.weight":
                name = f"{base}/a/proj/standardized_conv2d/kernel"
            else:
                kind, idx, leaf = rest[:4], rest[4], rest.split(".")[1]
                part = "abc"[int(idx) - 1]
                leaf_name = {"weight": "gamma", "bias": "beta"}[leaf] if kind == "norm" else "kernel"
                group = "group_norm" if kind == "norm" else "standardized_conv2d"
                name = f"{base}/{part}/{group}/{leaf_name}"
        else:
            name = {
                "bit.embedder.convolution.weight": "resnet/root_block/standardized_conv2d/kernel",
                "bit.norm.weight": "resnet/group_norm/gamma",
                "bit.norm.bias": "resnet/group_norm/beta",
                "classifier.1.weight": "resnet/head/conv2d/kernel",
                "classifier.1.bias": "resnet/head/conv2d/bias",
            }[key]
        out[name] = np.ascontiguousarray(array)
    return out


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    """A 32-group tiny BiT: the architecture timm/npz shapes imply (BiT always uses 32 groups)."""
    return hf_classifier(num_groups=32, num_labels=7, **TINY_32_GROUPS)


def _same_function(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    x = pixels(2, 64)
    with torch.no_grad():
        a = reference(x, output_hidden_states=True)
        b = loaded(x, output_hidden_states=True)
    assert_close(b.logits, a.logits, atol=0)
    for mine, ref in zip(b.hidden_states, a.hidden_states, strict=True):
        assert_close(mine, ref, atol=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_state_dict(reference: torch.nn.Module, tmp_path: Path, suffix: str) -> None:
    tensors = to_timm(reference.state_dict())
    path = tmp_path / f"resnetv2_tiny_bit{suffix}"
    save_file(tensors, str(path)) if suffix == ".safetensors" else torch.save(tensors, path)
    model = load_model(path)
    assert model.source.format == "timm"
    assert model.config.hidden_sizes == [128, 128, 256, 256] and model.config.depths == [1, 2, 1, 1]
    assert model.config.num_labels == 7
    _same_function(model, reference)


def test_timm_checkpoint_wrapped_in_state_dict_key(reference: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "train_checkpoint.pth"
    torch.save({"state_dict": to_timm(reference.state_dict()), "epoch": 3}, path)
    _same_function(load_model(path), reference)


def test_original_npz(reference: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "BiT-tiny.npz"
    np.savez(path, **to_npz(reference.state_dict()))
    model = load_model(path)
    assert model.source.format == "npz"
    assert model.config.weight_standardization_eps == 1e-10  # the Google code's eps
    # Same tensors, Google's eps: compare with the transformers-format model switched to that eps.
    for module in reference.modules():
        if hasattr(module, "eps") and isinstance(module, torch.nn.Conv2d):
            module.eps = 1e-10
    try:
        _same_function(model, reference)
    finally:
        for module in reference.modules():
            if hasattr(module, "eps") and isinstance(module, torch.nn.Conv2d):
                module.eps = 1e-8


def test_bare_transformers_state_dict_file(reference: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "bit.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = load_model(path)
    assert model.source.format == "state-dict"
    _same_function(model, reference)


def test_explicit_config_overrides_inference(tmp_path: Path) -> None:
    """A checkpoint with non-BiT GroupNorm groups needs its config; with it, it loads exactly."""
    reference = hf_classifier()  # 4 groups
    path = tmp_path / "tiny.safetensors"
    save_file(to_timm(reference.state_dict()), str(path))
    _same_function(load_model(path, config=BitConfig(**TINY)), reference)


def test_sha256_is_recorded(reference: torch.nn.Module, tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "w.safetensors"
    save_file(to_timm(reference.state_dict()), str(path))
    assert load_model(path).source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
