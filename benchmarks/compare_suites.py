"""Two runs of ``benchmarks/suite.py`` side by side, as paired ratios: did a change move any figure?

Each suite run pairs its flows within itself (interleaved, settled rounds), so its ratios compare across
runs made on the same machine even though absolute milliseconds drift. Typical use, before and after a
refactor, on one machine::

    git worktree add /tmp/before <commit>
    pip install --no-deps --no-build-isolation --target /tmp/before-site /tmp/before
    (cd /tmp && PYTHONPATH=/tmp/before-site python /tmp/before/benchmarks/suite.py --out /tmp/suite-before)
    python benchmarks/suite.py --out /tmp/suite-after
    python benchmarks/compare_suites.py /tmp/suite-before/suite.json /tmp/suite-after/suite.json --name NAME

writes ``results/NAME.md`` and ``results/NAME.json`` (both runs' ratios, and the machine of each).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from results_io import RESULTS, machine_line, save_json, save_markdown

RATIOS = ("vs_eager", "vs_unfolded_onnx", "vs_anchor_openvino_int8")
HEADERS = ("× torch eager", "× unfolded ONNX", "× anchor OV int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--name", required=True, help="results file name (without extension)")
    parser.add_argument("--title", default="suite before and after a change")
    args = parser.parse_args()
    before, after = (json.loads(path.read_text()) for path in (args.before, args.after))
    lines = [f"# {args.title}", ""]
    for label, run in (("before", before), ("after", after)):
        gflops = run["matmul_fp32_gflops_2_threads"]
        lines.append(f"- {label}: {run['date']}, {machine_line(run['machine'])}; fp32 matmul {gflops:.0f} GFLOP/s")
    lines += ["", "Paired ratios (medians of per-round ratios within each run); before / after.", ""]
    rows = []
    for model_before, model_after in zip(before["models"], after["models"], strict=True):
        lines += [f"## {model_before['model']} at {model_before['input'][0]}", ""]
        lines += ["| flow | " + " | ".join(HEADERS) + " |", "|---|" + "---|" * len(HEADERS)]
        for flow, a in model_before["flows"].items():
            b = model_after["flows"][flow]
            cells = [f"{a[r]:.3f} / {b[r]:.3f}" for r in RATIOS]
            lines.append(f"| {flow} | " + " | ".join(cells) + " |")
            rows.append({"model": model_before["model"], "flow": flow, **{r: [a[r], b[r]] for r in RATIOS}})
        lines.append("")
    lines += ["Reproduce: see the docstring of `benchmarks/compare_suites.py`.", ""]
    runs = {label: {k: run[k] for k in ("date", "machine", "versions")} for label, run in (("before", before),
                                                                                         ("after", after))}  # fmt: skip
    save_json(RESULTS, args.name, {**runs, "rows": rows})
    save_markdown(RESULTS, args.name, lines)


if __name__ == "__main__":
    main()
