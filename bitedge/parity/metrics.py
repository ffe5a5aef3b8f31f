"""The parity gate: does an artifact still classify like the float reference, within its budget?

Metrics (reference logits ``r`` and artifact logits ``a``, both (N, K)):
top-1 agreement (same argmax), top-5 agreement (mean overlap of the two top-5 sets), max and mean
``|a - r|``, cosine similarity per sample (mean and min), SNR in dB (``10 log10(sum r^2 / sum (a - r)^2)``),
and, with labels, both accuracies and the drop between them. Non-finite artifact outputs always fail.

Budgets are DESIGN.md's starting points; a change needs a measurement that justifies it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from bitedge.errors import BadInputError
from bitedge.precisions import Precision

# What the gate runs: an artifact in its runtime (or a torch model), pixels (N, 3, H, W) -> logits (N, K).
Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Budget:
    """Limits one comparison must meet. ``None`` means the metric is reported but not gated."""

    min_top1_agreement: float
    max_abs_diff_rel: float | None = None  # max |Δlogit| <= this * max(1, max |reference logit|)
    min_cosine: float | None = None  # on the mean per-sample cosine
    max_accuracy_drop: float | None = None  # percentage points, when labels exist


BUDGETS: dict[Precision, Budget] = {
    Precision.FP32: Budget(min_top1_agreement=1.0, max_abs_diff_rel=1e-3),
    Precision.FP16: Budget(min_top1_agreement=0.995, min_cosine=0.9999),
    Precision.INT8: Budget(min_top1_agreement=0.99, max_accuracy_drop=1.0),
    # weight-only int8 (with fp16 compute): no DESIGN.md starting point; held to int8's budget
    Precision.W8: Budget(min_top1_agreement=0.99, max_accuracy_drop=1.0),
}
INT8_VS_SIMULATED = Budget(min_top1_agreement=0.995, min_cosine=0.999)


@dataclass(frozen=True)
class BudgetOverride:
    """Limits a user sets (``--min-top1-agreement``, ``--min-cosine``, ``--max-accuracy-drop``) over a
    precision's default budget; ``None`` keeps the default. Checked when made."""

    min_top1_agreement: float | None = None  # a fraction, 0..1
    min_cosine: float | None = None  # -1..1
    max_accuracy_drop: float | None = None  # percentage points, 0..100

    def __post_init__(self) -> None:
        bounds = {"min_top1_agreement": (0.0, 1.0, "a fraction: 0.995 is 99.5 %"),
                  "min_cosine": (-1.0, 1.0, "a cosine similarity"),
                  "max_accuracy_drop": (0.0, 100.0, "percentage points")}  # fmt: skip
        for name, (low, high, what) in bounds.items():
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                flag = "--" + name.replace("_", "-")
                raise BadInputError(f"{flag} {value}: expected {low:g}..{high:g} ({what})")

    def apply(self, budget: Budget) -> Budget:
        """``budget`` with the limits this override sets."""
        given = {k: v for k, v in asdict(self).items() if v is not None}
        return replace(budget, **given)


@dataclass(frozen=True)
class Metrics:
    samples: int
    top1_agreement: float
    top5_agreement: float
    max_abs_diff: float
    mean_abs_diff: float
    reference_max_abs: float
    cosine_mean: float
    cosine_min: float
    snr_db: float
    finite: bool
    reference_accuracy: float | None = None  # percent
    artifact_accuracy: float | None = None  # percent

    @property
    def accuracy_drop(self) -> float | None:
        if self.reference_accuracy is None or self.artifact_accuracy is None:
            return None
        return self.reference_accuracy - self.artifact_accuracy


