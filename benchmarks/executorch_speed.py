"""ExecuTorch .pte against torch eager: BiT-R50x1 at 224, batch 1, 2 threads, one interleaved run.

Flows: the float model in torch eager (the anchor: what ``bitedge bench MODEL`` times), the folded deploy
graph in eager (no weight standardization per call: a stricter anchor), the executorch target's fp32 program
built two ways (GroupNorm as the native op, in portable kernels between XNNPACK partitions, or decomposed into
ops XNNPACK runs: the default), its int8 program from bitedge's calibration table, and the hand-wired int8
flow a user would write (``XNNPACKQuantizer`` with its default symmetric config, PT2E, XnnpackPartitioner) on
the folded graph with native GroupNorm, calibrated on the same images. Programs built by the target pass
through its parity gate (the int8 one against the simulated model too); the table shows XNNPACK partitions,
conversion time, paired ratios against eager and achieved GFLOP/s (int8 counts its multiply-adds as
operations, so GFLOP/s reads GOP/s there).

    python benchmarks/executorch_speed.py      # writes benchmarks/results/executorch.{json,md,png}
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from results_io import latency_protocol, machine_line, pyplot, save_json, save_markdown, script_arguments

import bitedge
from bitedge import load_model
from bitedge.artifacts.manifest import Manifest
from bitedge.bench.protocol import machine_info, measure_interleaved, paired_ratio
from bitedge.converters.executorch import ExecuTorchConverter
from bitedge.fold import fold
from bitedge.model.demo import DEMO_CALIBRATION
from bitedge.model.summary import count_macs

THREADS = 2
EAGER = "torch eager (float model)"
HAND_WIRED = "hand-wired int8 .pte (XNNPACKQuantizer default, GroupNorm native)"
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


def _hand_wired_int8(deploy: torch.nn.Module, pixels: list[np.ndarray], path: Path) -> Any:
    """The int8 program a user wires by hand: XNNPACKQuantizer's default (per-channel symmetric) config on the
    folded graph, calibrated on ``pixels``; its forward method, or the error ExecuTorch gives loading it."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = (torch.from_numpy(pixels[0]),)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(deploy.eval(), example).module(), quantizer)
    with torch.no_grad():
        for x in pixels:
            prepared(torch.from_numpy(x))
    exported = torch.export.export(convert_pt2e(prepared), example)
    path.write_bytes(to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    try:
        return Runtime.get().load_program(str(path)).load_method("forward")
    except Exception as exc:  # the benchmark records why the hand-wired program does not load
        return f"{type(exc).__name__}: {exc}"


def _pixels(model: Any, images: Path, most: int = 64) -> list[np.ndarray]:
    """Up to ``most`` images under ``images``, preprocessed for ``model`` (batch 1 each)."""
    from PIL import Image

    files = sorted(p for p in images.rglob("*") if p.suffix in {".png", ".jpg"})[:most]
    return [np.ascontiguousarray(model.image_processor(Image.open(p).convert("RGB"), return_tensors="np")[
        "pixel_values"], dtype=np.float32) for p in files]  # fmt: skip


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
        calibration = {"calibration": photos} if photos is not None else {}  # the demo has its own
        builds = [("fp32", "native"), ("fp32", "decomposed"), ("int8", "decomposed")]
        for precision, group_norm in builds:
            name = f"executorch {precision} .pte (GroupNorm {group_norm})"
            if precision == "int8":
                name = "executorch int8 .pte (bitedge's table)"
            out = Path(tmp) / f"{precision}-{group_norm}"
            start = time.perf_counter()
            extra = calibration if precision == "int8" else {}
            result = bitedge.convert(model_name, out, targets=["executorch"], precisions=[precision],
                                     eval_images=photos, image_size=size, **extra,
                                     target_options={"executorch": {"group_norm": group_norm}})[0]  # fmt: skip
            seconds = time.perf_counter() - start
            runner = converter.load_runner(out, Manifest.read(out))
            pixels = x.numpy()
            diff = float(np.abs(runner(pixels) - reference).max())
            flows[name] = lambda r=runner, p=pixels: r(p)
            comparisons = {c.name: c.metrics for c in result.report.comparisons}
            rows[name] = {"convert_s": seconds, "notes": result.report.notes, "passed": result.passed,
                          "max_abs_diff_vs_eager": diff, "parity": {k: {"top1_agreement": m.top1_agreement,
                          "cosine_mean": m.cosine_mean, "snr_db": m.snr_db} for k, m in comparisons.items()},
                          "pte_mib": (out / "model.pte").stat().st_size / 2**20}  # fmt: skip
        hand = HAND_WIRED
        table_pixels = _pixels(model, photos if photos is not None else DEMO_CALIBRATION)
        start = time.perf_counter()
        method = _hand_wired_int8(deploy, table_pixels, Path(tmp) / "hand.pte")
        rows[hand] = {"convert_s": time.perf_counter() - start}
        if isinstance(method, str):
            rows[hand]["error"] = method
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(x.numpy()))
            flows[hand] = lambda m=method, p=tensor: m.execute([p])
        protocol = latency_protocol(quick)
        with torch.no_grad():
            stats = measure_interleaved(flows, batch=1, threads=THREADS, protocol=protocol)
    gflop = 2 * count_macs(model.config, size) / 1e9
    for name, s in stats.items():
        rows[name].update(latency=s.to_dict(), x_eager=paired_ratio(s, stats[EAGER]),
                          x_folded=paired_ratio(s, stats[FOLDED]),
                          gflops=gflop / (s.median_ms / 1e3))  # fmt: skip
    return {"model": model_name, "input": [size, size], "gflop_per_image": gflop, "flows": rows}


