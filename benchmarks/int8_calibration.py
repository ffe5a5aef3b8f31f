"""INT8 calibration, measured: the four methods and the recipe on the demo model; R50x1 cost and speed.

Part 1 (demo model, bundled splits): one calibration pass, then for each method (minmax, percentile,
entropy, mse) the simulated-quantized model and the INT8 ONNX in onnxruntime against the float model on
the 400 held-out images: top-1 agreement, accuracy, cosine, and the time each method takes. Then the
recipe: the default method with the stem and/or the head kept in float.

Part 2 (BiT-R50x1 at 224, seeded weights): calibration on 512 images (the demo's 600 images, resized)
timed in a child process that also reports its peak RSS; then the INT8 ONNX vs the fp32 ONNX in
onnxruntime, batch 1, 2 threads, under bitedge's latency protocol.

    python benchmarks/int8_calibration.py        # writes benchmarks/results/int8_calibration.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from results_io import pyplot, save_json, save_markdown, script_arguments

from bitedge import load_model
from bitedge.bench.protocol import Protocol, machine_info, measure_interleaved
from bitedge.calibration import DEFAULT_METHOD, METHODS
from bitedge.calibration.calibrate import collect_ranges, make_table
from bitedge.calibration.placement import X86_UINT8
from bitedge.calibration.simulate import simulate
from bitedge.calibration.sources import open_calibration
from bitedge.converters._onnx_graph import build_onnx
from bitedge.fold import fold
from bitedge.memory import peak_rss_mb
from bitedge.model.demo import DEMO_CALIBRATION, DEMO_DIR, DEMO_EVAL
from bitedge.model.presets import PRESETS
from bitedge.parity.images import Batches, scan_images
from bitedge.parity.metrics import compare


def _session(proto: Any, threads: int = 2) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _row(
    name: str, reference: np.ndarray, simulated: np.ndarray, onnx_out: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    sim, art = compare(reference, simulated, labels), compare(reference, onnx_out, labels)
    fidelity = compare(simulated, onnx_out)
    return {
        "name": name,
        "sim_top1_agreement": sim.top1_agreement,
        "sim_accuracy": sim.artifact_accuracy,
        "sim_cosine": sim.cosine_mean,
        "onnx_top1_agreement": art.top1_agreement,
        "onnx_accuracy": art.artifact_accuracy,
        "onnx_cosine": art.cosine_mean,
        "onnx_vs_sim_top1": fidelity.top1_agreement,
        "float_accuracy": sim.reference_accuracy,
    }


def demo_part() -> dict[str, Any]:
    model = load_model("bitedge/demo")
    processor = model.image_processor
    deploy = fold(model)
    images = scan_images(DEMO_EVAL, model.config.labels)
    batches = list(Batches(images, processor, batch_size=100))
    pixels = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[2] for b in batches])
    with torch.no_grad():
        reference = model(torch.from_numpy(pixels)).logits.numpy()

    def evaluate(name: str, table: Any) -> dict[str, Any]:
        sim_model = simulate(deploy, table, X86_UINT8)
        with torch.no_grad():
            simulated = sim_model(torch.from_numpy(pixels)).numpy()
        onnx_out = _session(build_onnx(sim_model, input_size=(64, 64), batch=None)).run(None, {"pixel_values": pixels})[
            0
        ]
        return _row(name, reference, simulated, onnx_out, labels)

    data = open_calibration(DEMO_CALIBRATION)
    start = time.perf_counter()
    ranges, excluded = collect_ranges(deploy, data, processor, exclude=[], raw_pixels=False)
    collect_s = time.perf_counter() - start
    methods = []
    for method in METHODS:
        start = time.perf_counter()
        table = make_table(
            ranges, excluded, data, method=method, model_sha256=None, input_size=(64, 64), raw_pixels=False
        )
        row = evaluate(method, table)
        row["calibration_s"] = round(collect_s + time.perf_counter() - start, 3)
        methods.append(row)
    recipes = []
    for exclude in ([], ["stem"], ["head"], ["stem", "head"]):
        ranges_r, excluded_r = collect_ranges(deploy, data, processor, exclude=exclude, raw_pixels=False)
        table = make_table(
            ranges_r, excluded_r, data, method=DEFAULT_METHOD, model_sha256=None, input_size=(64, 64), raw_pixels=False
        )
        recipes.append(evaluate("all convs + head" if not exclude else f"float: {', '.join(exclude)}", table))
    return {
        "images": len(labels),
        "calibration_images": data.manifest.used,
        "methods": methods,
        "recipes": recipes,
    }


def r50_calibration_child() -> None:
    """Runs in a child process: calibrate R50x1 on 512 images; print time and this process's peak RSS."""
    torch.set_num_threads(2)
    model = load_model("bit-s-r50x1")
    processor = PRESETS["bit-s-r50x1"].image_processor()
    deploy = fold(model)
    del model
    data = open_calibration(DEMO_DIR, size=512, seed=0)
    start = time.perf_counter()
    ranges, excluded = collect_ranges(deploy, data, processor, exclude=[], raw_pixels=False, batch_size=16)
    table = make_table(
        ranges, excluded, data, method=DEFAULT_METHOD, model_sha256=None, input_size=(224, 224), raw_pixels=False
    )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": peak_rss_mb(),
                "images": data.manifest.used,
                "layers": len(table.layers),
            }
        )
    )


