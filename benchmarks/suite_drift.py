"""How much the suite's ratios move when the same flows are measured again later on this shared VM.

Within one measurement every ratio is paired (rounds interleave the flows, bench.py), which cancels drift
that hits all flows alike. It does not cancel drift that hits them differently: torch eager (fp32 GEMMs)
and OpenVINO int8 (VNNI convolutions plus memory-bound GroupNorm) need different parts of the machine.
This script builds BiT-R50x1's flows once (suite.flows), then measures the headline flows ``--repeats``
times, ``--gap`` seconds apart, and reports each ratio's range across the repetitions.

    python benchmarks/suite_drift.py        # writes benchmarks/results/suite_drift.{json,md,png}
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from results_io import RESULTS, machine_line, pyplot, save_json, save_markdown
from suite import EAGER, UNFOLDED, flows

from bitedge.bench.protocol import Protocol, machine_info, measure_interleaved, paired_ratio
from bitedge.memory import keep_freed_memory

MODEL = "bit-s-r50x1"
ANCHOR = "anchor OpenVINO int8 (hand-wired NNCF)"
FLOWS = (EAGER, UNFOLDED, "bitedge ONNX fp32", ANCHOR, "bitedge OpenVINO int8")
# (numerator, denominator) of the three targets
RATIOS = {
    "bitedge OpenVINO int8 / torch eager (target <= 0.15)": ("bitedge OpenVINO int8", EAGER),
    "bitedge ONNX fp32 / unfolded ONNX (target <= 0.67)": ("bitedge ONNX fp32", UNFOLDED),
    "bitedge OpenVINO int8 / NNCF anchor (target <= 1.0)": ("bitedge OpenVINO int8", ANCHOR),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--gap", type=float, default=90.0, help="seconds between repetitions")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()  # as the suite: eager at its fastest
    repetitions: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        runs, _, processor, _ = flows(MODEL, Path(tmp))
        x = np.zeros((1, 3, *processor.input_size), np.float32)
        calls = {name: (lambda f=runs[name]: f(x)) for name in FLOWS}
        start = time.time()
        for index in range(args.repeats):
            if index:
                time.sleep(args.gap)
            stats = measure_interleaved(calls, batch=1, threads=2, protocol=Protocol())
            repetitions.append({
                "minutes": round((time.time() - start) / 60, 1),
                "median_ms": {name: s.median_ms for name, s in stats.items()},
                "ratios": {label: paired_ratio(stats[a], stats[b]) for label, (a, b) in RATIOS.items()},
            })  # fmt: skip
            print(f"repetition {index + 1}/{args.repeats}: {repetitions[-1]['ratios']}", flush=True)
    result = {
        "benchmark": "suite_drift",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "model": MODEL,
        "machine": machine_info(),
        "repeats": args.repeats,
        "gap_seconds": args.gap,
        "repetitions": repetitions,
    }
    _write(args.out, result)


def _write(out: Path, result: dict[str, Any]) -> None:
    reps = result["repetitions"]
    lines = [
        f"# Suite ratios measured {result['repeats']} times, {result['gap_seconds']:.0f} s apart ({result['date']})",
        "",
        f"{machine_line(result['machine'])}. {result['model']} at 224, batch 1, 2 threads; each repetition is "
        "one interleaved measurement under bitedge's protocol, every ratio paired within it.",
        "",
        "| ratio | min | median | max |",
        "|---|---|---|---|",
    ]
    for label in RATIOS:
        values = [r["ratios"][label] for r in reps]
        lines.append(f"| {label} | {min(values):.3f} | {float(np.median(values)):.3f} | {max(values):.3f} |")
    lines += ["", "| minute | " + " | ".join(f"{n} ms" for n in FLOWS) + " | " + " | ".join(RATIOS) + " |"]
    lines += ["|---" * (1 + len(FLOWS) + len(RATIOS)) + "|"]
    for r in reps:
        cells = [f"{r['median_ms'][n]:.2f}" for n in FLOWS] + [f"{r['ratios'][k]:.3f}" for k in RATIOS]
        lines.append(f"| {r['minutes']} | " + " | ".join(cells) + " |")
    lines += ["", "Reproduce: `python benchmarks/suite_drift.py`", ""]
    save_json(out, "suite_drift", result)
    save_markdown(out, "suite_drift", lines)
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    minutes = [r["minutes"] for r in reps]
    for name in FLOWS:
        left.plot(minutes, [r["median_ms"][name] for r in reps], marker="o", label=name)
    left.set_yscale("log")
    left.set_xlabel("minutes since the first repetition")
    left.set_ylabel("median ms (log)")
    left.legend(fontsize=7)
    for label in RATIOS:
        right.plot(minutes, [r["ratios"][label] for r in reps], marker="o", label=label)
    right.set_xlabel("minutes since the first repetition")
    right.set_ylabel("paired ratio")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "suite_drift.png", dpi=110)


if __name__ == "__main__":
    main()
