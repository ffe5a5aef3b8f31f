"""`bitedge bench`: time artifacts (and float models) under the one latency protocol, side by side.

A target is an artifact directory (timed in its runtime, configured as a deployment would be: e.g.
OpenVINO with the LATENCY hint) or a model (the float PyTorch reference, eager). Each row names the
precision that actually runs: an artifact a runtime may run in several (OpenVINO's CPU plugin: f32, and bf16
where the CPU has it, its default there) gets one row per precision, never a silent default. Inputs are real
images (the demo's held-out split) preprocessed the way each target expects. Targets are timed in interleaved
rounds (``bench.measure_interleaved``); ratios are medians of per-round ratios against the first target.
Each row shows its achieved GFLOP/s (2 x the model's MACs per image / median) and that as a share of the
machine's peak for its number type, measured in the same run (``bench.peak``), so an implausible figure
stands out. Each target's memory is the peak RSS its loading and first call add.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitedge import __version__
from bitedge.artifacts.integrity import STRICT, Allowances
from bitedge.artifacts.ownership import BENCH_FILES, BENCH_TITLE, GENERATOR, check_own_file
from bitedge.bench.peak import Peak, measure_peak
from bitedge.bench.protocol import LatencyStats, Protocol, machine_info, measure_interleaved, paired_ratio
from bitedge.errors import BadInputError, MissingRuntimeError
from bitedge.fileio import write_atomic, write_json_atomic
from bitedge.memory import current_rss_mb, keep_freed_memory, peak_rss_mb, peak_rss_since_reset_mb, reset_peak_rss
from bitedge.predict import Classifier, open_classifier


@dataclass
class BenchTarget:
    name: str
    classifier: Classifier
    rss_added_mb: float | None = None  # peak memory that loading it and one call added to the process

    @property
    def gflop_per_image(self) -> float | None:
        """2 x the multiply-accumulates of the convolutions and the head, per image at the artifact's size."""
        config = self.classifier.model_config
        if config is None:
            return None
        from bitedge.model.config import BitConfig
        from bitedge.model.summary import count_macs

        return 2 * count_macs(BitConfig.from_dict(config), self.classifier.processor.input_size) / 1e9

    def call(self, pixels: np.ndarray) -> Callable[[], object]:
        """The zero-argument call that is timed: one batch through the target."""
        fixed = self.classifier.fixed_batch
        if fixed is not None and len(pixels) != fixed:
            raise BadInputError(
                f"{self.name}: the artifact has a fixed batch of {fixed}; bench it with --batch {fixed}"
            )
        run = self.classifier.run
        return lambda: run(pixels)

    def inputs(self, count: int) -> np.ndarray:
        """``count`` real held-out images (the demo's eval split), preprocessed as this target takes them."""
        from bitedge.model.demo import DEMO_EVAL

        files = sorted(DEMO_EVAL.rglob("*.png"))
        return np.stack([self.classifier.preprocess(files[i % len(files)]) for i in range(count)])


def open_target(
    spec: str, *, threads: int | None, allow: Allowances = STRICT, runs: str | None = None, name: str | None = None
) -> BenchTarget:
    """An artifact directory (configured as deployed, in precision ``runs``) or a model (the float reference,
    eager), with the memory it costs: the process's peak RSS while it loads and runs once, over the RSS before
    (targets are opened one after another, so each is charged only for itself). Unknown where /proc is
    missing."""
    before, resettable = current_rss_mb(), reset_peak_rss()
    classifier = open_classifier(spec, threads=threads, for_bench=True, runs=runs, allow=allow)
    target = BenchTarget(name or spec, classifier)
    target.call(target.inputs(target.classifier.fixed_batch or 1))()
    if before:
        target.rss_added_mb = (peak_rss_since_reset_mb() if resettable else current_rss_mb()) - before
    return target


def precisions_run(spec: str) -> list[str | None]:
    """The precisions an artifact runs in here (one bench row each); [None] for a model."""
    from bitedge.artifacts.manifest import Manifest
    from bitedge.artifacts.ownership import MANIFEST_NAME
    from bitedge.converters import get_converter

    if not (Path(spec) / MANIFEST_NAME).is_file():
        return [None]
    manifest = Manifest.read(Path(spec))
    converter = get_converter(manifest.target)
    converter.check_runtime()  # before asking the runtime what it runs: a missing one is an install hint
    return list(converter.bench_precisions(manifest))


@dataclass
class BenchResult:
    batch: int
    threads: int | None
    stats: dict[str, LatencyStats]
    ratios: dict[str, float]  # paired median ratio against the first target
    info: dict[str, dict[str, Any]]
    peak: Peak  # the machine's peak, measured in the same run
    gflops: dict[str, float | None]  # achieved GFLOP/s per target at its median
    keeps_freed_memory: bool = False  # glibc malloc told to keep freed blocks (bench.keep_freed_memory)

    def peak_share(self, name: str) -> float | None:
        achieved = self.gflops[name]
        return None if achieved is None else self.peak.share(achieved, int8="int8" in self.info[name]["runs"])


