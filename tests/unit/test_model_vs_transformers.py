"""The reference model is the same function as transformers' BiT: logits and every hidden state within 1e-5.

Each case builds a seeded transformers model, saves it with ``save_pretrained``, loads the directory with
``bitedge.load_model`` and runs both on the same input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_close, hf_classifier, pixels

from bitedge import BitBackbone, BitForImageClassification, BitModel, load_model

CASES: dict[str, dict[str, Any]] = {
    "preactivation": {},
    "bottleneck": {"layer_type": "bottleneck"},
    "same-padding": {"global_padding": "SAME"},
    "same-dynamic-stem": {"global_padding": "SAME", "embedding_dynamic_padding": True},
    "dynamic-stem-only": {"embedding_dynamic_padding": True},
    "output-stride-16": {"output_stride": 16},
    "bottleneck-output-stride-8": {"layer_type": "bottleneck", "output_stride": 8},
    "gelu": {"hidden_act": "gelu"},
}


def _compare(ours: Any, theirs: Any, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected = theirs(x, output_hidden_states=True)
        got = ours(x, output_hidden_states=True)
    assert_close(got.logits, expected.logits)
    assert len(got.hidden_states) == len(expected.hidden_states)
    for mine, ref in zip(got.hidden_states, expected.hidden_states, strict=True):
        assert_close(mine, ref)


@pytest.mark.parametrize("case", list(CASES))
def test_classifier_matches_transformers(case: str, tmp_path: Path) -> None:
    theirs = hf_classifier(**CASES[case])
    theirs.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert isinstance(ours, BitForImageClassification)
    assert ours.source.format == "transformers"
    # odd, non-square sizes exercise the dynamic "SAME" paddings
    _compare(ours, theirs, pixels(3, 61, seed=1)[..., :57])
    _compare(ours, theirs, pixels(2, 64))


def test_base_model_outputs_match(tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    theirs = transformers.BitModel(hf_classifier().config).eval()
    theirs.save_pretrained(tmp_path)  # keys without the "bit." prefix
    ours = load_model(tmp_path)
    assert isinstance(ours, BitModel)
    x = pixels()
    with torch.no_grad():
        a, b = theirs(x, output_hidden_states=True), ours(x, output_hidden_states=True)
    assert_close(b.last_hidden_state, a.last_hidden_state)
    assert_close(b.pooler_output, a.pooler_output)
    assert b.pooler_output.shape == a.pooler_output.shape == (2, 64, 1, 1)


def test_backbone_feature_maps_match(tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    config = hf_classifier(out_features=["stem", "stage2", "stage4"]).config
    theirs = transformers.BitBackbone(config).eval()
    theirs.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    assert isinstance(ours, BitBackbone)
    assert ours.num_features == list(theirs.num_features)
    x = pixels()
    with torch.no_grad():
        a, b = theirs(x), ours(x)
    assert len(b.feature_maps) == len(a.feature_maps) == 3
    for mine, ref in zip(b.feature_maps, a.feature_maps, strict=True):
        assert_close(mine, ref)


def test_classifier_checkpoint_loads_as_backbone(tiny_hf_dir: Path) -> None:
    backbone = load_model(tiny_hf_dir, model_class=BitBackbone)
    full = load_model(tiny_hf_dir)
    with torch.no_grad():
        maps = backbone(pixels()).feature_maps
        hidden = full(pixels(), output_hidden_states=True).hidden_states
    assert_close(maps[-1], hidden[-1], atol=0)


def test_headless_model_returns_pooled_features(tmp_path: Path) -> None:
    theirs = hf_classifier(num_labels=0)
    theirs.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    with torch.no_grad():
        assert_close(ours(pixels()).logits, theirs(pixels()).logits)
    assert ours(pixels()).logits.shape == (2, 64)


def test_our_save_pretrained_loads_in_transformers(tmp_path: Path, tiny_hf_dir: Path) -> None:
    import transformers

    ours = load_model(tiny_hf_dir)
    ours.save_pretrained(tmp_path / "again")
    theirs = transformers.BitForImageClassification.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        assert_close(ours(pixels()).logits, theirs(pixels()).logits, atol=0)


def test_drop_path_only_in_training(tmp_path: Path) -> None:
    theirs = hf_classifier(drop_path_rate=0.5)
    theirs.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    with torch.no_grad():
        assert_close(ours(pixels()).logits, theirs(pixels()).logits)  # eval: no drop path
        ours.train()
        torch.manual_seed(0)
        trained = ours(pixels()).logits
    assert (trained - theirs(pixels()).logits).abs().max() > 1e-3  # training: units really get dropped


def test_labels_give_a_loss(tiny_hf_dir: Path) -> None:
    out = load_model(tiny_hf_dir)(pixels(), labels=torch.tensor([0, 4]))
    assert out.loss is not None and out.loss.ndim == 0 and torch.isfinite(out.loss)
