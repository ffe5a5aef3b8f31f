"""`bitedge bench`: time artifacts (and float models) under the one latency protocol, side by side.

A target is an artifact directory (timed in its runtime, configured as a deployment would be: e.g.
OpenVINO with the LATENCY hint and the CPU's default precision, recorded) or a model (the float PyTorch
reference, eager). Inputs are real images (the demo's held-out split) preprocessed the way each target
expects. Targets are timed interleaved; ratios are medians of per-round pairs against the first target.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitedge import __version__
from bitedge.bench import LatencyStats, Protocol, machine_info, measure_interleaved, paired_ratio, peak_rss_mb
from bitedge.errors import BadInputError


@dataclass
class BenchTarget:
    name: str
    make_call: Callable[[np.ndarray], Callable[[], object]]  # batch of inputs -> zero-argument timed call
    make_inputs: Callable[[int], np.ndarray]  # batch size -> real preprocessed images
    info: dict[str, Any] = field(default_factory=dict)


def open_target(spec: str, *, threads: int | None) -> BenchTarget:
    """An artifact directory (with bitedge.json) or anything ``load_model`` reads."""
    from bitedge.artifact import MANIFEST_NAME, Manifest
    from bitedge.image_processor import BitImageProcessor

    path = Path(spec)
    if (path / MANIFEST_NAME).is_file():
        from bitedge.converters import get_converter
        from bitedge.targets import Target

        manifest = Manifest.read(path)
        converter = get_converter(Target(manifest.target))
        converter.check_runtime()
        runner, runtime = converter.bench_runner(path, manifest, threads=threads)
        processor = BitImageProcessor.from_dict(manifest.preprocessing)
        raw = bool(manifest.input.get("raw_pixels"))
        fixed = manifest.input["shape"][0] if isinstance(manifest.input["shape"][0], int) else None
        info = {"kind": "artifact", "target": manifest.target, "precision": manifest.precision, **runtime}

        def call(pixels: np.ndarray) -> Callable[[], object]:
            if fixed is not None and len(pixels) != fixed:
                raise BadInputError(f"{spec}: the artifact has a fixed batch of {fixed}; bench it with --batch {fixed}")
            return lambda: runner(pixels)

        return BenchTarget(str(path), call, lambda n: _images(processor, n, raw=raw), info)
    import torch

    from bitedge.loading import load_model
    from bitedge.pipeline import resolve_processor

    model = load_model(spec)
    processor = resolve_processor(model.image_processor, None)
    if threads:
        torch.set_num_threads(threads)

    def eager(pixels: np.ndarray) -> Callable[[], object]:
        tensor = torch.from_numpy(pixels)

        def run() -> object:
            with torch.no_grad():
                return model(tensor).logits

        return run

    info = {"kind": "float model", "runtime": f"torch {torch.__version__} eager", "precision": "fp32"}
    return BenchTarget(spec, eager, lambda n: _images(processor, n, raw=False), info)


def _images(processor: Any, count: int, *, raw: bool) -> np.ndarray:
    """``count`` real held-out images, preprocessed (raw 0..255 for raw-pixel artifacts)."""
    from dataclasses import replace

    from bitedge.image_processor import to_rgb_array
    from bitedge.loading import DEMO_EVAL

    files = sorted(DEMO_EVAL.rglob("*.png"))
    use = replace(processor, do_rescale=False, do_normalize=False) if raw else processor
    return np.stack([use.preprocess_one(to_rgb_array(files[i % len(files)])).astype(np.float32) for i in range(count)])


@dataclass
class BenchResult:
    batch: int
    threads: int | None
    stats: dict[str, LatencyStats]
    ratios: dict[str, float]  # paired median ratio against the first target
    info: dict[str, dict[str, Any]]


def bench(specs: list[str], *, batches: list[int], threads: int | None, protocol: Protocol) -> list[BenchResult]:
    targets = [open_target(spec, threads=threads) for spec in specs]
    results = []
    for batch in batches:
        calls = {t.name: t.make_call(t.make_inputs(batch)) for t in targets}
        stats = measure_interleaved(calls, batch=batch, threads=threads, protocol=protocol)
        first = stats[targets[0].name]
        ratios = {name: paired_ratio(s, first) for name, s in stats.items()}
        results.append(BenchResult(batch, threads, stats, ratios, {t.name: t.info for t in targets}))
    return results


def table(results: list[BenchResult]) -> str:
    rows = [("target", "batch", "median ms", "p90 ms", "p99 ms", "mean ms", "min ms", "img/s", "× first")]
    for r in results:
        for name, s in r.stats.items():
            rows.append(
                (name, str(r.batch), f"{s.median_ms:.2f}", f"{s.p90_ms:.2f}", f"{s.p99_ms:.2f}", f"{s.mean_ms:.2f}",
                 f"{s.min_ms:.2f}", f"{s.throughput:.1f}", f"{r.ratios[name]:.3f}")
            )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def write(results: list[BenchResult], out: Path, protocol: Protocol) -> None:
    """JSON (every sample, machine, versions, runtime settings), a Markdown table and a PNG plot."""
    out.mkdir(parents=True, exist_ok=True)
    data = {
        "bitedge": __version__,
        "protocol": protocol.__dict__,
        "machine": machine_info(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "targets": results[0].info if results else {},
        "runs": [
            {"batch": r.batch, "threads": r.threads, "ratios_vs_first": r.ratios,
             "stats": {n: s.to_dict() for n, s in r.stats.items()}}
            for r in results
        ],
    }  # fmt: skip
    (out / "bench.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "bench.md").write_text(f"# bitedge bench\n\n```\n{table(results)}\n```\n\nMachine: {data['machine']}\n")
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
    fig.savefig(out / "bench.png", dpi=110)
