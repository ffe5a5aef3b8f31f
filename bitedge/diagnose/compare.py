"""Per-layer comparisons, accumulated a batch at a time, and where each one falls off.

For a layer and a pair (the compared outputs ``x`` and their reference ``r``): SNR in dB over every element
seen (10 log10 of sum r² over sum (x - r)²), the mean over images of the per-image cosine, and the largest
|x - r|. A comparison *falls off* at the first layer, in graph order, whose SNR is below the comparison's
limit: then everything after it inherits the difference, and that layer is the one to look at.

The limits are the parity budgets carried to activations: for small noise, cosine ≈ 1 - (noise/signal)/2,
so a cosine budget c is an SNR of -10 log10(2 (1 - c)). Conversion fidelity (artifact vs simulated, int8):
the gate's 0.999 -> 27 dB; fp16: 0.9999 -> 37 dB; fp32 is gated at 1e-3 of the logits' range, set here at
60 dB (float32 reorderings stay above 100 dB). What int8 itself costs (simulated vs float) has no activation
budget: 15 dB (cosine ≈ 0.984) marks where a layer's quantization error passes a sixteenth of the signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ARTIFACT_VS_FLOAT = "artifact vs float"
ARTIFACT_VS_SIMULATED = "artifact vs simulated"
SIMULATED_VS_FLOAT = "simulated vs float"
LIMITS_DB = {"fp32": 60.0, "fp16": 37.0, "int8": 27.0, "w8": 27.0, "quantization": 15.0}


@dataclass
class PairStats:
    """One comparison at one layer, accumulated over batches."""

    signal: float = 0.0  # sum of the reference's squares
    noise: float = 0.0  # sum of squared differences
    cosines: list[float] = field(default_factory=list)  # one per image
    max_abs: float = 0.0
    non_finite: int = 0  # elements of x that are inf or NaN

    def add(self, x: np.ndarray, reference: np.ndarray) -> None:
        """Fold in a batch: ``x`` and ``reference`` (N, ...) of one size per image (float32: products summed
        per image by BLAS, each image's sums kept in float64)."""
        x2 = np.ascontiguousarray(x, np.float32).reshape(len(x), -1)
        r2 = np.ascontiguousarray(reference, np.float32).reshape(len(reference), -1)
        if not np.isfinite(x2.sum()):  # one cheap pass; the count only when something is off
            bad = ~np.isfinite(x2)
            self.non_finite += int(bad.sum())
            x2 = np.where(bad, np.float32(0), x2)
        diff = x2 - r2
        rr, dd, xx, xr = _dots(r2, r2), _dots(diff, diff), _dots(x2, x2), _dots(x2, r2)
        self.signal += float(rr.sum(dtype=np.float64))
        self.noise += float(dd.sum(dtype=np.float64))
        self.max_abs = max(self.max_abs, float(np.abs(diff).max(initial=0.0)))
        norms = np.sqrt(xx.astype(np.float64) * rr.astype(np.float64))
        same = dd == 0  # identical images: cosine 1 even when both are all zeros
        self.cosines += np.where(same, 1.0, xr / np.where(norms > 0, norms, 1.0)).tolist()

    @property
    def snr_db(self) -> float:
        if self.non_finite:
            return -math.inf
        if self.noise == 0:
            return math.inf
        if self.signal == 0:
            return -math.inf
        return 10 * math.log10(self.signal / self.noise)

    def to_dict(self) -> dict[str, float | int | None]:
        cosine = float(np.mean(self.cosines)) if self.cosines else None
        return {"snr_db": _json_number(self.snr_db), "cosine": cosine, "max_abs_diff": self.max_abs,
                "non_finite": self.non_finite}  # fmt: skip


@dataclass
class LayerStats:
    """One tapped layer: its kind, shape, and each comparison made at it."""

    name: str
    kind: str
    shape: list[int] = field(default_factory=list)  # one image's output shape, from the float model
    pairs: dict[str, PairStats] = field(default_factory=dict)
    problem: str | None = None  # why this layer could not be compared (a shape that differs)

    def add(self, name: str, x: np.ndarray, reference: np.ndarray) -> None:
        if x.size != reference.size:
            self.problem = f"{name}: outputs of {x.shape[1:]} and {reference.shape[1:]} elements differ"
            return
        self.pairs.setdefault(name, PairStats()).add(x.reshape(reference.shape), reference)


@dataclass(frozen=True)
class FallOff:
    """Where a comparison first drops below its limit."""

    comparison: str
    layer: str | None  # None: it never does
    limit_db: float
    snr_db: float | None  # at that layer
    previous: str | None  # the last layer above the limit before it (where the difference is not yet)


def fall_off(layers: list[LayerStats], comparison: str, limit_db: float) -> FallOff:
    """The first layer (graph order) where ``comparison``'s SNR is below ``limit_db``."""
    previous = None
    for layer in layers:
        stats = layer.pairs.get(comparison)
        if stats is None:
            continue
        if stats.snr_db < limit_db:
            return FallOff(comparison, layer.name, limit_db, _json_number(stats.snr_db), previous)
        previous = layer.name
    return FallOff(comparison, None, limit_db, None, previous)


def _dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two (N, D) arrays: (N,)."""
    out: np.ndarray = np.einsum("ij,ij->i", a, b, optimize=True)
    return out


def _json_number(value: float) -> float | None:
    """inf and NaN are not JSON: None for NaN, ±1e999 is not allowed either, so clip to ±999 dB."""
    if math.isnan(value):
        return None
    return max(-999.0, min(999.0, value))