@dataclass(frozen=True)
class PerImage:
    """One comparison's per-image numbers, from which `Metrics` follow: computed a batch at a time and joined
    by concatenation (shards too), so a comparison never needs all of both models' logits at once."""

    reference_top1: np.ndarray  # (N,) int64
    other_top1: np.ndarray  # (N,) int64
    top5_overlap: np.ndarray  # (N,) fraction of the two top-5 sets shared
    max_abs_diff: np.ndarray  # (N,) max |a - r| over the classes
    mean_abs_diff: np.ndarray  # (N,) mean |a - r|
    reference_max_abs: np.ndarray  # (N,) max |r|
    cosine: np.ndarray  # (N,)
    signal: np.ndarray  # (N,) sum r^2
    noise: np.ndarray  # (N,) sum (a - r)^2
    finite: np.ndarray  # (N,) bool: every artifact logit finite

    @classmethod
    def of(cls, reference: np.ndarray, other: np.ndarray) -> PerImage:
        """The numbers of ``other`` logits against ``reference`` logits, both (n, K), row by row."""
        if reference.shape != other.shape or reference.ndim != 2:
            raise ValueError(f"logit shapes differ: {reference.shape} vs {other.shape}")
        ref, out = reference.astype(np.float64), other.astype(np.float64)
        k = min(5, ref.shape[1])
        top_ref, top_out = np.argsort(-ref, axis=1)[:, :k], np.argsort(-out, axis=1)[:, :k]
        overlap = np.asarray([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_out, strict=True)], np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # a non-finite row fails the comparison as a whole
            diff = np.abs(out - ref)
            norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
            cosine = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
            return cls(top_ref[:, 0].astype(np.int64), top_out[:, 0].astype(np.int64), overlap, diff.max(axis=1),
                       diff.mean(axis=1), np.abs(ref).max(axis=1), cosine, (ref**2).sum(axis=1),
                       (diff**2).sum(axis=1), np.asarray(np.isfinite(out).all(axis=1)))  # fmt: skip

    @classmethod
    def join(cls, parts: list[PerImage]) -> PerImage:
        """``parts`` (consecutive images) as one."""
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def __len__(self) -> int:
        return len(self.reference_top1)

    def metrics(self, labels: np.ndarray | None = None) -> Metrics:
        """The comparison's metrics; with ``labels`` (N,), both accuracies too."""
        if len(self) == 0:
            raise ValueError("no images to compare")
        finite = bool(self.finite.all())
        noise = float(self.noise.sum()) if finite else math.inf
        if not finite:
            snr = -math.inf
        else:
            snr = math.inf if noise == 0 else 10 * math.log10(max(float(self.signal.sum()), 1e-300) / noise)
        accuracy: tuple[float | None, float | None] = (None, None)
        if labels is not None:
            accuracy = (
                float((self.reference_top1 == labels).mean() * 100),
                float((self.other_top1 == labels).mean() * 100),
            )
        return Metrics(
            samples=len(self),
            top1_agreement=float((self.reference_top1 == self.other_top1).mean()),
            top5_agreement=float(self.top5_overlap.mean()),
            max_abs_diff=float(self.max_abs_diff.max()) if finite else math.inf,
            mean_abs_diff=float(self.mean_abs_diff.mean()) if finite else math.inf,
            reference_max_abs=float(self.reference_max_abs.max()),
            cosine_mean=float(self.cosine.mean()) if finite else 0.0,
            cosine_min=float(self.cosine.min()) if finite else 0.0,
            snr_db=snr,
            finite=finite,
            reference_accuracy=accuracy[0],
            artifact_accuracy=accuracy[1],
        )


def compare(reference: np.ndarray, artifact: np.ndarray, labels: np.ndarray | None = None) -> Metrics:
    """Metrics of ``artifact`` logits against ``reference`` logits, both (N, K), in memory."""
    if reference.shape != artifact.shape or reference.ndim != 2 or len(reference) == 0:
        raise ValueError(f"logit shapes differ or are empty: {reference.shape} vs {artifact.shape}")
    return PerImage.of(reference, artifact).metrics(labels)


def violations(metrics: Metrics, budget: Budget) -> list[str]:
    """Every way ``metrics`` break ``budget``, as sentences; empty when within budget."""
    out: list[str] = []
    if not metrics.finite:
        out.append("the artifact produced NaN or inf logits")
        return out
    if metrics.top1_agreement < budget.min_top1_agreement:
        out.append(f"top-1 agreement {metrics.top1_agreement:.2%} < {budget.min_top1_agreement:.2%}")
    if budget.max_abs_diff_rel is not None:
        limit = budget.max_abs_diff_rel * max(1.0, metrics.reference_max_abs)
        if metrics.max_abs_diff > limit:
            out.append(f"max |Δlogit| {metrics.max_abs_diff:.3g} > {limit:.3g}")
    if budget.min_cosine is not None and metrics.cosine_mean < budget.min_cosine:
        out.append(f"cosine {metrics.cosine_mean:.6f} < {budget.min_cosine}")
    drop = metrics.accuracy_drop
    if budget.max_accuracy_drop is not None and drop is not None and drop > budget.max_accuracy_drop:
        out.append(f"accuracy drop {drop:.2f} points > {budget.max_accuracy_drop}")
    return out


