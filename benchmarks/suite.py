"""The benchmark suite: every flow side by side, speed never without accuracy, against the machine's ceiling.

For BiT-R50x1 at 224 (seeded weights) and the demo model at 64, in one run on this machine:
torch eager fp32 (the float reference); transformers' model exported to ONNX unfolded (torch.onnx.export,
TorchScript); bitedge ONNX fp32, fp16, int8; the anchor OpenVINO flow (transformers -> convert_model ->
nncf.quantize defaults); bitedge OpenVINO fp32, fp16, int8 (default quantizer). Each is compiled as a
deployment would run it (onnxruntime defaults; OpenVINO LATENCY hint and the CPU's default precision),
2 threads, batch 1, timed interleaved under bitedge's latency protocol (rounds that settle each flow before
timing it, bitedge/bench.py); ratios are medians of per-round ratios against the three anchors. As in
``bitedge bench``, glibc's malloc is told to keep freed memory: eager BiT recomputes ~100 MB of standardized
weights per call, which otherwise cost page faults in amounts that depend on the process's history. bitedge
ONNX fp32 is also built with ``--onnx-group-norm native`` (the GroupNormalization-21 op instead of the
default InstanceNormalization chain). On the demo model every flow is also scored on the 400 held-out images.

The ceiling: the conv-only time of bitedge's OpenVINO int8 model (performance counters), the conv-kernel
time of the unfolded ONNX export and of bitedge's ONNX fp32 in onnxruntime (its profiler), and the plain
fp32 matrix-multiply throughput of 2 threads, so each result reads as a fraction of what the hardware does.

    python benchmarks/suite.py              # writes benchmarks/results/suite.{json,md,png}
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import openvino as ov
import torch

sys.path.insert(0, str(Path(__file__).parent))
from onnx_fold_vs_unfolded import _export_anchors, _session
from openvino_vs_anchor import ANCHOR, CONFIG, DEFAULT, build, profile
from results_io import latency_protocol, machine_line, pyplot, save_json, save_markdown, script_arguments

from bitedge.bench.protocol import Protocol, machine_info, measure_interleaved, paired_ratio
from bitedge.converters.base import ExportSpec
from bitedge.converters.onnx import OnnxConverter
from bitedge.fold import fold
from bitedge.memory import keep_freed_memory
from bitedge.model.demo import DEMO_EVAL
from bitedge.parity.images import Batches, scan_images
from bitedge.parity.metrics import compare
from bitedge.precisions import Precision

EAGER, UNFOLDED = "torch eager fp32", "transformers -> ONNX unfolded (onnxruntime)"
THREADS = 2
ONNX_NATIVE = "bitedge ONNX fp32 (--onnx-group-norm native)"
# the profiled models the ceiling is read from (their convolutions' time and their call's)
OV_PROFILED, ONNX_PROFILED = "bitedge OpenVINO int8", "bitedge ONNX fp32 (onnxruntime)"
UNFOLDED_PROFILED = "unfolded ONNX (onnxruntime)"


def _ort(path: Path) -> Any:
    session = _session(path, THREADS)
    return lambda x: session.run(None, {"pixel_values": x})[0]


def _median_call_ms(call: Any) -> float:
    """Median of 30 back-to-back calls after 5 warm-up calls, under bitedge's protocol (one candidate)."""
    protocol = Protocol(warmup_runs=5, warmup_seconds=0.0, min_runs=30, min_seconds=0.0)
    return measure_interleaved({"call": call}, batch=1, threads=THREADS, protocol=protocol)["call"].median_ms


def ort_conv_share(path: Path, x: np.ndarray) -> dict[str, float]:
    """onnxruntime's convolution kernels (plain, and fused with an activation or a residual add) per inference,
    and the median call of an unprofiled session timed right before (profiling slows every node down): their
    ratio is the convolutions' share of a call."""
    run = _ort(path)
    call_ms = _median_call_ms(lambda: run(x))
    kernels = ort_kernel_ms(path, x)
    return {"conv_ms": kernels.get("Conv", 0.0) + kernels.get("FusedConv", 0.0), "call_ms": call_ms}


def openvino_conv_share(compiled: Any, x: np.ndarray) -> dict[str, float]:
    """The same for an OpenVINO model compiled with PERF_COUNT: its Convolution counters over its median call."""
    conv_ms = profile(compiled, x).get("Convolution", 0.0)
    request = compiled.create_infer_request()
    return {"conv_ms": conv_ms, "call_ms": _median_call_ms(lambda: request.infer({0: x}))}


