"""torch eager BiT-R50x1 under glibc's default malloc settings and with freed memory kept (bench.keep_freed_memory).

Eager BiT standardizes every conv weight on every call, ~100 MB of temporaries for R50x1. How much those cost
depends on whether glibc hands the freed blocks back to the OS, which depends on the process's history. Each
case runs in its own fresh process, timed back to back after warm-up:

- ``default``: a fresh process, glibc's defaults (what ``python my_script.py`` gets);
- ``after fold``: the same, timed after ``bitedge.fold`` made its deploy copy (its frees raise glibc's
  dynamic thresholds: what the suite's eager rows measured before this benchmark existed);
- ``keep freed memory``: ``keep_freed_memory()`` first (what ``bitedge bench`` and the suite do now).

    python benchmarks/eager_allocator.py    # writes benchmarks/results/eager_allocator.{json,md,png}
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from results_io import RESULTS, machine_line, pyplot, save_json, save_markdown

from bitedge.bench.protocol import machine_info

CASES = ("default", "after fold", "keep freed memory")
_TIMING = """
import json, sys, time
import numpy as np, torch
from bitedge.memory import keep_freed_memory
from bitedge.fold import fold
from bitedge.model.loading import load_model
case = sys.argv[1]
if case == "keep freed memory":
    assert keep_freed_memory()
torch.set_num_threads(2)
model = load_model("bit-s-r50x1").eval()
if case == "after fold":
    fold(model)
x = torch.zeros(1, 3, 224, 224)
with torch.no_grad():
    for _ in range(5):
        model(x)
    samples = []
    for _ in range(40):
        start = time.perf_counter()
        model(x)
        samples.append((time.perf_counter() - start) * 1e3)
print(json.dumps(samples))
"""


def main() -> None:
    samples: dict[str, list[list[float]]] = {case: [] for case in CASES}
    for _ in range(2):  # the cases alternate, twice, so drift between processes hits each alike
        for case in CASES:
            run = subprocess.run([sys.executable, "-c", _TIMING, case], capture_output=True, text=True, check=True)
            samples[case].append(json.loads(run.stdout))
    medians = {case: [float(sorted(s)[len(s) // 2]) for s in runs] for case, runs in samples.items()}
    result = {
        "benchmark": "eager_allocator",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "model": "bit-s-r50x1 at 224, batch 1, 2 threads, torch eager fp32",
        "median_ms_per_process": medians,
        "samples_ms": samples,
    }
    save_json(RESULTS, "eager_allocator", result)
    lines = [
        f"# torch eager BiT-R50x1 and glibc's malloc ({result['date']})",
        "",
        f"{machine_line(result['machine'])}. {result['model']}; each case in its own fresh process, twice, "
        "alternating; 40 timed calls after 5 warm-up calls.",
        "",
        "| case | median ms (process 1) | median ms (process 2) |",
        "|---|---|---|",
    ]
    lines += [f"| {case} | {m[0]:.1f} | {m[1]:.1f} |" for case, m in medians.items()]
    lines += ["", "Reproduce: `python benchmarks/eager_allocator.py`", ""]
    save_markdown(RESULTS, "eager_allocator", lines)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.boxplot([[v for run in samples[c] for v in run] for c in CASES], orientation="horizontal", tick_labels=CASES)
    ax.set_xlabel("ms per call (both processes)")
    ax.set_title("torch eager BiT-R50x1 at 224, batch 1, 2 threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "eager_allocator.png", dpi=110)


if __name__ == "__main__":
    main()
