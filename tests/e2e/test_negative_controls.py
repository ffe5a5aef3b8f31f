"""Controls that show the comparisons above can fail: the stem's padding detail matters, batches do not."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import assert_close, hf_classifier, pixels
from torch import nn

from bitedge import load_model


def test_maxpool_padding_instead_of_zero_pad_changes_the_output(tiny_hf_dir: Path) -> None:
    """BiT pads the stem output with zeros, then max-pools unpadded; max-pool padding=1 pads with -inf."""
    model = load_model(tiny_hf_dir)
    x = pixels(2, 64)
    with torch.no_grad():
        stem_out = model.bit.embedder.convolution(x)
        reference = model(x, output_hidden_states=True)
        model.bit.embedder.pad = nn.Identity()
        model.bit.embedder.pooler = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        altered = model(x, output_hidden_states=True)
        oracle = hf_classifier()(x, output_hidden_states=True)
    assert stem_out.min() < 0  # the case that tells the two apart: negative values at the border
    # Far beyond the 1e-5 equivalence tolerance, at the stem and still at the logits ...
    assert (altered.hidden_states[0] - reference.hidden_states[0]).abs().max() > 0.1
    assert (altered.logits - reference.logits).abs().max() > 1e-4
    # ... and transformers sides with the zero pad.
    assert_close(reference.hidden_states[0], oracle.hidden_states[0])
    assert_close(reference.logits, oracle.logits)


def test_batch_composition_does_not_change_any_sample(tiny_hf_dir: Path) -> None:
    model = load_model(tiny_hf_dir)
    batch = pixels(5, 64, seed=3)
    with torch.no_grad():
        together = model(batch).logits
        for i in range(5):
            assert_close(model(batch[i : i + 1]).logits[0], together[i])
        shuffled = model(batch.flip(0)).logits.flip(0)
    assert_close(shuffled, together)
