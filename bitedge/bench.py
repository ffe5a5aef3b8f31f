"""The latency protocol (DESIGN.md), the same for every runtime.

Warm-up: at least 10 runs and 1 s per candidate. Then timed runs, *interleaved* across candidates
(A B A B ...) so that machine drift hits all of them alike, until every candidate has at least 50 runs and
3 s. Reported: median, p90, p99, mean, min (ms), throughput (images/s at the median) and the process's peak
RSS, with batch size and thread count explicit. Speed claims live in benchmarks/, never in unit tests.
"""

from __future__ import annotations

import os
import platform
import resource
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
    for run in candidates.values():
        start, count = time.perf_counter(), 0
        while count < protocol.warmup_runs or time.perf_counter() - start < protocol.warmup_seconds:
            run()
            count += 1
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    while any(
        len(s) < protocol.min_runs or sum(s) < protocol.min_seconds * 1e3 for s in samples.values()
    ):  # fmt: skip
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: _stats(name, s, batch, threads) for name, s in samples.items()}


def paired_ratio(numerator: LatencyStats, denominator: LatencyStats) -> float:
    """Median over rounds of ``numerator / denominator`` for samples taken in the same interleaved round."""
    pairs = zip(numerator.samples_ms, denominator.samples_ms, strict=False)
    return float(np.median([a / b for a, b in pairs]))


def _stats(name: str, samples: list[float], batch: int, threads: int | None) -> LatencyStats:
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
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
