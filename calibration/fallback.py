"""Accuracy-aware int8: keep the fewest, most harmful layers in float until the simulated model meets its
budget, with a margin.

One decision for every target: the float layers go into the calibration table (``excluded``), so every
target builds the same mixed-precision model from it, and each artifact is then gated in its runtime as
usual. The search runs on the simulated models of every placement the conversion uses (``checks``: one
per placement and budget), so the decision holds for all of them:

1. score the fully quantized table; if every check passes with the margin, nothing stays float;
2. rank the layers (``sensitivity.rank_layers``, on the worst samples);
3. move layers to float in rank order, one at a time, scoring after each, until every check passes.

The margin (``with_margin``): the simulated model must clear each limit by a quarter of the distance from
the limit to perfect (99 % top-1 agreement -> 99.25 %; a 1-point accuracy drop -> 0.75), because the artifact
differs from the simulated model by rounding ties (``artifact vs simulated`` is gated at 99.5 % itself).
If only every layer in float meets the budget (or not even that), ``FallbackError`` says that the budget
cannot be met with any layer in int8: an artifact with nothing in int8 would be a float model in disguise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from torch import nn

from bitedge.calibration.placement import Placement
from bitedge.calibration.sensitivity import LayerSensitivity, Progress, SearchSet, rank_layers, worst_samples
from bitedge.calibration.simulate import simulate
from bitedge.calibration.table import CalibrationTable
from bitedge.errors import BitEdgeError
from bitedge.parity.metrics import Budget, Metrics, violations

MARGIN = 0.25  # of the distance from each limit to perfect


class FallbackError(BitEdgeError):
    """Even with every layer in float the simulated model misses the budget: int8 cannot meet it."""

    exit_code = 1


def with_margin(budget: Budget) -> Budget:
    """``budget`` tightened by ``MARGIN`` of each limit's distance to perfect."""
    cosine = budget.min_cosine
    drop = budget.max_accuracy_drop
    return replace(
        budget,
        min_top1_agreement=budget.min_top1_agreement + MARGIN * (1 - budget.min_top1_agreement),
        min_cosine=None if cosine is None else cosine + MARGIN * (1 - cosine),
        max_accuracy_drop=None if drop is None else drop * (1 - MARGIN),
    )


@dataclass(frozen=True)
class Step:
    """One point of the search: the layer just moved to float (None: the start) and the worst scores."""

    layer: str | None
    top1_agreement: float
    cosine: float
    snr_db: float
    accuracy_drop: float | None
    meets: bool
    failures: tuple[str, ...]

    @classmethod
    def of(cls, layer: str | None, scores: Sequence[tuple[Metrics, list[str]]]) -> Step:
        metrics = [m for m, _ in scores]
        drops = [m.accuracy_drop for m in metrics if m.accuracy_drop is not None]
        failures = tuple(dict.fromkeys(f for _, found in scores for f in found))
        return cls(layer, min(m.top1_agreement for m in metrics), min(m.cosine_mean for m in metrics),
                   min(m.snr_db for m in metrics), max(drops) if drops else None, not failures, failures)  # fmt: skip


@dataclass(frozen=True)
class FallbackResult:
    table: CalibrationTable  # with the float layers in ``excluded`` and this search in ``calibration``
    steps: list[Step]
    ranking: list[LayerSensitivity]
    images: int  # the search set's size
    ranking_images: int

    @property
    def float_layers(self) -> list[str]:
        return [step.layer for step in self.steps if step.layer is not None]

    def record(self, budgets: Sequence[Budget]) -> dict[str, Any]:
        """What the table (and each artifact's manifest) records about the search."""
        return {
            "budgets": [asdict(budget) for budget in budgets],
            "margin": MARGIN,
            "images": self.images,
            "ranking_images": self.ranking_images,
            "float_layers": self.float_layers,
            "steps": [asdict(step) for step in self.steps],
        }


def search_float_layers(
    deploy: nn.Module,
    table: CalibrationTable,
    checks: Sequence[tuple[Placement, Budget]],
    search: SearchSet,
    *,
    ranking_images: int,
    progress: Progress = lambda layers: layers,
    log: Callable[[str], None] = lambda _: None,
) -> FallbackResult:
    """The table with the fewest most harmful layers in float for which every check passes (see above)."""
    placements = list(dict.fromkeys(p for p, _ in checks))

    def score(candidate: CalibrationTable, layer: str | None) -> tuple[Step, list[np.ndarray]]:
        """The candidate's step, and its simulated models' logits (one per placement)."""
        outputs = {p: search.outputs(simulate(deploy, candidate, p)) for p in placements}
        scores = []
        for placement, budget in checks:
            metrics = search.compare(outputs[placement])
            scores.append((metrics, violations(metrics, with_margin(budget))))
        return Step.of(layer, scores), list(outputs.values())

    start, outputs = score(table, None)
    steps = [start]
    log(_describe(start, "int8 everywhere"))
    if start.meets:
        return _result(table, steps, [], len(search), 0, checks)
    ranking_set = worst_samples(search, outputs, ranking_images)
    # every placement ranks (a layer's worst counts): their orders differ (Spearman 0.68 between x86-uint8 and
    # symmetric-int8 on the demo; the stem is first in one and tenth in the other)
    log(f"ranking {len(table.layers)} layers on the {len(ranking_set)} worst of {len(search)} images")
    ranking = rank_layers(deploy, table, placements, ranking_set, progress=progress)
    for layer in progress([s.layer for s in ranking]):
        table = table.keep_float([layer])
        steps.append(score(table, layer)[0])
        log(_describe(steps[-1], f"+ {layer} in float"))
        if steps[-1].meets and table.layers:
            return _result(table, steps, ranking, len(search), len(ranking_set), checks)
    # every layer float: an "int8" artifact with nothing in int8 is a float model under another name
    found = (f"the simulated model meets it only with all {len(ranking)} quantized layers in float" if steps[-1].meets
             else f"even with all {len(ranking)} in float it misses it ({'; '.join(steps[-1].failures)})")  # fmt: skip
    raise FallbackError(
        f"the budget cannot be met with any layer in int8: {found}; loosen the budget (--min-top1-agreement, "
        "--min-cosine, --max-accuracy-drop), or use fp16 or fp32"
    )


def _result(
    table: CalibrationTable, steps: list[Step], ranking: list[LayerSensitivity], images: int, ranked_on: int,
    checks: Sequence[tuple[Placement, Budget]],
) -> FallbackResult:  # fmt: skip
    result = FallbackResult(table, steps, ranking, images, ranked_on)
    record = result.record(list(dict.fromkeys(budget for _, budget in checks)))
    return replace(result, table=replace(table, calibration={**table.calibration, "fallback": record}))


def _describe(step: Step, what: str) -> str:
    verdict = "meets the budget with margin" if step.meets else "misses: " + "; ".join(step.failures)
    return f"{what}: top-1 agreement {step.top1_agreement:.2%}, cosine {step.cosine:.6f} — {verdict}"
