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

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch

ARTIFACT_VS_FLOAT = "artifact vs float"
ARTIFACT_VS_SIMULATED = "artifact vs simulated"
SIMULATED_VS_FLOAT = "simulated vs float"
Array = np.ndarray | torch.Tensor  # a layer's outputs: the runtime's (numpy) or a torch model's
LIMITS_DB = {"fp32": 60.0, "fp16": 37.0, "int8": 27.0, "w8": 27.0, "quantization": 15.0}


@dataclass
class PairStats:
    """One comparison at one layer, accumulated over batches."""

    signal: float = 0.0  # sum of the reference's squares
    noise: float = 0.0  # sum of squared differences
    cosines: list[float] = field(default_factory=list)  # one per image
    max_abs: float = 0.0
    non_finite: int = 0  # elements of x that are inf or NaN

    def add(self, x: Array, reference: Array) -> None:
        """Fold in a batch: ``x`` and ``reference`` (N, ...) of one shape. In torch: its reductions use every core
        and take any memory layout (a conv's output may be channels-last), so nothing is copied to flatten it;
        each image's sums are kept in float64, and the cosine comes from them, since
        x·r = (|x|² + |r|² - |x - r|²) / 2."""
        x_t, r_t = _tensor(x), _tensor(reference)
        dims = tuple(range(1, x_t.ndim))
        xx = torch.linalg.vector_norm(x_t, dim=dims).double() ** 2
        if not bool(torch.isfinite(xx).all()):  # rare: only then look at every element
            finite = torch.isfinite(x_t)
            self.non_finite += int((~finite).sum())
            x_t = torch.where(finite, x_t, torch.zeros((), dtype=x_t.dtype))
            xx = torch.linalg.vector_norm(x_t, dim=dims).double() ** 2
        diff = x_t - r_t
        rr, dd = (torch.linalg.vector_norm(t, dim=dims).double() ** 2 for t in (r_t, diff))
        self.signal += float(rr.sum())
        self.noise += float(dd.sum())
        self.max_abs = max(self.max_abs, float(diff.abs().amax()) if diff.numel() else 0.0)
        norms = torch.sqrt(xx * rr)
        cosine = torch.where(norms > 0, (xx + rr - dd) / 2 / norms.clamp_min(1e-300), torch.ones_like(norms))
        self.cosines += torch.where(dd == 0, torch.ones_like(cosine), cosine).tolist()

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

    def add(self, name: str, x: Array, reference: Array) -> None:
        x_t, r_t = _tensor(x), _tensor(reference)
        if x_t.numel() != r_t.numel():
            self.problem = f"{name}: outputs of {tuple(x_t.shape[1:])} and {tuple(r_t.shape[1:])} elements differ"
            return
        self.pairs.setdefault(name, PairStats()).add(x_t.reshape(r_t.shape), r_t)


@dataclass(frozen=True)
class FallOff:
    """Where a comparison first drops below its limit, and where it drops most from one layer to the next."""

    comparison: str
    layer: str | None  # None: it never does
    limit_db: float
    snr_db: float | None  # at that layer
    previous: str | None  # the last layer above the limit before it (where the difference is not yet)
    steepest: str | None = None  # the layer of the largest drop from the layer before it
    steepest_drop_db: float = 0.0  # that drop (SNR above CLIP_DB counted as CLIP_DB: exact is not "more")


CLIP_DB = 60.0  # above this, two layers agree to float32's noise: a drop from 130 to 90 dB is no drop
CLIFF_DB = 10.0  # a drop this large at one layer stands out from the few dB each layer adds to rounding


def fall_off(layers: list[LayerStats], comparison: str, limit_db: float) -> FallOff:
    """The first layer (graph order) where ``comparison``'s SNR is below ``limit_db``, and the steepest drop."""
    snrs = [(layer.name, layer.pairs[comparison].snr_db) for layer in layers if comparison in layer.pairs]
    steepest, drop = None, 0.0
    for (_, before), (name, after) in itertools.pairwise(snrs):
        here = min(CLIP_DB, before) - min(CLIP_DB, after)
        if here > drop:
            steepest, drop = name, here
    previous = None
    for name, snr in snrs:
        if snr < limit_db:
            return FallOff(comparison, name, limit_db, _json_number(snr), previous, steepest, drop)
        previous = name
    return FallOff(comparison, None, limit_db, None, previous, steepest, drop)


def _tensor(value: Array) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().float()
    return torch.from_numpy(np.asarray(value, np.float32))


def _json_number(value: float) -> float | None:
    """inf and NaN are not JSON: None for NaN, ±1e999 is not allowed either, so clip to ±999 dB."""
    if math.isnan(value):
        return None
    return max(-999.0, min(999.0, value))
