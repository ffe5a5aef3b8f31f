"""ExecuTorch .pte against torch eager: BiT-R50x1 at 224, batch 1, 2 threads, one interleaved run.

Flows: the float model in torch eager (the anchor: what ``bitedge bench MODEL`` times), the folded deploy
graph in eager (no weight standardization per call: a stricter anchor), and the executorch
target's fp32 program built two ways: GroupNorm as the native op (portable kernels between XNNPACK
partitions) and decomposed into ops XNNPACK runs (the target's default). Each program is built by the
target's own converter and checked against eager on the same input; the table shows XNNPACK partitions,
lowering time, paired ratios against eager and achieved GFLOP/s.

    python benchmarks/executorch_speed.py      # writes benchmarks/results/executorch.{json,md,png}
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

import bitedge
from bitedge import load_model
from bitedge.artifacts.manifest import Manifest
from bitedge.bench.protocol import Protocol, machine_info, measure_interleaved, paired_ratio
from bitedge.converters.executorch import ExecuTorchConverter
from bitedge.fold import fold
from bitedge.model.summary import count_macs

THREADS = 2
EAGER = "torch eager (float model)"
FOLDED = "torch eager (folded deploy graph)"


def _photos(root: Path, size: int) -> Path:
    """scikit-image's photos and their mirror images: evaluation images for a model without its own."""
    import skimage.data
    from PIL import Image

    root.mkdir(parents=True)
    for i, photo in enumerate([skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]):
        image = Image.fromarray(photo)
        image.save(root / f"{i}.png")
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / f"{i}-mirror.png")
    return root


def run(model_name: str, size: int, quick: bool) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    model = load_model(model_name).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x).logits.numpy()
    deploy = fold(model)  # eager without weight standardization on every call: the stricter anchor
    flows: dict[str, Any] = {EAGER: lambda: model(x), FOLDED: lambda: deploy(x)}
    rows: dict[str, dict[str, Any]] = {EAGER: {}, FOLDED: {}}
    converter = ExecuTorchConverter()
    with tempfile.TemporaryDirectory() as tmp:
        photos = _photos(Path(tmp) / "eval", size) if model_name != "bitedge/demo" else None
        for group_norm in ("native", "decomposed"):
            name = f"executorch fp32 .pte (GroupNorm {group_norm})"
            out = Path(tmp) / group_norm
            start = time.perf_counter()
            result = bitedge.convert(model_name, out, targets=["executorch"], precisions=["fp32"],
                                     eval_images=photos, image_size=size,
                                     target_options={"executorch": {"group_norm": group_norm}})[0]  # fmt: skip
            seconds = time.perf_counter() - start
            runner = converter.load_runner(out, Manifest.read(out))
            pixels = x.numpy()
            diff = float(np.abs(runner(pixels) - reference).max())
            flows[name] = lambda r=runner, p=pixels: r(p)
            rows[name] = {"convert_s": seconds, "notes": result.report.notes, "passed": result.passed,
                          "max_abs_diff_vs_eager": diff,
                          "pte_mib": (out / "model.pte").stat().st_size / 2**20}  # fmt: skip
        protocol = Protocol(3, 0.3, 15, 0.5) if quick else Protocol()
        with torch.no_grad():
            stats = measure_interleaved(flows, batch=1, threads=THREADS, protocol=protocol)
    gflop = 2 * count_macs(model.config, size) / 1e9
    for name, s in stats.items():
        rows[name].update(latency=s.to_dict(), x_eager=paired_ratio(s, stats[EAGER]),
                          x_folded=paired_ratio(s, stats[FOLDED]),
                          gflops=gflop / (s.median_ms / 1e3))  # fmt: skip
    return {"model": model_name, "input": [size, size], "gflop_per_image": gflop, "flows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from importlib.metadata import version

    result = {"benchmark": "executorch_speed", "machine": machine_info(), "threads": THREADS,
              "versions": {"executorch": version("executorch"), "torch": torch.__version__},
              "results": [run("bit-s-r50x1", 224, args.quick), run("bitedge/demo", 64, args.quick)]}  # fmt: skip
    save_json(args.out, "executorch", result)
    lines = ["# ExecuTorch .pte against torch eager", "",
             f"Machine: {machine_line(result['machine'])}. executorch {result['versions']['executorch']}, torch "
             f"{result['versions']['torch']}; batch 1, {THREADS} threads, one interleaved run, paired ratios.",
             ""]  # fmt: skip
    for r in result["results"]:
        lines += [f"## {r['model']} at {r['input'][0]} px ({r['gflop_per_image']:.2f} GFLOP per image)", "",
                  "| flow | median ms | × eager | × folded eager | GFLOP/s | partitions, outside XNNPACK | convert s "
                  "| max abs diff |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, f in r["flows"].items():
            notes = "; ".join(n for n in f.get("notes", []) if n.startswith("lowered")).replace("lowered to ", "")
            lowering = f"{f['convert_s']:.1f}" if "convert_s" in f else "-"
            diff = f"{f['max_abs_diff_vs_eager']:.1e}" if "max_abs_diff_vs_eager" in f else "-"
            notes = notes or "-"
            lines.append(f"| {name} | {f['latency']['median_ms']:.1f} | {f['x_eager']:.3f} | {f['x_folded']:.3f} | "
                         f"{f['gflops']:.0f} | "
                         f"{notes} | {lowering} | {diff} |")  # fmt: skip
        lines.append("")
    lines.append("Reproduce: `python benchmarks/executorch_speed.py`")
    save_markdown(args.out, "executorch", lines)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(result["results"]), figsize=(11, 3))
    for ax, r in zip(axes, result["results"], strict=True):
        names = list(r["flows"])
        ax.barh(names, [r["flows"][n]["latency"]["median_ms"] for n in names])
        ax.set_title(f"{r['model']} @ {r['input'][0]}", fontsize=9)
        ax.set_xlabel("median ms, batch 1")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "executorch.png", dpi=100)


if __name__ == "__main__":
    main()
