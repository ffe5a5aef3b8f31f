"""BiT-R50x1 at 224 in onnxruntime: bitedge's folded ONNX vs exporting transformers' model directly.

Anchor flows (what an engineer does by hand): ``torch.onnx.export`` on transformers'
``BitForImageClassification`` — the TorchScript exporter (opset 17) and, when onnxscript is installed, the
dynamo exporter (opset 21). Those graphs recompute weight standardization on every call and (TorchScript)
decompose GroupNorm. All candidates are checked against the float model on real photos, then timed
interleaved under bitedge's latency protocol (batch 1, 2 threads by default).

    python benchmarks/onnx_fold_vs_unfolded.py            # writes benchmarks/results/onnx_fold_vs_unfolded.*

Needs the dev extra (transformers, scikit-image) and matplotlib; onnxscript is optional.
"""

from __future__ import annotations

import collections
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from PIL import Image
from results_io import pyplot, save_json, save_markdown, script_arguments

from bitedge import load_model
from bitedge.bench.protocol import Protocol, machine_info, measure_interleaved
from bitedge.converters._onnx_graph import build_onnx
from bitedge.converters.base import ExportSpec
from bitedge.converters.onnx import OnnxConverter
from bitedge.fold import fold
from bitedge.memory import peak_rss_mb
from bitedge.model.presets import PRESETS
from bitedge.precisions import Precision

PRESET = "bit-s-r50x1"


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits  # type: ignore[no-any-return]


def _photos() -> list[Image.Image]:
    import skimage.data

    return [Image.fromarray(f()) for f in (skimage.data.astronaut, skimage.data.coffee, skimage.data.chelsea)]


def _export_anchors(hf_model: torch.nn.Module, x: torch.Tensor, directory: Path) -> dict[str, Path | str]:
    wrapped = _LogitsOnly(hf_model).eval()
    kwargs: dict[str, Any] = dict(
        input_names=["pixel_values"], output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}}
    )
    out: dict[str, Path | str] = {}
    path = directory / "torchscript.onnx"
    torch.onnx.export(wrapped, (x,), str(path), dynamo=False, opset_version=17, **kwargs)
    out["transformers + torch.onnx.export (TorchScript, opset 17)"] = path
    path = directory / "dynamo.onnx"
    try:
        torch.onnx.export(wrapped, (x,), str(path), dynamo=True, opset_version=21, external_data=False, **kwargs)
        out["transformers + torch.onnx.export (dynamo, opset 21)"] = path
    except Exception as exc:  # onnxscript missing or exporter failure: record it, do not hide it
        out["transformers + torch.onnx.export (dynamo, opset 21)"] = f"export failed: {type(exc).__name__}: {exc}"
    return out


OPTIMIZED, UNOPTIMIZED = "default graph optimizations", "graph optimizations disabled"
BITEDGE = "bitedge (folded, default: GroupNorm as InstanceNormalization)"