def bench(
    specs: list[str], *, batches: list[int], threads: int | None, protocol: Protocol, allow: Allowances = STRICT,
    untimed: list[str] | None = None,
) -> list[BenchResult]:  # fmt: skip
    """Time every target (see the module docstring). With ``untimed`` (a list), a target this machine cannot time
    (its runtime missing here: Core ML off macOS) is left out and said there, instead of stopping the rest."""
    # torch (~190 MiB) is loaded by every target's loader: import it before measuring, or the first target
    # would be charged for what all of them share
    import torch  # noqa: F401

    kept = keep_freed_memory()  # eager's per-call temporaries cost page faults otherwise, by process history
    targets = []
    for spec in specs:
        try:
            variants = precisions_run(spec)
            for runs in variants:
                name = spec if len(variants) == 1 else f"{spec} ({runs})"
                targets.append(open_target(spec, threads=threads, allow=allow, runs=runs, name=name))
        except MissingRuntimeError as exc:
            if untimed is None:
                raise
            untimed.append(f"{spec}: {exc}")
    if not targets:
        return []
    peak = measure_peak(threads)
    work = {t.name: t.gflop_per_image for t in targets}
    results = []
    for batch in batches:
        calls = {t.name: t.call(t.inputs(batch)) for t in targets}
        stats = measure_interleaved(calls, batch=batch, threads=threads, protocol=protocol)
        first = stats[targets[0].name]
        ratios = {name: paired_ratio(s, first) for name, s in stats.items()}
        info = {t.name: {**t.classifier.info, "rss_added_mb": t.rss_added_mb} for t in targets}
        gflops = {n: _rate(work[n], batch, s) for n, s in stats.items()}
        results.append(BenchResult(batch, threads, stats, ratios, info, peak, gflops, kept))
    return results


def _rate(gflop_per_image: float | None, batch: int, stats: LatencyStats) -> float | None:
    """Achieved GFLOP/s at the median latency (None when the model's work is unknown)."""
    return None if gflop_per_image is None else gflop_per_image * batch / (stats.median_ms / 1e3)


def table(results: list[BenchResult]) -> str:
    rows = [("target", "runs", "batch", "median ms", "p90 ms", "p99 ms", "mean ms", "min ms", "img/s", "× first",
             "GFLOP/s", "% peak", "+RSS MiB")]  # fmt: skip
    for r in results:
        for name, s in r.stats.items():
            memory, achieved, share = r.info[name].get("rss_added_mb"), r.gflops[name], r.peak_share(name)
            rows.append(
                (name, str(r.info[name]["runs"]), str(r.batch), f"{s.median_ms:.2f}", f"{s.p90_ms:.2f}",
                 f"{s.p99_ms:.2f}", f"{s.mean_ms:.2f}", f"{s.min_ms:.2f}", f"{s.throughput:.1f}",
                 f"{r.ratios[name]:.3f}", "-" if achieved is None else f"{achieved:.1f}",
                 "-" if share is None else f"{100 * share:.0f}%", "-" if memory is None else f"{memory:.0f}")
            )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if results:
        peak = results[0].peak
        int8 = f", int8 {peak.int8_gops:.0f} GOP/s ({peak.int8_by})" if peak.int8_gops else ""
        lines.append(f"peak of this machine, measured now: fp32 {peak.fp32_gflops:.0f} GFLOP/s ({peak.fp32_by}){int8}")
    notes = {n for r in results for info in r.info.values() for n in info.get("warnings", []) + info.get("notes", [])}
    return "\n".join(lines + [f"note: {w}" for w in sorted(notes)])


def check_out(out: Path) -> None:
    """Fail (before timing anything) unless ``out`` can take bench results without losing a file of the user's."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a directory; give --out a directory for the bench results")
    for name in BENCH_FILES:
        check_own_file(out / name)  # bitedge's own earlier results are replaced; anything else is refused


def write(results: list[BenchResult], out: Path, protocol: Protocol) -> None:
    """JSON (every sample, machine, versions, runtime settings), a Markdown table and a PNG plot."""
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "bitedge": __version__,
        "protocol": protocol.__dict__,
        "machine": machine_info(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "malloc_keeps_freed_memory": bool(results) and results[0].keeps_freed_memory,
        "targets": results[0].info if results else {},
        "peak": results[0].peak.__dict__ if results else None,
        "runs": [
            {"batch": r.batch, "threads": r.threads, "ratios_vs_first": r.ratios, "gflops": r.gflops,
             "peak_share": {n: r.peak_share(n) for n in r.stats},
             "stats": {n: s.to_dict() for n, s in r.stats.items()}}
            for r in results
        ],
    }  # fmt: skip
    write_json_atomic(out / "bench.json", data)
    write_atomic(out / "bench.md", f"# {BENCH_TITLE}\n\n```\n{table(results)}\n```\n\nMachine: {data['machine']}\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if len(results) > 1 else 1, figsize=(11 if len(results) > 1 else 7, 3.5))
    axes = np.atleast_1d(axes)
    names = list(results[0].stats)
    axes[0].boxplot([results[0].stats[n].samples_ms for n in names], orientation="horizontal", showfliers=False)
    axes[0].set_yticks(range(1, len(names) + 1), [Path(n).name or n for n in names], fontsize=7)
    axes[0].set_xlabel(f"latency ms (batch {results[0].batch})")
    if len(results) > 1:
        for n in names:
            axes[1].plot(
                [r.batch for r in results], [r.stats[n].median_ms for r in results], marker="o", label=Path(n).name
            )
        axes[1].set_xlabel("batch")
        axes[1].set_ylabel("median latency ms")
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110, metadata={"Software": f"{GENERATOR} {__version__}"})
    plt.close(fig)
    write_atomic(out / "bench.png", png.getvalue())