def _gate(flow: dict[str, Any]) -> str:
    """'pass: 100.0 % top-1, 37.6 dB vs float' from a converted flow's parity metrics ('-' for anchors)."""
    if "parity" not in flow:
        return "-"
    versus_float = next(iter(flow["parity"].values()))
    verdict = "pass" if flow["passed"] else "FAIL"
    return f"{verdict}: {versus_float['top1_agreement']:.1%} top-1, {versus_float['snr_db']:.1f} dB vs float"


def main() -> None:
    parser = script_arguments(__doc__)
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
                  "| max abs diff vs eager | parity gate |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, f in r["flows"].items():
            notes = "; ".join(n for n in f.get("notes", []) if n.startswith("lowered")).replace("lowered to ", "")
            lowering = f"{f['convert_s']:.1f}" if "convert_s" in f else "-"
            diff = f"{f['max_abs_diff_vs_eager']:.1e}" if "max_abs_diff_vs_eager" in f else "-"
            gate = _gate(f)
            if "latency" not in f:
                lines.append(f"| {name} | does not load: {f.get('error', '?')[:160]} | | | | | {lowering} | | |")
                continue
            lines.append(f"| {name} | {f['latency']['median_ms']:.1f} | {f['x_eager']:.3f} | {f['x_folded']:.3f} | "
                         f"{f['gflops']:.0f} | {notes or '-'} | {lowering} | {diff} | {gate} |")  # fmt: skip
        lines.append("")
    lines.append("Reproduce: `python benchmarks/executorch_speed.py`")
    save_markdown(args.out, "executorch", lines)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(result["results"]), figsize=(11, 3))
    for ax, r in zip(axes, result["results"], strict=True):
        names = [n for n in r["flows"] if "latency" in r["flows"][n]]
        ax.barh(names, [r["flows"][n]["latency"]["median_ms"] for n in names])
        ax.set_title(f"{r['model']} @ {r['input'][0]}", fontsize=9)
        ax.set_xlabel("median ms, batch 1")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "executorch.png", dpi=100)


if __name__ == "__main__":
    main()
