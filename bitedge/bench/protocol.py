"""The latency protocol (DESIGN.md), the same for every runtime.

Warm-up: at least 10 runs and 1 s per candidate. Then timed runs, *interleaved* across candidates
(A B A B ...) so that machine drift hits all of them alike, until every candidate has at least 50 runs and
3 s. Reported: median, p90, p99, mean, min (ms), throughput (images/s at the median) and the process's peak
RSS, with batch size and thread count explicit. Speed claims live in benchmarks/, never in unit tests.

Interleaving is by rounds: in each, every candidate first runs untimed for ``settle_seconds`` (20 ms, at
least once), then is timed call by call for as long again (at least one call). Runtimes keep their worker
threads spinning for a while after a call (PyTorch's OpenMP pool does), and on a 2-core machine those
threads took the cores from whichever candidate ran next; the untimed runs let them go idle while keeping
the candidate's own threads awake (a plain pause would not: after idling, waking a runtime's threads
dominated small models). Each sample is thus a steady-state, back-to-back latency, as for a candidate
timed alone, while rounds still spread machine drift over all. benchmarks/interleaving.py measures these
schemes side by side. Ratios between candidates are medians over rounds of per-round median ratios.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Protocol:
    warmup_runs: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 50
    min_seconds: float = 3.0
    settle_seconds: float = 0.02  # per round: this long untimed, then this long timed (0: one timed call)


@dataclass(frozen=True)
class LatencyStats:
    name: str
    batch: int
    threads: int | None
    runs: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput: float  # images per second at the median latency
    samples_ms: list[float]
    rounds: list[int]  # the interleaving round of each sample

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_interleaved(
    candidates: dict[str, Callable[[], object]],
    *,
    batch: int,
    threads: int | None,
    protocol: Protocol = Protocol(),
) -> dict[str, LatencyStats]:
    """Time each zero-argument callable under the protocol, interleaved; returns stats by name."""
    warm_up(candidates, protocol)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    rounds: dict[str, list[int]] = {name: [] for name in candidates}
    settle = protocol.settle_seconds if len(candidates) > 1 else 0.0
    round_index = 0
    while any(
        len(s) < protocol.min_runs or sum(s) < protocol.min_seconds * 1e3 for s in samples.values()
    ):  # fmt: skip
        for name, run in candidates.items():
            if settle:  # another candidate's threads may still spin: run this one untimed meanwhile
                _run_for(run, settle)
            timed_until = time.perf_counter() + settle
            while True:
                start = time.perf_counter()
                run()
                end = time.perf_counter()
                samples[name].append((end - start) * 1e3)
                rounds[name].append(round_index)
                if end >= timed_until:
                    break
        round_index += 1
    return {name: _stats(name, s, rounds[name], batch, threads) for name, s in samples.items()}


def _run_for(run: Callable[[], object], seconds: float, runs: int = 1) -> None:
    """Call ``run`` untimed until it has run ``runs`` times and ``seconds`` have passed."""
    start, count = time.perf_counter(), 0
    while count < runs or time.perf_counter() - start < seconds:
        run()
        count += 1


def warm_up(candidates: dict[str, Callable[[], object]], protocol: Protocol) -> None:
    """The protocol's warm-up: each candidate in turn, for its minimum runs and seconds."""
    for run in candidates.values():
        _run_for(run, protocol.warmup_seconds, protocol.warmup_runs)


def paired_ratio(numerator: LatencyStats, denominator: LatencyStats) -> float:
    """Median over rounds of ``numerator / denominator``, each the round's median: samples taken together."""

    def per_round(stats: LatencyStats) -> dict[int, float]:
        by_round: dict[int, list[float]] = {}
        for sample, index in zip(stats.samples_ms, stats.rounds, strict=True):
            by_round.setdefault(index, []).append(sample)
        return {index: float(np.median(values)) for index, values in by_round.items()}

    top, bottom = per_round(numerator), per_round(denominator)
    return float(np.median([top[r] / bottom[r] for r in top if r in bottom]))


def _stats(name: str, samples: list[float], rounds: list[int], batch: int, threads: int | None) -> LatencyStats:
    array = np.asarray(samples)
    median = float(np.median(array))
    return LatencyStats(
        name=name,
        batch=batch,
        threads=threads,
        runs=len(samples),
        median_ms=median,
        p90_ms=float(np.percentile(array, 90)),
        p99_ms=float(np.percentile(array, 99)),
        mean_ms=float(array.mean()),
        min_ms=float(array.min()),
        throughput=batch / (median / 1e3),
        samples_ms=list(samples),
        rounds=list(rounds),
    )


def machine_info() -> dict[str, Any]:
    """CPU model and the flags that change inference speed or precision, cores, memory, OS."""
    cpu, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name") and cpu in ("unknown", "", platform.processor()):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    interesting = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni"]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "flags": [f for f in interesting if f in flags],
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
