"""Does a device bundle time an artifact as ``bitedge bench`` does? (issue 31: within ±10 % of its median).

On this machine, in one run: each artifact is timed by ``bitedge bench`` (its own process) and by its bundle's
``run.py`` in a fresh virtual environment holding only numpy and the runtime (no bitedge, no torch), in
alternation, ``--repeats`` times; the ratio is the median of the per-repetition ratios bundle / bench. Both run
the same protocol (warm-up >= 10 runs and 1 s, then >= 50 runs and 3 s), batch 1, 2 threads, OpenVINO at f32.
Artifacts: BiT-R50x1 at 224 px (``bit-m-r50x1-ilsvrc2012``'s seeded weights: speed, not accuracy), ONNX fp32
and int8, OpenVINO fp32 and int8, calibrated on 32 generated photos. Achieved GFLOP/s (2 x MACs / median)
is shown so an implausible number stands out.

    python benchmarks/device_bundle.py      # writes benchmarks/results/device_bundle.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from results_io import RESULTS, cli_process_result, machine_line, pyplot, save_json, save_markdown, start_cli_process

sys.path.insert(0, str(Path(__file__).parent))
from verify_scale import generate, photos

from bitedge.bench.protocol import machine_info
from bitedge.model.presets import PRESETS
from bitedge.model.summary import count_macs

R50 = "bit-m-r50x1-ilsvrc2012"
THREADS = 2
CONSTRAINTS = Path(__file__).parents[1] / "constraints.txt"


def _cli(args: list[str]) -> dict[str, Any]:
    result = cli_process_result(start_cli_process(args))
    if "error" in result or result["exit_code"] not in (0, 1):
        raise SystemExit(f"bitedge {' '.join(args)} failed:\n{result.get('error') or result['stderr'][-2000:]}")
    return result


def _venv(root: Path, runtime: str) -> str:
    """A virtual environment with numpy and ``runtime`` only; its python."""
    venv = root / f"venv-{runtime}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), "numpy", runtime], check=True)
    return python


def _bench(artifact: Path, out: Path) -> float:
    args = ["bench", str(artifact), "--threads", str(THREADS), "--out", str(out), "--allow-failed"]
    _cli(args)
    runs = json.loads((out / "bench.json").read_text())["runs"][0]["stats"]
    name = next(n for n in runs if "bf16" not in n)  # OpenVINO: the f32 row (the bundle runs f32 too)
    return float(runs[name]["median_ms"])


def _bundle_run(bundle: Path, python: str, openvino: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    flags = ["--threads", str(THREADS), *(["--precision", "f32"] if openvino else [])]
    subprocess.run([python, "run.py", *flags], cwd=bundle, check=True, env=env, capture_output=True)
    return float(json.loads((bundle / "results.json").read_text())["latency_ms"]["median"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    macs = count_macs(PRESETS[R50].config(), 224)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bitedge-device-bundle-") as scratch:
        root = Path(scratch)
        images = generate(root / "photos", 32, photos())
        artifacts = root / "artifacts"
        _cli(["convert", R50, "--target", "onnx", "openvino", "--precision", "fp32", "int8", "--eval", str(images),
              "--calibration", str(images), "--calibration-size", "32", "--out", str(artifacts)])  # fmt: skip
        pythons = {"onnx": _venv(root, "onnxruntime"), "openvino": _venv(root, "openvino")}
        for name in ("onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8"):
            # seeded weights: int8 fails its gate (random logits reorder), which timing does not care about
            _cli(["bench", "--bundle", str(root / "bundles"), str(artifacts / name), "--images", "4", "--allow-failed"])
            bundle, target = root / "bundles" / name, name.split("-")[0]
            bench, device = [], []
            for i in range(args.repeats):
                bench.append(_bench(artifacts / name, root / f"bench-{name}-{i}"))
                device.append(_bundle_run(bundle, pythons[target], target == "openvino"))
                print(f"{name} #{i}: bench {bench[-1]:.2f} ms, bundle {device[-1]:.2f} ms", flush=True)
            ratios = [d / b for b, d in zip(bench, device, strict=True)]
            median = {"bench": statistics.median(bench), "bundle": statistics.median(device)}
            rows.append({"artifact": name, "bench_ms": bench, "bundle_ms": device, "median_ms": median,
                         "ratio": statistics.median(ratios), "ratios": ratios,
                         "gflops": {k: 2 * macs / (v / 1e3) / 1e9 for k, v in median.items()}})  # fmt: skip
    machine = machine_info()
    save_json(RESULTS, "device_bundle", {"machine": machine, "threads": THREADS, "model": R50, "rows": rows})
    lines = ["# Device bundle vs bitedge bench, same machine, same run", "", f"Machine: {machine_line(machine)}.", "",
             f"BiT-R50x1 at 224 px, batch 1, {THREADS} threads; bundle: run.py in a venv with only numpy and the "
             f"runtime; medians of {args.repeats} alternating runs.", "",
             "| artifact | bitedge bench median (ms) | bundle run.py median (ms) | bundle / bench | "
             "GFLOP/s bench / bundle |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        m, g = r["median_ms"], r["gflops"]
        lines.append(f"| {r['artifact']} | {m['bench']:.2f} | {m['bundle']:.2f} | **{r['ratio']:.3f}** | "
                     f"{g['bench']:.0f} / {g['bundle']:.0f} |")  # fmt: skip
    save_markdown(RESULTS, "device_bundle", lines)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.6))
    ax.barh([r["artifact"] for r in rows], [r["ratio"] for r in rows])
    for edge in (0.9, 1.1):
        ax.axvline(edge, color="#d62728", linestyle="--", linewidth=1)
    ax.set_xlabel("bundle run.py median / bitedge bench median (target: within the dashed ±10 %)")
    fig.tight_layout()
    fig.savefig(RESULTS / "device_bundle.png", dpi=100)


if __name__ == "__main__":
    main()
