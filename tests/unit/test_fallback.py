"""Budgets from the command line, and the accuracy-aware int8 search on the demo model's simulated graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitedge import load_model
from bitedge.calibration.fallback import FallbackError, search_float_layers, with_margin
from bitedge.calibration.placement import SYMMETRIC_INT8, X86_UINT8
from bitedge.calibration.sensitivity import rank_layers, worst_samples
from bitedge.calibration.simulate import simulate
from bitedge.calibration.table import CalibrationTable
from bitedge.errors import BadInputError
from bitedge.fold import fold
from bitedge.model.demo import DEMO_CALIBRATION, DEMO_EVAL
from bitedge.parity.images import scan_images
from bitedge.parity.metrics import BUDGETS, Budget, BudgetOverride, violations
from bitedge.pipeline.int8 import calibration_table, search_set
from bitedge.pipeline.options import CalibrationOptions
from bitedge.precisions import Precision


@pytest.mark.parametrize(
    ("override", "flag"),
    [
        (dict(min_cosine=1.5), "--min-cosine 1.5"),
        (dict(max_accuracy_drop=-0.1), "--max-accuracy-drop -0.1"),
        (dict(min_top1_agreement=99.5), "--min-top1-agreement 99.5"),
        (dict(min_cosine=float("nan")), "--min-cosine nan"),
    ],
)
def test_budget_outside_its_range_is_refused_by_flag(override: dict[str, float], flag: str) -> None:
    with pytest.raises(BadInputError, match=flag.replace("-0.1", r"\-0.1")):
        BudgetOverride(**override)


def test_override_replaces_only_what_is_given() -> None:
    base = BUDGETS[Precision.INT8]
    assert BudgetOverride().apply(base) == base
    tighter = BudgetOverride(min_cosine=0.9999).apply(base)
    assert tighter == Budget(min_top1_agreement=0.99, min_cosine=0.9999, max_accuracy_drop=1.0)


def test_margin_is_a_quarter_of_the_way_to_perfect() -> None:
    margin = with_margin(Budget(min_top1_agreement=0.99, min_cosine=0.999, max_accuracy_drop=1.0))
    assert margin.min_top1_agreement == pytest.approx(0.9925)
    assert margin.min_cosine == pytest.approx(0.99925)
    assert margin.max_accuracy_drop == pytest.approx(0.75)


def test_keep_float_and_only() -> None:
    table = CalibrationTable("entropy", {"a": {}, "b": {}, "c": {}}, ["stem"], None, {})  # type: ignore[dict-item]
    kept = table.keep_float(["b"])
    assert list(kept.layers) == ["a", "c"] and kept.excluded == ["stem", "b"]
    assert list(table.layers) == ["a", "b", "c"]  # the original is untouched
    assert list(table.only(["c"]).layers) == ["c"]


@pytest.fixture(scope="module")
def demo() -> tuple[object, CalibrationTable, object]:
    model = load_model("bitedge/demo")
    processor = model.image_processor
    deploy = fold(model)
    options = CalibrationOptions(images=DEMO_CALIBRATION, size=64)
    table = calibration_table(model, deploy, processor, options, raw_pixels=False)
    images = scan_images(DEMO_EVAL, model.config.labels)
    every_fourth = type(images)(images.root, images.files[::4], images.labels[::4])  # type: ignore[index]
    return deploy, table, search_set(deploy, every_fourth, processor, raw_pixels=False)


def test_ranking_puts_the_most_harmful_layer_first(demo: tuple) -> None:
    deploy, table, search = demo
    ranking = rank_layers(deploy, table, [X86_UINT8], search)
    assert sorted(s.layer for s in ranking) == sorted(table.layers)
    snrs = [s.snr_db for s in ranking]
    assert snrs == sorted(snrs)
    worst_alone = search.score(simulate(deploy, table.only([ranking[0].layer]), X86_UINT8))
    assert worst_alone.snr_db == pytest.approx(ranking[0].snr_db)
    subset = worst_samples(search, [search.outputs(simulate(deploy, table, X86_UINT8))], count=10)
    assert len(subset) == 10 and subset.labels is not None


def test_ranking_from_cached_float_activations_equals_full_passes(demo: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    from bitedge.calibration import sensitivity

    deploy, table, search = demo
    assert sensitivity._chain(deploy) is not None  # the demo's deploy graph is a chain of units
    subset = search.subset(np.arange(24))
    cached = {s.layer: s.metrics for s in rank_layers(deploy, table, [X86_UINT8], subset)}
    monkeypatch.setattr(sensitivity, "_chain", lambda model: None)
    full = {s.layer: s.metrics for s in rank_layers(deploy, table, [X86_UINT8], subset)}
    assert cached.keys() == full.keys()
    for layer, metrics in cached.items():
        assert metrics["x86-uint8"].snr_db == pytest.approx(full[layer]["x86-uint8"].snr_db, abs=1e-6), layer


def test_fallback_keeps_the_fewest_layers_float_until_the_budget_holds(demo: tuple) -> None:
    deploy, table, search = demo
    plain = {p: search.score(simulate(deploy, table, p)) for p in (X86_UINT8, SYMMETRIC_INT8)}
    # a budget plain int8 misses: cosine 30 % of the way from what it reaches to perfect (top-1 loosened:
    # on 100 images one flip is 1 %, and the margin on 99 % would allow none)
    worst = min(m.cosine_mean for m in plain.values())
    override = BudgetOverride(min_top1_agreement=0.9, min_cosine=worst + 0.3 * (1 - worst))
    budget = override.apply(BUDGETS[Precision.INT8])
    assert any(violations(m, budget) for m in plain.values())
    checks = [(X86_UINT8, budget), (SYMMETRIC_INT8, budget)]
    result = search_float_layers(deploy, table, checks, search, ranking_images=32)
    assert result.float_layers and len(result.float_layers) < len(table.layers)
    assert result.table.excluded == [*table.excluded, *result.float_layers]
    assert result.table.calibration["fallback"]["float_layers"] == result.float_layers
    assert not result.steps[0].meets and result.steps[-1].meets
    assert not any(step.meets for step in result.steps[:-1])  # it stopped at the first table that met it
    for placement, _ in checks:  # rebuilt from the table alone, every placement meets the budget with margin
        assert not violations(search.score(simulate(deploy, result.table, placement)), with_margin(budget))
    assert result.ranking_images == 32


def test_fallback_with_a_budget_plain_int8_meets_keeps_everything_int8(demo: tuple) -> None:
    deploy, table, search = demo
    loose = Budget(min_top1_agreement=0.5)
    result = search_float_layers(deploy, table, [(X86_UINT8, loose)], search, ranking_images=32)
    assert result.float_layers == [] and result.table.layers == table.layers and result.ranking == []


def test_a_budget_only_float_meets_says_int8_cannot_meet_it(demo: tuple) -> None:
    """Cosine 1 - 1e-9: only the simulated model with every layer float (the float model itself) meets it. An
    "int8" artifact with nothing in int8 is not built; the error says why."""
    deploy, table, search = demo
    strict = Budget(min_top1_agreement=0.5, min_cosine=1 - 1e-9)
    with pytest.raises(FallbackError, match=r"the budget cannot be met with any layer in int8: the simulated model "
                       "meets it only with all .* quantized layers in float; loosen the budget"):  # fmt: skip
        search_float_layers(deploy, table, [(X86_UINT8, strict)], search, ranking_images=8)


def test_search_set_spreads_over_the_set_and_keeps_labels(tmp_path: Path) -> None:
    model = load_model("bitedge/demo")
    images = scan_images(DEMO_EVAL, model.config.labels)
    search = search_set(fold(model), images, model.image_processor, raw_pixels=False)
    assert len(search) == len(images.files)  # 400 <= SEARCH_IMAGES: all of them
    assert search.labels is not None and set(np.unique(search.labels)) == set(range(10))
