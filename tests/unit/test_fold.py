"""Fold: the deploy graph computes the reference function, with no weight normalization left to run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import hf_classifier, pixels

from bitedge import BitImageProcessor, load_model
from bitedge.errors import ConfigError
from bitedge.fold import fold
from bitedge.model.layers import WeightStandardizedConv2d


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("layer_type", ["preactivation", "bottleneck"])
@pytest.mark.parametrize("eps", [1e-8, 1e-10])
def test_folded_matches_unfolded(tmp_path: Path, layer_type: str, eps: float) -> None:
    hf_classifier(layer_type=layer_type).save_pretrained(tmp_path)
    model = load_model(tmp_path)
    for module in model.modules():
        if isinstance(module, WeightStandardizedConv2d):
            module.eps = eps
    deploy = fold(model)
    assert not any(isinstance(m, WeightStandardizedConv2d) for m in deploy.modules())
    x = pixels(3, 64)
    with torch.no_grad():
        assert _relative(deploy(x), model(x).logits) <= 1e-5


def test_fold_uses_the_source_eps(tmp_path: Path) -> None:
    """A tiny-variance filter makes eps matter: folding with the wrong eps would be visible."""
    hf_classifier().save_pretrained(tmp_path)
    model = load_model(tmp_path)
    conv = model.bit.encoder.stages[0].layers[0].conv1
    with torch.no_grad():
        conv.weight[0] = 1.0 + 1e-5 * torch.randn_like(conv.weight[0])  # variance ~1e-10
    w = conv.weight[0].detach().double()
    folded = {}
    for eps in (1e-8, 1e-10):
        conv.eps = eps
        folded[eps] = fold(model).bit.encoder.stages[0].layers[0].conv1.weight[0].double()
        expected = (w - w.mean()) / torch.sqrt(w.var(unbiased=False) + eps)  # float64 reference
        assert torch.allclose(folded[eps], expected, rtol=1e-6, atol=1e-6)
    assert (folded[1e-8] - folded[1e-10]).abs().max() > 0.1  # the eps really changed the weights


def test_callers_model_is_untouched(tiny_hf_dir: Path) -> None:
    model = load_model(tiny_hf_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold(model, raw_pixel_input=True, processor=BitImageProcessor())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model.bit.embedder.convolution, WeightStandardizedConv2d)


@pytest.mark.parametrize(
    "processor",
    [
        BitImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3),  # BiT: mean folds into a bias
        BitImageProcessor(),  # CLIP mean/std: per-channel mean, one input shift
    ],
    ids=["uniform-mean", "per-channel-mean"],
)
@pytest.mark.parametrize("padding", [None, "SAME"])
def test_raw_pixel_folding_is_exact(tmp_path: Path, processor: BitImageProcessor, padding: str | None) -> None:
    hf_classifier(global_padding=padding).save_pretrained(tmp_path)
    model = load_model(tmp_path)
    raw = torch.randint(0, 256, (3, 3, 64, 64)).double()
    mean = torch.tensor(processor.image_mean, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(processor.image_std, dtype=torch.float64).reshape(1, 3, 1, 1)
    normalized = ((raw * processor.rescale_factor - mean) / std).float()
    deploy = fold(model, raw_pixel_input=True, processor=processor)
    with torch.no_grad():
        assert _relative(deploy(raw.float()), model(normalized).logits) <= 1e-5
    uniform = processor.image_mean == [0.5] * 3
    assert (deploy.input_shift is None) == uniform


def test_raw_pixel_folding_needs_a_processor(tiny_hf_dir: Path) -> None:
    with pytest.raises(ConfigError, match="preprocessing"):
        fold(load_model(tiny_hf_dir), raw_pixel_input=True)