def r50_part(quick: bool) -> dict[str, Any]:
    child = subprocess.run([sys.executable, __file__, "--r50-child"], capture_output=True, text=True, check=True)
    calibration = json.loads(child.stdout.strip().splitlines()[-1])
    model = load_model("bit-s-r50x1")
    processor = PRESETS["bit-s-r50x1"].image_processor()
    deploy = fold(model)
    data = open_calibration(DEMO_DIR, size=64 if quick else 512, seed=0)
    ranges, excluded = collect_ranges(deploy, data, processor, exclude=[], raw_pixels=False)
    table = make_table(
        ranges, excluded, data, method=DEFAULT_METHOD, model_sha256=None, input_size=(224, 224), raw_pixels=False
    )
    fp32 = _session(build_onnx(deploy, input_size=(224, 224), batch=None))
    int8 = _session(build_onnx(simulate(deploy, table, X86_UINT8), input_size=(224, 224), batch=None))
    x = next(iter(Batches(scan_images(DEMO_EVAL, []), processor, batch_size=1)))[0]
    protocol = Protocol(3, 0.2, 10, 0.5) if quick else Protocol()
    candidates = {
        "fp32 ONNX": lambda: fp32.run(None, {"pixel_values": x}),
        "int8 ONNX (Q/DQ)": lambda: int8.run(None, {"pixel_values": x}),
    }
    stats = measure_interleaved(candidates, batch=1, threads=2, protocol=protocol)
    return {
        "calibration": calibration,
        "latency": {name: s.to_dict() for name, s in stats.items()},
        "int8_over_fp32_median": stats["int8 ONNX (Q/DQ)"].median_ms / stats["fp32 ONNX"].median_ms,
    }


def main() -> None:
    parser = script_arguments(__doc__)
    parser.add_argument("--r50-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.r50_child:
        r50_calibration_child()
        return
    torch.set_num_threads(2)
    result = {
        "benchmark": "int8_calibration",
        "default_method": DEFAULT_METHOD,
        "machine": machine_info(),
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__},
        "demo": demo_part(),
        "r50x1": r50_part(args.quick),
    }
    _write(args.out, result)


def _write(out: Path, result: dict[str, Any]) -> None:
    plt = pyplot()
    save_json(out, "int8_calibration", result)
    demo, r50 = result["demo"], result["r50x1"]
    header = "| {} | top-1 agreement (sim / ONNX) | accuracy (sim / ONNX) | cosine (sim / ONNX) | ONNX vs sim top-1 |"
    lines = [
        "# INT8 calibration",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; onnxruntime "
        f"{result['versions']['onnxruntime']}. Default method: **{result['default_method']}**.",
        "",
        f"## Methods on the demo model ({demo['calibration_images']} calibration images, {demo['images']} held-out;"
        f" float accuracy {demo['methods'][0]['float_accuracy']:.2f}%)",
        "",
        header.format("method") + " calibration s |",
        "|---|---|---|---|---|---|",
    ]

    def cells(r: dict[str, Any]) -> str:
        return (
            f"{r['sim_top1_agreement']:.2%} / {r['onnx_top1_agreement']:.2%} | {r['sim_accuracy']:.2f}% / "
            f"{r['onnx_accuracy']:.2f}% | {r['sim_cosine']:.5f} / {r['onnx_cosine']:.5f} | "
            f"{r['onnx_vs_sim_top1']:.2%} |"
        )

    lines += [f"| {r['name']} | {cells(r)} {r['calibration_s']:.2f} |" for r in demo["methods"]]
    lines += [
        "",
        f"## Recipe ({result['default_method']}): which layers stay float",
        "",
        header.format("quantized"),
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['name']} | {cells(r)}" for r in demo["recipes"]]
    cal, lat = r50["calibration"], r50["latency"]
    lines += [
        "",
        "## BiT-R50x1 at 224",
        "",
        f"Calibration on {cal['images']} images ({cal['layers']} layers): **{cal['seconds']:.1f} s**, peak RSS "
        f"**{cal['peak_rss_mb']:.0f} MiB** (child process, 2 threads).",
        "",
        "| onnxruntime, batch 1, 2 threads | median ms | p90 ms | runs |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['runs']} |" for name, s in lat.items()]
    lines += [
        "",
        f"INT8 / fp32 median latency: **{r50['int8_over_fp32_median']:.2f}**",
        "",
        "Reproduce: `python benchmarks/int8_calibration.py`",
        "",
    ]
    save_markdown(out, "int8_calibration", lines)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["name"] for r in demo["methods"]]
    ax.bar(np.arange(len(names)) - 0.2, [r["sim_accuracy"] for r in demo["methods"]], 0.4, label="simulated")
    ax.bar(
        np.arange(len(names)) + 0.2, [r["onnx_accuracy"] for r in demo["methods"]], 0.4, label="ONNX int8 (onnxruntime)"
    )
    ax.axhline(demo["methods"][0]["float_accuracy"], color="k", linestyle="--", label="float")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(min(r["onnx_accuracy"] for r in demo["methods"]) - 1, 100)
    ax.set_ylabel("held-out top-1 accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "int8_calibration.png", dpi=110)


if __name__ == "__main__":
    main()
