"""Why bitedge's latency protocol settles each candidate before timing it: four timing schemes side by side.

Interleaving candidates (A B A B ...) spreads machine drift over all of them, but on a 2-core machine one
runtime's still-spinning worker threads take the cores from the next. For the demo model and BiT-R50x1 at
224 (seeded weights), each with torch eager, bitedge ONNX fp32 and bitedge OpenVINO int8 opened exactly as
`bitedge bench` opens them, this times:

- alone: each candidate by itself, back to back (no neighbour to disturb it; no drift protection either);
- interleaved: A B A B with nothing in between (bitedge's protocol before this benchmark);
- interleaved + 20 ms pause: a sleep before each timed call (the protocol's minimum count of samples
  only: its minimum duration would take minutes of sleeping for sub-millisecond models);
- interleaved + 20 ms settle: rounds of 20 ms untimed, then 20 ms timed, per candidate
  (``Protocol.settle_seconds``, bitedge's protocol now).

The closer a scheme's medians are to "alone", the less it measures the neighbours instead of the candidate.
The four schemes run one after another, and that sequence is repeated (3 times): each ratio to "alone" is
taken within a repetition, so slow drift of the machine between schemes cancels, and the table shows the
median and the range over repetitions.

    python benchmarks/interleaving.py          # writes benchmarks/results/interleaving.{json,md,png}
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from results_io import convert_in_fresh_process, machine_line, pyplot, save_json, save_markdown, script_arguments

from bitedge.bench.protocol import LatencyStats, Protocol, machine_info, measure_interleaved, warm_up
from bitedge.bench.run import open_target

SCHEMES = ("alone", "interleaved", "interleaved + 20 ms pause", "interleaved + 20 ms settle")


def candidates(model: str, work: Path) -> dict[str, Callable[[], object]]:
    """torch eager, bitedge ONNX fp32 and bitedge OpenVINO int8 of ``model``, as `bitedge bench` runs them."""
    for target, precision in (("onnx", "fp32"), ("openvino", "int8")):
        out = work / f"{target}-{precision}"
        done = convert_in_fresh_process([model, "--target", target, "--precision", precision, "--out", str(out)])
        # exit 1 = built but over a parity budget: seeded random R50x1 weights give near-tied logits in int8
        if done.get("exit_code") not in (0, 1) or not (out / "bitedge.json").is_file():
            raise SystemExit(f"bitedge convert {model} {target} {precision} failed:\n{done['stderr'][-2000:]}")
    specs = {"torch eager fp32": model, "bitedge ONNX fp32": str(work / "onnx-fp32"),
             "bitedge OpenVINO int8": str(work / "openvino-int8")}  # fmt: skip
    calls = {}
    for name, spec in specs.items():
        target = open_target(spec, threads=2)
        calls[name] = target.call(target.inputs(1))
    return calls


def with_pause(calls: dict[str, Callable[[], object]], protocol: Protocol, pause: float) -> dict[str, list[float]]:
    """Interleaved, with a sleep before each timed call (warm-up as the protocol's; minimum count only)."""
    warm_up(calls, protocol)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(protocol.min_runs):
        for name, run in calls.items():
            time.sleep(pause)
            start = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return samples


def schemes(calls: dict[str, Callable[[], object]], protocol: Protocol) -> dict[str, dict[str, float]]:
    """Median ms of every candidate under every scheme."""

    def medians(stats: dict[str, LatencyStats]) -> dict[str, float]:
        return {name: s.median_ms for name, s in stats.items()}

    alone = {}
    for name, call in calls.items():
        alone |= medians(measure_interleaved({name: call}, batch=1, threads=2, protocol=protocol))
    paused = with_pause(calls, protocol, 0.02)
    return {
        "alone": alone,
        "interleaved": medians(
            measure_interleaved(calls, batch=1, threads=2, protocol=replace(protocol, settle_seconds=0))
        ),
        "interleaved + 20 ms pause": {name: sorted(s)[len(s) // 2] for name, s in paused.items()},
        "interleaved + 20 ms settle": medians(measure_interleaved(calls, batch=1, threads=2, protocol=protocol)),
    }


def main() -> None:
    parser = script_arguments(__doc__)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    protocol = Protocol(3, 0.3, 10, 0.3) if args.quick else Protocol()
    models: dict[str, Any] = {}
    for model in ("bitedge/demo", "bit-s-r50x1"):
        with tempfile.TemporaryDirectory() as tmp:
            calls = candidates(model, Path(tmp))
            models[model] = [schemes(calls, protocol) for _ in range(args.repetitions)]
    result = {"benchmark": "interleaving", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "protocol": protocol.__dict__, "threads": 2, "batch": 1, "repetitions": args.repetitions,
              "models": models}  # fmt: skip
    _write(args.out, result)


def _ratios(repetitions: list[dict[str, dict[str, float]]], scheme: str, name: str) -> list[float]:
    """``scheme``'s median over the same repetition's "alone", for each repetition."""
    return [r[scheme][name] / r["alone"][name] for r in repetitions]


def _write(out: Path, result: dict[str, Any]) -> None:
    save_json(out, "interleaving", result)
    lines = [
        f"# Timing schemes: alone, interleaved, paused, settled ({result['date']})",
        "",
        f"{machine_line(result['machine'])}; batch 1, 2 threads; median ms over {result['repetitions']} repetitions"
        " (× the same candidate timed alone in the same repetition: median, range).",
        "Targets opened as `bitedge bench` opens them (OpenVINO: LATENCY hint, the CPU's default precision; "
        "onnxruntime: thread spinning off).",
    ]
    for model, repetitions in result["models"].items():
        names = list(repetitions[0]["alone"])
        lines += ["", f"## {model}", "", "| scheme | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for scheme in SCHEMES:
            cells = []
            for n in names:
                ms = float(np.median([r[scheme][n] for r in repetitions]))
                ratios = _ratios(repetitions, scheme, n)
                cells.append(f"{ms:.2f} ({np.median(ratios):.2f}×, {min(ratios):.2f}–{max(ratios):.2f})")
            lines.append(f"| {scheme} | " + " | ".join(cells) + " |")
    lines += ["", "Reproduce: `python benchmarks/interleaving.py`", ""]
    save_markdown(out, "interleaving", lines)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(result["models"]), figsize=(12, 3.8))
    for ax, (model, repetitions) in zip(axes, result["models"].items(), strict=True):
        names = list(repetitions[0]["alone"])
        width = 0.8 / len(SCHEMES)
        for i, scheme in enumerate(SCHEMES):
            ratios = [float(np.median(_ratios(repetitions, scheme, n))) for n in names]
            ax.bar([j + i * width for j in range(len(names))], ratios, width, label=scheme)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(names))], names, fontsize=7)
        ax.set_ylabel("median × alone")
        ax.set_yscale("log")
        ax.set_title(model, fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "interleaving.png", dpi=110)


if __name__ == "__main__":
    main()
