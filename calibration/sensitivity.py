"""Which layers int8 hurts: each quantizable layer quantized alone in the simulated model, against float.

A search scores simulated models on a ``SearchSet``: evaluation images decoded once, as the deploy graph
takes them, with the folded float graph's logits as the reference (the unfolded reference's numbers to
~1e-5; gated at 100 % top-1 agreement for fp32) and the labels when the folders give them. A layer's
sensitivity is the simulated model with only that layer quantized, in every placement the conversion uses
(``calibration/placement.py``), compared with those logits: top-1 agreement, cosine and SNR. Layers rank by
their worst placement's SNR, lowest (most harmful) first: SNR is continuous, so it ranks layers that a
few hundred images' top-1 agreement cannot tell apart.

Like NNCF's accuracy control, ranking can run on the samples the fully quantized model gets most wrong
(``worst_samples``): one pass per layer over 64 images instead of the whole set.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from bitedge.calibration.placement import Placement
from bitedge.calibration.simulate import simulate
from bitedge.calibration.table import CalibrationTable
from bitedge.parity.metrics import Metrics, compare

Progress = Callable[[list[str]], Iterable[str]]
RANKING_IMAGES = 64  # rank layers on this many of the worst samples (all of them when the set is smaller)


def logits_of(model: nn.Module, pixels: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """``model``'s logits on ``pixels`` (N, 3, H, W), in batches."""
    with torch.no_grad():
        return torch.cat([model(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]).numpy()


@dataclass(frozen=True)
class SearchSet:
    """Images a search scores models on, decoded once, and the float graph's logits on them."""

    pixels: torch.Tensor  # (N, 3, H, W) as the deploy graph takes them (normalized or raw)
    reference: np.ndarray  # (N, K): the float deploy graph's logits
    labels: np.ndarray | None  # (N,) class indices, when known

    @classmethod
    def of(cls, deploy: nn.Module, pixels: np.ndarray, labels: np.ndarray | None) -> SearchSet:
        tensor = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        return cls(tensor, logits_of(deploy, tensor), labels)

    def __len__(self) -> int:
        return len(self.pixels)

    def outputs(self, model: nn.Module) -> np.ndarray:
        """``model``'s logits on these images."""
        return logits_of(model, self.pixels)

    def compare(self, logits: np.ndarray) -> Metrics:
        """Logits on these images against the float ones (accuracy too, when labels are known)."""
        return compare(self.reference, logits, self.labels)

    def score(self, model: nn.Module) -> Metrics:
        return self.compare(self.outputs(model))

    def subset(self, index: np.ndarray) -> SearchSet:
        labels = self.labels[index] if self.labels is not None else None
        return SearchSet(self.pixels[torch.from_numpy(index)], self.reference[index], labels)


def worst_samples(search: SearchSet, outputs: Sequence[np.ndarray], count: int = RANKING_IMAGES) -> SearchSet:
    """The ``count`` samples on which ``outputs`` (the fully quantized models' logits on ``search``) are furthest
    from float: the lowest cosine between logits, worst over the models."""
    if len(search) <= count:
        return search
    worst = np.ones(len(search))
    ref = search.reference.astype(np.float64)
    for logits in outputs:
        out = logits.astype(np.float64)
        norms = np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-300)
        worst = np.minimum(worst, (ref * out).sum(axis=1) / norms)
    return search.subset(np.sort(np.argsort(worst, kind="stable")[:count]))


@dataclass(frozen=True)
class LayerSensitivity:
    """What quantizing one layer alone costs, per placement (by name)."""

    layer: str
    metrics: dict[str, Metrics]

    @property
    def snr_db(self) -> float:
        return min(m.snr_db for m in self.metrics.values())

    @property
    def top1_agreement(self) -> float:
        return min(m.top1_agreement for m in self.metrics.values())

    @property
    def cosine(self) -> float:
        return min(m.cosine_mean for m in self.metrics.values())

    def to_dict(self) -> dict[str, object]:
        per_placement = {name: {"top1_agreement": m.top1_agreement, "cosine": m.cosine_mean, "snr_db": m.snr_db,
                                "accuracy_drop": m.accuracy_drop} for name, m in self.metrics.items()}  # fmt: skip
        return {"layer": self.layer, "top1_agreement": self.top1_agreement, "cosine": self.cosine,
                "snr_db": self.snr_db, "placements": per_placement}  # fmt: skip


def rank_layers(
    deploy: nn.Module,
    table: CalibrationTable,
    placements: Sequence[Placement],
    search: SearchSet,
    *,
    progress: Progress = lambda layers: layers,
) -> list[LayerSensitivity]:
    """Every layer ``table`` quantizes, quantized alone, scored on ``search``: most harmful first.

    With only one layer quantized, everything before its residual unit computes exactly what the float graph
    does, so each layer's pass starts from the float activations entering its unit (``_chain``), advanced
    unit by unit as the layers are visited in graph order: half the work of full passes, the same numbers."""
    chain = _chain(deploy)
    if chain is None or not np.array_equal(
        _run(chain, 0, search.pixels[:2]).numpy(), logits_of(deploy, search.pixels[:2])
    ):
        chain = None  # not the chain of units this knows: full passes
    layers = list(table.layers)
    if chain is not None:  # in graph order, so the float activations only ever move forward
        layers.sort(key=lambda name: _link_of(chain, name))
    ranked = []
    entering, x = 0, search.pixels  # the float activations entering link ``entering``
    for layer in progress(layers):
        alone = table.only([layer])
        metrics = {}
        for placement in placements:
            model = simulate(deploy, alone, placement)
            links = _chain(model)
            if chain is None or links is None:
                metrics[placement.name] = search.score(model)
                continue
            start = _link_of(chain, layer)
            while entering < start:
                x, entering = _batched(chain[entering][1], x), entering + 1
            logits = _batched(functools.partial(_run, links, start), x).numpy()
            metrics[placement.name] = search.compare(logits)
        ranked.append(LayerSensitivity(layer, metrics))
    return sorted(ranked, key=lambda s: (s.snr_db, s.top1_agreement))


Link = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


def _chain(model: Any) -> list[Link] | None:
    """A deploy (or simulated) graph as the chain it computes: input shift, stem, every residual unit, then
    norm, pooling and head, each named by its module prefix; None for a graph of another shape."""
    try:
        bit: Any = model.bit
        units = [(f"bit.encoder.stages.{i}.layers.{j}", unit) for i, stage in enumerate(bit.encoder.stages)
                 for j, unit in enumerate(stage.layers)]  # fmt: skip
        links: list[Link] = [("input_shift", model.input_shift)] if model.input_shift is not None else []
        links += [("bit.embedder", bit.embedder), *units]
        links.append(("", lambda x: model.classifier(bit.pooler(bit.norm(x)))))  # the rest: norm, pool, head
    except AttributeError:
        return None
    return links


def _link_of(chain: list[Link], layer: str) -> int:
    """The index of the link ``layer`` belongs to (the last, the head's, when no prefix names it)."""
    return next((i for i, (name, _) in enumerate(chain[:-1]) if layer.startswith(name + ".")), len(chain) - 1)


def _run(chain: list[Link], start: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for _, link in chain[start:]:
            x = link(x)
    return x


def _batched(call: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([call(x[i : i + size]) for i in range(0, len(x), size)])