def ort_kernel_ms(path: Path, x: np.ndarray, runs: int = 30, warm_up: int = 5) -> dict[str, float]:
    """Mean ms per inference by op type, from onnxruntime's profiler (kernel time, warm-up runs left out)."""
    session = _session(path, THREADS, profile=True)
    for _ in range(warm_up + runs):
        session.run(None, {"pixel_values": x})
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    os.remove(trace)
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run, left = divmod(len(kernels), warm_up + runs)  # every run executes the same nodes, in order
    assert per_run and not left, f"{len(kernels)} kernel events do not split into {warm_up + runs} runs"
    totals: collections.Counter[str] = collections.Counter()
    for event in kernels[warm_up * per_run :]:
        totals[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
    return dict(totals.most_common())


def flows(model_name: str, work: Path) -> tuple[dict[str, Any], Any, Any, dict[str, dict[str, float]]]:
    """{name: batch -> logits} for every flow of one model, the float model, its processor, the ceiling."""
    (work / "openvino").mkdir()
    irs, model, processor = build(model_name, work / "openvino")
    core = ov.Core()
    runs: dict[str, Any] = {}

    def eager(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).logits.numpy()  # type: ignore[no-any-return]

    runs[EAGER] = eager
    import transformers

    hf = transformers.BitForImageClassification.from_pretrained(work / "openvino" / "hf").eval()
    example = torch.zeros(1, 3, *processor.input_size)
    anchors = _export_anchors(hf, example, work)
    unfolded = Path(str(next(iter(anchors.values()))))
    runs[UNFOLDED] = _ort(unfolded)
    deploy = fold(model)
    from bitedge.calibration.simulate import simulate
    from bitedge.converters.onnx import OnnxOptions
    from bitedge.model.demo import DEMO_CALIBRATION
    from bitedge.pipeline.int8 import calibration_table
    from bitedge.pipeline.options import CalibrationOptions

    table = calibration_table(
        model, deploy, processor, CalibrationOptions(DEMO_CALIBRATION, size=300), raw_pixels=False
    )
    spec = ExportSpec(processor.input_size, None, simulated=simulate(deploy, table, OnnxConverter.placement))
    for precision in (Precision.FP32, Precision.FP16, Precision.INT8):
        out = work / f"onnx-{precision}"
        out.mkdir()
        OnnxConverter().convert(deploy, out, precision=precision, spec=spec)
        runs[f"bitedge ONNX {precision}"] = _ort(out / "model.onnx")
    out = work / "onnx-fp32-native"  # --onnx-group-norm native
    out.mkdir()
    OnnxConverter().convert(deploy, out, precision=Precision.FP32, spec=replace(spec, options=OnnxOptions("native")))
    runs[ONNX_NATIVE] = _ort(out / "model.onnx")
    for name, key in (("anchor OpenVINO int8 (hand-wired NNCF)", ANCHOR), ("bitedge OpenVINO fp32", "bitedge fp32"),
                      ("bitedge OpenVINO fp16", "bitedge fp16"), ("bitedge OpenVINO int8", DEFAULT)):  # fmt: skip
        compiled = core.compile_model(irs[key], "CPU", CONFIG)
        runs[name] = lambda x, c=compiled: c(x)[0]
    profiled = core.compile_model(irs[DEFAULT], "CPU", {**CONFIG, "PERF_COUNT": True})
    x = np.zeros((1, 3, *processor.input_size), np.float32)
    bitedge_onnx = work / "onnx-fp32" / "model.onnx"
    ceiling = {
        OV_PROFILED: openvino_conv_share(profiled, x),
        UNFOLDED_PROFILED: ort_conv_share(unfolded, x),
        ONNX_PROFILED: ort_conv_share(bitedge_onnx, x),
    }
    return runs, model, processor, ceiling


def matmul_gflops(size: int = 1024, seconds: float = 2.0) -> float:
    torch.set_num_threads(2)
    a, b = torch.randn(size, size), torch.randn(size, size)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def run(model_name: str, quick: bool) -> dict[str, Any]:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        runs, model, processor, ceiling = flows(model_name, Path(tmp))
        batches = list(Batches(scan_images(DEMO_EVAL, model.config.labels), processor, batch_size=50))
        pixels = np.concatenate([b[0] for b in batches])
        result: dict[str, Any] = {
            "model": model_name,
            "input": list(processor.input_size),
            "flows": {},
            "ceiling": ceiling,
        }
        if model_name == "bitedge/demo":
            labels = np.concatenate([b[2] for b in batches])
            reference = runs[EAGER](pixels)
            for name, fn in runs.items():
                m = compare(reference, np.concatenate([fn(p[None]) for p in pixels]), labels)
                result["flows"][name] = {"top1_agreement": m.top1_agreement, "accuracy": m.artifact_accuracy}
        x = np.ascontiguousarray(pixels[:1])
        protocol = latency_protocol(quick)
        stats = measure_interleaved(
            {n: (lambda f=f: f(x)) for n, f in runs.items()}, batch=1, threads=2, protocol=protocol
        )
    for name, s in stats.items():
        entry = result["flows"].setdefault(name, {})
        entry["latency"] = s.to_dict()
        entry["vs_eager"] = paired_ratio(s, stats[EAGER])
        entry["vs_unfolded_onnx"] = paired_ratio(s, stats[UNFOLDED])
        entry["vs_anchor_openvino_int8"] = paired_ratio(s, stats["anchor OpenVINO int8 (hand-wired NNCF)"])
    # What bitedge's graphs would reach if everything but their convolutions were free: the convolutions'
    # share of a call (the two measured one right after the other) times the flow's paired ratio to the baseline.
    for name, profiled_as, key in (("bitedge OpenVINO int8", OV_PROFILED, "vs_eager"),
                                   ("bitedge ONNX fp32", ONNX_PROFILED, "vs_unfolded_onnx")):  # fmt: skip
        profiled = ceiling[profiled_as]
        profiled["conv_share"] = profiled["conv_ms"] / profiled["call_ms"]
        profiled[f"conv_only_{key}"] = profiled["conv_share"] * result["flows"][name][key]
    return result


def main() -> None:
    parser = script_arguments(__doc__)
    args = parser.parse_args()
    kept = keep_freed_memory()  # eager at its fastest: see bench.keep_freed_memory
    result = {
        "benchmark": "suite",
        "malloc_keeps_freed_memory": kept,
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "matmul_fp32_gflops_2_threads": matmul_gflops(),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "openvino": ov.__version__},
        "models": [run("bit-s-r50x1", args.quick), run("bitedge/demo", args.quick)],
    }
    _write(args.out, result)