def _session(path: Path, threads: int, *, optimize: bool = True, profile: bool = False) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # candidates are interleaved on the same cores (with other runtimes too): spinning worker threads would
    # steal them from whatever runs next; without spinning each call pays only for itself
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:  # what a runtime that does not constant-fold would execute
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if profile:  # the profiler's trace goes next to the model
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _load_seconds(path: Path, threads: int, repeats: int = 5) -> float:
    """Median session-creation time: what an app pays at start-up (constant folding happens here)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _session(path, threads)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = script_arguments(__doc__)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    model = load_model(PRESET)  # seeded weights: timing does not depend on their values
    processor = PRESETS[PRESET].image_processor()
    photos = processor(_photos(), return_tensors="pt")["pixel_values"]  # (3, 3, 224, 224)
    x = photos[:1]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model.save_pretrained(work / "hf")
        hf_model = transformers.BitForImageClassification.from_pretrained(work / "hf").eval()
        deploy = fold(model)
        OnnxConverter().convert(deploy, work, precision=Precision.FP32, spec=ExportSpec((224, 224), None))
        paths: dict[str, Path | str] = {BITEDGE: work / "model.onnx"}
        # the same folded graph with the native GroupNormalization-21 op (--onnx-group-norm native)
        variant = build_onnx(deploy, input_size=(224, 224), batch=None, group_norm="native")
        onnx.save(variant, str(work / "native.onnx"))
        paths["bitedge (folded, GroupNormalization-21)"] = work / "native.onnx"
        with torch.no_grad():
            paths.update(_export_anchors(hf_model, x, work))
            reference = model(photos).logits.numpy()
        sessions, candidates, report = {}, {}, {}
        for name, path in paths.items():
            if isinstance(path, str):
                report[name] = {"error": path}
                continue
            session = sessions[name] = _session(path, args.threads)
            ops = collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
            logits = session.run(None, {"pixel_values": photos.numpy()})[0]
            report[name] = {
                "max_abs_diff_vs_float": float(np.abs(logits - reference).max()),
                "top1_agrees": bool((logits.argmax(1) == reference.argmax(1)).all()),
                "file_mb": round(path.stat().st_size / 2**20, 1),
                "session_create_s": round(_load_seconds(path, args.threads), 3),
                "ops": dict(sorted(ops.items())),
            }
            plain = _session(path, args.threads, optimize=False)
            candidates[f"{name} | {OPTIMIZED}"] = lambda s=session: s.run(None, {"pixel_values": x.numpy()})
            candidates[f"{name} | {UNOPTIMIZED}"] = lambda s=plain: s.run(None, {"pixel_values": x.numpy()})
        protocol = Protocol(3, 0.2, 10, 0.5) if args.quick else Protocol()
        stats = measure_interleaved(candidates, batch=1, threads=args.threads, protocol=protocol)
    for mode in (OPTIMIZED, UNOPTIMIZED):
        base = stats[f"{BITEDGE} | {mode}"].median_ms
        for name, entry in report.items():
            if "error" not in entry:
                s = stats[f"{name} | {mode}"]
                entry.setdefault("latency", {})[mode] = s.to_dict() | {"median_vs_bitedge": s.median_ms / base}
    result = {
        "benchmark": "onnx_fold_vs_unfolded",
        "model": f"{PRESET} (BiT-R50x1, 1000 classes), 224x224, fp32",
        "batch": 1,
        "threads": args.threads,
        "protocol": protocol.__dict__,
        "machine": machine_info(),
        "versions": {"onnxruntime": ort.__version__, "onnx": onnx.__version__, "torch": torch.__version__},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "candidates": report,
    }
    _write(args.out, result, stats)


def _write(out: Path, result: dict[str, Any], stats: dict[str, Any]) -> None:
    plt = pyplot()
    save_json(out, "onnx_fold_vs_unfolded", result)
    stem = out / "onnx_fold_vs_unfolded"
    lines = [
        f"# {result['model']}: onnxruntime, batch {result['batch']}, {result['threads']} threads",
        "",
        f"Machine: {result['machine']['cpu']} ({result['machine']['cores']} cores, "
        f"flags {' '.join(result['machine']['flags'])}); onnxruntime {result['versions']['onnxruntime']}.",
        "",
        "| export | onnxruntime | median ms | p90 ms | p99 ms | min ms | runs | × bitedge median |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["candidates"].items():
        for mode, s in entry.get("latency", {}).items():
            lines.append(
                f"| {name} | {mode} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['p99_ms']:.1f} | "
                f"{s['min_ms']:.1f} | {s['runs']} | {s['median_vs_bitedge']:.2f} |"
            )
    lines += ["", "| export | ops in the graph | session create s | file MB | max abs Δ vs float (3 photos) |"]
    lines += ["|---|---|---|---|---|"]
    for name, entry in result["candidates"].items():
        if "error" in entry:
            lines.append(f"| {name} | {entry['error']} | | | |")
        else:
            ops = sum(entry["ops"].values())
            lines.append(
                f"| {name} | {ops} | {entry['session_create_s']:.3f} | {entry['file_mb']} | "
                f"{entry['max_abs_diff_vs_float']:.2e} |"
            )
    lines += ["", "Reproduce: `python benchmarks/onnx_fold_vs_unfolded.py`", ""]
    save_markdown(out, "onnx_fold_vs_unfolded", lines)
    fig, ax = plt.subplots(figsize=(10, 5))
    names = list(stats)
    ax.boxplot([stats[n].samples_ms for n in names], orientation="horizontal", showfliers=False)
    ax.set_yticks(range(1, len(names) + 1), [n.replace(" | ", "\n") for n in names], fontsize=7)
    ax.set_xlabel("latency per image (ms), batch 1")
    ax.set_title(f"BiT-R50x1 224 in onnxruntime, {result['threads']} threads")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    main()
