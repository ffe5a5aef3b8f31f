"""The parity maths and budgets, on logits whose metrics are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bitedge.parity.metrics import BUDGETS, INT8_VS_SIMULATED, Budget, Comparison, ParityReport, compare, violations
from bitedge.precisions import Precision

REFERENCE = np.array([[3.0, 1.0, 0.0, -1.0, -2.0, -3.0], [0.0, 2.0, 1.0, -1.0, -2.0, -3.0]])  # top-1: 0, 1


def test_identical_logits() -> None:
    m = compare(REFERENCE, REFERENCE.copy(), np.array([0, 1]))
    assert (m.samples, m.top1_agreement, m.top5_agreement, m.max_abs_diff, m.mean_abs_diff) == (2, 1.0, 1.0, 0, 0)
    assert m.cosine_min == pytest.approx(1.0) and m.snr_db == math.inf and m.finite
    assert (m.reference_accuracy, m.artifact_accuracy, m.accuracy_drop) == (100.0, 100.0, 0.0)
    assert all(violations(m, budget) == [] for budget in BUDGETS.values())


def test_one_flip_and_known_differences() -> None:
    artifact = REFERENCE.copy()
    artifact[1, 2] = 2.5  # image 1 now says class 2: top-1 agreement 1/2; its top-5 set still overlaps 5 of 5
    m = compare(REFERENCE, artifact, np.array([0, 1]))
    assert m.top1_agreement == 0.5 and m.top5_agreement == 1.0
    assert m.max_abs_diff == pytest.approx(1.5) and m.mean_abs_diff == pytest.approx(1.5 / 12)
    expected_snr = 10 * math.log10(float((REFERENCE**2).sum()) / 1.5**2)
    assert m.snr_db == pytest.approx(expected_snr)
    cosine_1 = float(REFERENCE[1] @ artifact[1] / np.linalg.norm(REFERENCE[1]) / np.linalg.norm(artifact[1]))
    assert m.cosine_min == pytest.approx(cosine_1) and m.cosine_mean == pytest.approx((1 + cosine_1) / 2)
    assert (m.reference_accuracy, m.artifact_accuracy, m.accuracy_drop) == (100.0, 50.0, 50.0)
    failures = violations(m, BUDGETS[Precision.INT8])
    assert failures == ["top-1 agreement 50.00% < 99.00%", "accuracy drop 50.00 points > 1.0"]


def test_top5_overlap_counts_the_shared_classes() -> None:
    artifact = REFERENCE.copy()
    artifact[0] = [3.0, 1.0, -5.0, -1.0, -2.0, 0.5]  # class 2 leaves image 0's top 5, class 5 enters: 4 of 5
    assert compare(REFERENCE, artifact).top5_agreement == pytest.approx((4 / 5 + 1) / 2)


def test_fp32_budget_is_relative_to_the_largest_logit() -> None:
    big = REFERENCE * 100  # max |logit| 300: 1e-3 x 300 = 0.3 allowed
    within, beyond = big.copy(), big.copy()
    within[0, 5] += 0.29
    beyond[0, 5] += 0.31
    budget = BUDGETS[Precision.FP32]
    assert violations(compare(big, within), budget) == []
    assert violations(compare(big, beyond), budget) == ["max |Δlogit| 0.31 > 0.3"]


def test_non_finite_outputs_always_fail() -> None:
    artifact = REFERENCE.copy()
    artifact[0, 0] = np.nan
    m = compare(REFERENCE, artifact)
    assert not m.finite and m.max_abs_diff == math.inf and m.snr_db == -math.inf
    assert violations(m, Budget(min_top1_agreement=0.0)) == ["the artifact produced NaN or inf logits"]


def test_cosine_budget_and_shapes() -> None:
    noisy = REFERENCE + np.random.default_rng(0).normal(0, 0.5, REFERENCE.shape)
    m = compare(REFERENCE, noisy)
    assert m.cosine_mean < INT8_VS_SIMULATED.min_cosine  # type: ignore[operator]
    assert any(f.startswith("cosine") for f in violations(m, INT8_VS_SIMULATED))
    with pytest.raises(ValueError, match="shapes differ"):
        compare(REFERENCE, REFERENCE[:, :5])


def test_a_report_passes_only_when_every_gated_comparison_and_no_problem_fails() -> None:
    good = compare(REFERENCE, REFERENCE)
    bad = compare(REFERENCE, -REFERENCE)
    strict = BUDGETS[Precision.FP32]
    report = ParityReport(
        "onnx", "fp32", [Comparison.of("a", good, strict), Comparison.of("b", bad, strict, gated=False)]
    )
    assert report.passed and report.comparisons[1].failures == []  # information only
    assert "information, not gated" in report.to_markdown()
    report.problems.append("model.onnx changed")
    assert not report.passed and "FAIL: model.onnx changed" in "\n".join(report.summary_lines())
    failing = ParityReport("onnx", "fp32", [Comparison.of("a", bad, strict)])
    assert not failing.passed and failing.to_dict()["comparisons"][0]["passed"] is False
