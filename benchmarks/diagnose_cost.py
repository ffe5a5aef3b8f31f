"""What ``bitedge diagnose`` costs next to one ``bitedge verify`` on the same images (issue 30: at most 2x).

Both run in fresh processes with an empty reference cache (each loads the model and runs the float reference;
verify also the simulated model and the artifact, diagnose the same three with every layer tapped and
compared). Artifacts:

- the bundled demo model (64 px digits): ONNX int8 and fp32, OpenVINO int8;
- BiT-R50x1 at 224 px (the ``bit-m-r50x1-ilsvrc2012`` preset's seeded weights: speed, not accuracy): ONNX int8
  and OpenVINO int8, calibrated on 32 of the images. 130 layers tapped.

Images: 32 seeded crops and flips of the demo's digits or of scikit-image's photos. Each pair of runs is
repeated (verify, diagnose, verify, diagnose) and the medians compared; the ratio is the median of the
per-repetition ratios. Achieved GFLOP/s counts the three networks' MACs x 2 on every image.

    python benchmarks/diagnose_cost.py      # writes benchmarks/results/diagnose_cost.{json,md,png}
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from results_io import RESULTS, cli_process_result, machine_line, pyplot, save_json, save_markdown, start_cli_process

sys.path.insert(0, str(Path(__file__).parent))
from verify_scale import digits, generate, photos

from bitedge.bench.protocol import machine_info
from bitedge.model.loading import load_model
from bitedge.model.presets import PRESETS
from bitedge.model.summary import count_macs

IMAGES = 32
R50 = "bit-m-r50x1-ilsvrc2012"


def _run(args: list[str], cache: Path) -> dict[str, Any]:
    env = {**os.environ, "BITEDGE_CACHE_DIR": str(cache)}
    result = cli_process_result(start_cli_process(args, env))
    if "error" in result or result["exit_code"] not in (0, 1):
        raise SystemExit(f"bitedge {' '.join(args)} failed:\n{result.get('error') or result['stderr'][-2000:]}")
    return result


def _convert(root: Path, model: str, images: Path, targets: list[str], precisions: list[str], size: int) -> Path:
    out = root / f"{model.replace('/', '-')}-artifacts"
    args = ["convert", model, "--target", *targets, "--precision", *precisions, "--eval", str(images), "--out",
            str(out), "--image-size", str(size), "--calibration", str(images), "--calibration-size", "32"]  # fmt: skip
    _run(args, root / "cache-convert")
    return out


def measure(artifact: Path, images: Path, repeats: int, macs: int, root: Path) -> dict[str, Any]:
    times: dict[str, list[float]] = {"verify": [], "diagnose": []}
    rss: dict[str, float] = {"verify": 0.0, "diagnose": 0.0}
    for i in range(repeats):
        for flow, args in (("verify", ["verify", str(artifact), "--eval", str(images)]),
                           ("diagnose", ["diagnose", str(artifact), "--eval", str(images), "--images", str(IMAGES),
                                         "--out", str(root / "diagnosis")])):  # fmt: skip
            with tempfile.TemporaryDirectory(dir=root) as cache:  # a cold reference cache every time
                result = _run(args, Path(cache))
            times[flow].append(result["seconds"])
            rss[flow] = max(rss[flow], result["peak_rss_mib"])
            print(f"{artifact.name} {flow} #{i}: {result['seconds']:.2f} s", flush=True)
    ratios = [d / v for v, d in zip(times["verify"], times["diagnose"], strict=True)]
    median = {flow: statistics.median(values) for flow, values in times.items()}
    gflops = {flow: 3 * 2 * macs * IMAGES / median[flow] / 1e9 for flow in median}
    return {"artifact": artifact.name, "seconds": times, "median_s": median, "ratio": statistics.median(ratios),
            "ratios": ratios, "peak_rss_mib": rss, "gflops_per_s": gflops, "macs_per_image": macs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-r50", action="store_true", help="only the demo model (minutes instead of ~20)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bitedge-diagnose-cost-") as scratch:
        root = Path(scratch)
        demo_images = generate(root / "digits", IMAGES, digits())
        demo = _convert(root, "bitedge/demo", demo_images, ["onnx", "openvino"], ["fp32", "int8"], 64)
        demo_macs = count_macs(load_model("bitedge/demo").config, 64)
        for name in ("onnx-int8", "onnx-fp32", "openvino-int8"):
            rows.append({"model": "demo (64 px)", **measure(demo / name, demo_images, args.repeats, demo_macs, root)})
        if not args.skip_r50:
            r50_images = generate(root / "photos", IMAGES, photos())
            r50 = _convert(root, R50, r50_images, ["onnx", "openvino"], ["int8"], 224)
            r50_macs = count_macs(PRESETS[R50].config(), 224)
            for name in ("onnx-int8", "openvino-int8"):
                rows.append({"model": "BiT-R50x1 (224 px)", **measure(r50 / name, r50_images, args.repeats, r50_macs,
                                                                      root)})  # fmt: skip
    machine = machine_info()
    save_json(RESULTS, "diagnose_cost", {"machine": machine, "images": IMAGES, "rows": rows})
    lines = ["# diagnose vs verify on the same images", "", f"Machine: {machine_line(machine)}.", "",
             f"{IMAGES} images, fresh processes, cold reference cache; medians of {args.repeats} runs each.", "",
             "| model | artifact | verify (s) | diagnose (s) | diagnose / verify | GFLOP/s verify / diagnose | "
             "peak RSS verify / diagnose (MiB) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        seconds, gflops, rss = r["median_s"], r["gflops_per_s"], r["peak_rss_mib"]
        lines.append(f"| {r['model']} | {r['artifact']} | {seconds['verify']:.2f} | {seconds['diagnose']:.2f} | "
                     f"**{r['ratio']:.2f}x** | {gflops['verify']:.1f} / {gflops['diagnose']:.1f} | "
                     f"{rss['verify']:.0f} / {rss['diagnose']:.0f} |")  # fmt: skip
    save_markdown(RESULTS, "diagnose_cost", lines)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    labels = [f"{r['model']} {r['artifact']}" for r in rows]
    ax.barh(labels, [r["ratio"] for r in rows], color="#1f77b4")
    ax.axvline(2.0, color="#d62728", linestyle="--", linewidth=1, label="target: 2x")
    ax.set_xlabel("diagnose time / verify time (same images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "diagnose_cost.png", dpi=100)


if __name__ == "__main__":
    main()