def _write(out: Path, result: dict[str, Any]) -> None:
    plt = pyplot()
    save_json(out, "suite", result)
    lines = [
        f"# bitedge benchmark suite ({result['date']})",
        "",
        f"{machine_line(result['machine'])}; torch "
        f"{result['versions']['torch']}, onnxruntime {result['versions']['onnxruntime']}, OpenVINO "
        f"{result['versions']['openvino']}. Batch 1, 2 threads; ratios are medians of per-round ratios (rounds "
        "settle each flow before timing it). Plain fp32 "
        f"matmul on 2 threads: {result['matmul_fp32_gflops_2_threads']:.0f} GFLOP/s.",
    ]
    for model in result["models"]:
        lines += ["", f"## {model['model']} at {model['input'][0]}", ""]
        lines += ["| flow | median ms | × torch eager | × unfolded ONNX | × anchor OV int8 | top-1 agree | accuracy |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for name, e in model["flows"].items():
            parity = f"{e['top1_agreement']:.2%} | {e['accuracy']:.2f}%" if "top1_agreement" in e else "- | -"
            lines.append(
                f"| {name} | {e['latency']['median_ms']:.2f} | {e['vs_eager']:.3f} | {e['vs_unfolded_onnx']:.3f} | "
                f"{e['vs_anchor_openvino_int8']:.3f} | {parity} |"
            )
        ov, onnx_b, onnx_u = (model["ceiling"][k] for k in (OV_PROFILED, ONNX_PROFILED, UNFOLDED_PROFILED))
        lines += [
            "",
            f"Ceiling (convolution time from the runtime's profiler, call time measured right beside it): "
            f"bitedge OpenVINO int8's convolutions take "
            f"{ov['conv_ms']:.2f} of its {ov['call_ms']:.2f} ms per call ({ov['conv_share']:.0%}): with every "
            f"other op free it would run at {ov['conv_only_vs_eager']:.3f}× torch eager. In onnxruntime bitedge "
            f"ONNX fp32's Conv kernels take {onnx_b['conv_ms']:.2f} of {onnx_b['call_ms']:.2f} ms "
            f"({onnx_b['conv_share']:.0%}; the unfolded export's {onnx_u['conv_ms']:.2f} of "
            f"{onnx_u['call_ms']:.2f} ms: the same convolutions, as onnxruntime folds the export's weight "
            f"standardization itself): with every other op free it would run at "
            f"{onnx_b['conv_only_vs_unfolded_onnx']:.3f}× the unfolded export.",
        ]
    lines += ["", "Reproduce: `python benchmarks/suite.py`", ""]
    save_markdown(out, "suite", lines)
    fig, axes = plt.subplots(1, len(result["models"]), figsize=(12, 4))
    for ax, model in zip(axes, result["models"], strict=True):
        names = list(model["flows"])
        ax.barh(names, [model["flows"][n]["latency"]["median_ms"] for n in names])
        ax.set_xscale("log")
        ax.set_xlabel("median ms, batch 1 (log)")
        ax.set_title(f"{model['model']} at {model['input'][0]}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(out / "suite.png", dpi=110)


if __name__ == "__main__":
    main()
