"""Shared fixtures: tiny seeded BiT models (built by transformers, the oracle) and real sample photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from bitedge.testing import demo_eval_subset

pytest_plugins = ["hostile_fixtures"]  # fixtures of tests/e2e/test_hostile_*.py

# Tiny but complete: 4 stages, a projection unit in each, a 2-unit stage, 4 GroupNorm groups.
TINY: dict[str, Any] = dict(
    embedding_size=16, hidden_sizes=[16, 32, 32, 64], depths=[1, 2, 1, 1], num_groups=4, num_labels=5
)
# Widths that BiT's fixed 32 GroupNorm groups can split, for formats whose config is read off tensor shapes.
TINY_32_GROUPS: dict[str, Any] = dict(embedding_size=32, hidden_sizes=[128, 128, 256, 256], depths=[1, 2, 1, 1])


@pytest.fixture(scope="session", autouse=True)
def _hash_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Artifact file digests are cached per user (bitedge.artifacts.integrity): the suite keeps its own cache."""
    import os

    os.environ["BITEDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("bitedge-cache"))


def perturb_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give GroupNorm affine params and biases non-trivial values, so a mix-up of them cannot go unseen."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(0.2 * torch.randn(param.shape, generator=gen))
    return model


def hf_classifier(seed: int = 0, **overrides: Any) -> Any:
    """A seeded transformers BitForImageClassification (the oracle), in eval mode."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = transformers.BitConfig(**{**TINY, **overrides})
    return perturb_(transformers.BitForImageClassification(config), seed).eval()


def pixels(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def sample_photos() -> dict[str, Image.Image]:
    """Real photos shipped with scikit-image: RGB, non-square RGB, grayscale (L) and RGBA."""
    import skimage.data

    return {
        "astronaut": Image.fromarray(skimage.data.astronaut()),
        "coffee": Image.fromarray(skimage.data.coffee()),  # 400 x 600
        "camera": Image.fromarray(skimage.data.camera()),  # grayscale
        "logo": Image.fromarray(skimage.data.logo()),  # RGBA with transparency
    }


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    return sample_photos()


@pytest.fixture
def tiny_hf_dir(tmp_path: Path) -> Path:
    """A transformers save_pretrained directory of a tiny classifier."""
    directory = tmp_path / "tiny-bit"
    hf_classifier().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def demo_onnx_int8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's int8 ONNX artifact, verified on 200 of its held-out digits (sharded and Ray verification)."""
    from bitedge.cli import main

    root = tmp_path_factory.mktemp("demo-onnx-int8")
    eval_images = demo_eval_subset(root / "eval", per_class=20)
    out = root / "onnx-int8"
    args = ["convert", "--target", "onnx", "--precision", "int8", "--eval", str(eval_images), "--out", str(out)]
    assert main(args) == 0
    return out


def assert_close(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, atol: float = 1e-5) -> None:
    a_t, b_t = torch.as_tensor(a), torch.as_tensor(b)
    assert a_t.shape == b_t.shape, (a_t.shape, b_t.shape)
    diff = (a_t.double() - b_t.double()).abs().max().item()
    assert diff <= atol, f"max abs difference {diff:.3g} > {atol:g}"


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos (and flips of them) in class folders named like the tiny model's labels."""
    root = tmp_path_factory.mktemp("eval")
    photos = list(sample_photos().values())
    for i in range(10):
        folder = root / f"LABEL_{i % 5}"
        folder.mkdir(exist_ok=True)
        image = photos[i % len(photos)]
        (image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i >= len(photos) else image).save(folder / f"{i}.png")
    return root