@dataclass(frozen=True)
class Comparison:
    """One comparison, e.g. "artifact vs float reference"; informational ones (``gated=False``) never fail."""

    name: str
    budget: Budget
    metrics: Metrics
    failures: list[str]
    gated: bool = True

    @property
    def passed(self) -> bool:
        return not self.failures

    @classmethod
    def of(cls, name: str, metrics: Metrics, budget: Budget, *, gated: bool = True) -> Comparison:
        """Compare ``metrics`` with ``budget``; a non-gated comparison records no failures."""
        return cls(name, budget, metrics, violations(metrics, budget) if gated else [], gated)


@dataclass
class ParityReport:
    """All comparisons for one artifact, plus notes (skipped images, precision hints)."""

    target: str
    precision: str
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failures besides the comparisons (e.g. changed files)
    # per-image outputs for the HTML report (reference/artifact logits, top-1s, labels, files); not in JSON
    outputs: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.passed for c in self.comparisons)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "precision": self.precision,
            "passed": self.passed,
            "comparisons": [
                {
                    **asdict(c),
                    "passed": c.passed,
                    "metrics": {**asdict(c.metrics), "accuracy_drop": c.metrics.accuracy_drop},
                }
                for c in self.comparisons
            ],
            "notes": list(self.notes),
            "problems": list(self.problems),
        }

    def to_markdown(self) -> str:
        lines = [f"# Parity: {self.target} {self.precision} — {'PASS' if self.passed else 'FAIL'}", ""]
        lines += [f"**FAIL: {problem}**" for problem in self.problems] + ([""] if self.problems else [])
        for c in self.comparisons:
            m = c.metrics
            verdict = ("pass" if c.passed else "FAIL") if c.gated else "information, not gated"
            lines += [f"## {c.name}: {verdict} ({m.samples} images)", ""]
            lines += ["| metric | value | budget |", "|---|---|---|"]
            for metric, value, limit in _rows(c):
                lines.append(f"| {metric} | {value} | {limit} |")
            lines += [""] + [f"- over budget: {f}" for f in c.failures] + ([""] if c.failures else [])
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def summary_lines(self) -> list[str]:
        """The one-screen summary the CLI prints."""
        lines = [f"parity {self.target} {self.precision}: {'PASS' if self.passed else 'FAIL'}"]
        lines += [f"  FAIL: {problem}" for problem in self.problems]
        for c in self.comparisons:
            verdict = ("pass" if c.passed else "FAIL") if c.gated else "information, not gated"
            lines.append(f"  {c.name} ({c.metrics.samples} images): {verdict}")
            lines += [f"    {metric:<22} {value:<14} {limit}" for metric, value, limit in _rows(c)]
            lines += [f"    over budget: {f}" for f in c.failures]
        lines += [f"  note: {n}" for n in self.notes]
        return lines


def _rows(c: Comparison) -> list[tuple[str, str, str]]:
    m, b = c.metrics, (c.budget if c.gated else Budget(0.0))
    abs_limit = f"<= {b.max_abs_diff_rel * max(1.0, m.reference_max_abs):.3g}" if b.max_abs_diff_rel else "-"
    rows = [
        ("top-1 agreement", f"{m.top1_agreement:.2%}", f">= {b.min_top1_agreement:.2%}" if c.gated else "-"),
        ("top-5 agreement", f"{m.top5_agreement:.2%}", "-"),
        ("max abs logit diff", f"{m.max_abs_diff:.3g}", abs_limit),
        ("mean abs logit diff", f"{m.mean_abs_diff:.3g}", "-"),
        (
            "cosine (mean / min)",
            f"{m.cosine_mean:.6f} / {m.cosine_min:.6f}",
            f">= {b.min_cosine}" if b.min_cosine else "-",
        ),
        ("SNR", f"{m.snr_db:.1f} dB", "-"),
    ]
    if m.reference_accuracy is not None and m.artifact_accuracy is not None:
        limit = f"drop <= {b.max_accuracy_drop}" if b.max_accuracy_drop is not None else "-"
        rows.append(("accuracy (ref / art.)", f"{m.reference_accuracy:.2f}% / {m.artifact_accuracy:.2f}%", limit))
    return rows
