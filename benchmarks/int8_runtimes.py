"""INT8 per runtime, paired in one run: bitedge's int8 against its own float and against each runtime's own flow,
in the configurations the runtimes advise, on whatever x86 CPU runs it (the ISA found is printed and recorded).

For BiT-R50x1 at 224 (seeded weights) and the demo model at 64, 2 threads, batch 1, timed interleaved under
bitedge's latency protocol; ratios are medians of per-round ratios. Every int8 flow calibrates on the same
images (the demo's bundled calibration split, named here explicitly; 64 of them for R50x1).

onnxruntime (CPU provider, worker spinning off so interleaved flows do not steal each other's cores):
bitedge ONNX fp32; bitedge ONNX int8 in the x86-uint8 placement for both CPUs (``--cpu avx2``: 7-bit weights;
``--cpu vnni``: 8-bit); and two anchors on bitedge's folded fp32 ONNX: onnxruntime's ``quantize_static`` with
its defaults (QDQ, int8 activations, per-tensor weights) and in the configuration its documentation advises for
x86 (QDQ, uint8 activations, per-channel int8 weights), each from the fp32 graph with GroupNorm's affine as
BatchNormalization (bitedge's form) and as Mul + Add (its form before), after ``quant_pre_process`` (shape
inference and onnxruntime's graph optimizations: the step its documentation asks for before quantizing, 2% faster
here); ratios pair with the faster of each.
OpenVINO (CPU, LATENCY hint): bitedge fp32 at f32 and,
where the CPU has it, bf16 (its default there); the anchor (transformers -> convert_model -> nncf.quantize
defaults); bitedge int8 with ``--quantizer nncf``, with bitedge's table for both CPUs (``--cpu avx2``:
x86-uint8; ``--cpu vnni``: Q/DQ on convolution inputs only, 8-bit weights), and the table in the symmetric
placement. int8 rows run at the CPU's default precision for what stays float (bf16 where the CPU has it), as
a user's would; float rows say theirs. Rows marked * are what ``--cpu auto`` builds here: the ones judged.

Each row shows achieved GFLOP/s (2 x MACs / median) and its share of the machine's peak measured in the same
run (``bitedge.bench.peak``: fp32 peak for float rows, int8 peak for int8 rows). The ceiling: the time inside
each model's convolutions and head, and in everything else (onnxruntime's profiler, OpenVINO's performance
counters; profiled runs, so their sum exceeds the median a little). Accuracy: the demo's
flows on its 400 held-out images against the float model; R50x1's (seeded weights, no labels) as SNR and
top-1 agreement against the float model on scikit-image's photos and flips of them.

    python benchmarks/int8_runtimes.py          # writes benchmarks/results/int8_runtimes.{json,md,png}
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nncf
import numpy as np
import onnxruntime as ort
import openvino as ov
import torch
from onnx_fold_vs_unfolded import _session
from openvino_vs_anchor import CONFIG, profile, transformers_ir
from results_io import (
    latency_protocol,
    machine_line,
    machine_with_isa,
    pyplot,
    save_json,
    save_markdown,
    script_arguments,
)
from suite import ort_kernel_ms

from bitedge import load_model
from bitedge.bench.peak import measure_peak
from bitedge.bench.protocol import measure_interleaved, paired_ratio
from bitedge.calibration.placement import SYMMETRIC_INT8
from bitedge.calibration.simulate import simulate
from bitedge.converters.base import ExportSpec
from bitedge.converters.onnx import OnnxConverter
from bitedge.converters.openvino import OpenVinoConverter
from bitedge.cpu import Cpu
from bitedge.fold import fold
from bitedge.model.demo import DEMO_CALIBRATION, DEMO_EVAL
from bitedge.model.presets import PRESETS
from bitedge.model.summary import count_macs
from bitedge.parity.images import Batches, scan_images
from bitedge.parity.metrics import compare
from bitedge.pipeline.int8 import calibration_batches, calibration_table
from bitedge.pipeline.options import CalibrationOptions
from bitedge.precisions import Precision

THREADS = 2
ONNX_FP32 = "bitedge ONNX fp32"
ONNX_INT8 = {cpu: f"bitedge ONNX int8 (--cpu {cpu.value})" for cpu in Cpu}
# bitedge's ONNX before GroupNorm's affine became one BatchNormalization: what that change bought
BEFORE_FP32, BEFORE_INT8 = (f"bitedge ONNX {p} (GroupNorm affine as Mul + Add, before)" for p in ("fp32", "int8 vnni"))
# onnxruntime's quantize_static on bitedge's folded fp32 ONNX, with GroupNorm's affine written both ways (its
# quantizer wraps each differently, and each configuration is faster from one of them): a column pairs every
# flow with the faster of the two rows, the strongest anchor
AFFINES = ("BatchNormalization", "Mul + Add")
ORT_DEFAULTS = {a: f"anchor: onnxruntime quantize_static (defaults; fp32 affine {a})" for a in AFFINES}
ORT_X86 = {a: f"anchor: onnxruntime quantize_static (x86 advice: U8 act., per-channel S8; fp32 affine {a})"
           for a in AFFINES}  # fmt: skip
OV_FP32, OV_BF16 = "bitedge OpenVINO fp32 (f32)", "bitedge OpenVINO fp32 (bf16)"
OV_ANCHOR = "anchor: transformers -> convert_model -> nncf.quantize (defaults)"
OV_NNCF = "bitedge OpenVINO int8 (--quantizer nncf)"
OV_INT8 = {cpu: f"bitedge OpenVINO int8 (table, --cpu {cpu.value})" for cpu in Cpu}
OV_SYM = "bitedge OpenVINO int8 (table, symmetric placement)"
INT8_FLOWS = (*ONNX_INT8.values(), BEFORE_INT8, *ORT_DEFAULTS.values(), *ORT_X86.values(), OV_ANCHOR, OV_NNCF,
              *OV_INT8.values(), OV_SYM)  # fmt: skip
ANCHORS = {"× bitedge ONNX fp32": (ONNX_FP32,), "× ORT defaults": tuple(ORT_DEFAULTS.values()),
           "× ORT x86 advice": tuple(ORT_X86.values()), "× NNCF anchor": (OV_ANCHOR,)}  # fmt: skip


@contextlib.contextmanager
def _affine_as_mul_add() -> Iterator[None]:
    """The ONNX emitter writing GroupNorm's affine as Mul + Add (bitedge's form before BatchNormalization)."""
    import bitedge.converters._onnx_graph as graph

    instance_norm = graph.as_instance_norm

    def mul_add(e: Any, n: Any, x: str, groups: int, eps: float, gamma: Any, beta: Any) -> str:
        shape = [int(d) for d in n.meta["tensor_meta"].shape]
        grouped = e.node("Reshape", [x, e.const(f"{n.name}.grouped", np.array([0, groups, -1]))], f"{n.name}/g")
        ones, zeros = (e.const(f"{n.name}.{v}", f(groups, np.float32), keep_fp32=True)
                       for v, f in (("ones", np.ones), ("zeros", np.zeros)))  # fmt: skip
        normed = e.node("InstanceNormalization", [grouped, ones, zeros], f"{n.name}/in", epsilon=eps)
        back = e.node("Reshape", [normed, e.const(f"{n.name}.shape", np.array([0, *shape[1:]]))], f"{n.name}/back")
        scale = e.const(f"{n.name}.gamma", gamma.reshape(-1, 1, 1), keep_fp32=True)
        shift = e.const(f"{n.name}.beta", beta.reshape(-1, 1, 1), keep_fp32=True)
        return str(e.node("Add", [e.node("Mul", [back, scale], f"{n.name}/scale"), shift], n.name))

    graph.as_instance_norm = mul_add
    try:
        yield
    finally:
        graph.as_instance_norm = instance_norm


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of (1, 3, H, W) batches."""

    def __init__(self, samples: list[np.ndarray]) -> None:
        self.samples = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self.samples, None)
        return None if sample is None else {"pixel_values": sample}


def _bf16_available() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def build(model_name: str, work: Path, calibration_size: int) -> tuple[dict[str, Any], dict[str, Any], Any, Any]:
    """{flow: batch -> logits}, {flow: conv-ceiling source}, the float model and its processor."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    model = load_model(model_name)
    processor = model.image_processor if model_name == "bitedge/demo" else PRESETS[model_name].image_processor()
    deploy = fold(model)
    options = CalibrationOptions(images=DEMO_CALIBRATION, size=calibration_size)
    table = calibration_table(model, deploy, processor, options, raw_pixels=False)
    samples = list(calibration_batches(processor, options, raw_pixels=False))
    flows: dict[str, Any] = {}
    profiled: dict[str, Any] = {}

    def onnx(name: str, precision: Precision, cpu: Cpu | None = None) -> Path:
        out = work / "".join(c if c.isalnum() else "_" for c in name)
        out.mkdir()
        placement = OnnxConverter().int8_placement(cpu) if cpu else None
        simulated = simulate(deploy, table, placement) if placement else None
        spec = ExportSpec(processor.input_size, 1, simulated=simulated, placement=placement)
        OnnxConverter().convert(deploy, out, precision=precision, spec=spec)
        return out / "model.onnx"

    paths = {ONNX_FP32: onnx(ONNX_FP32, Precision.FP32)}
    for cpu, name in ONNX_INT8.items():
        paths[name] = onnx(name, Precision.INT8, cpu)
    with _affine_as_mul_add():
        paths[BEFORE_FP32], paths[BEFORE_INT8] = (
            onnx(BEFORE_FP32, Precision.FP32),
            onnx(BEFORE_INT8, Precision.INT8, Cpu.VNNI),
        )
    sources = {AFFINES[0]: paths[ONNX_FP32], AFFINES[1]: paths[BEFORE_FP32]}
    x86 = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, "per_channel": True}
    for affine, source in sources.items():
        prepared = work / f"prepared{len(paths)}.onnx"
        quant_pre_process(str(source), str(prepared))
        for name, config in ((ORT_DEFAULTS[affine], {}), (ORT_X86[affine], x86)):
            paths[name] = work / f"anchor{len(paths)}.onnx"
            quantize_static(str(prepared), str(paths[name]), _Reader(samples), quant_format=QuantFormat.QDQ, **config)
    for name, path in paths.items():
        session = _session(path, THREADS)
        flows[name] = lambda x, s=session: s.run(None, {"pixel_values": x})[0]
        profiled[name] = ("onnxruntime", path)

    core = ov.Core()
    irs: dict[str, Any] = {}
    ov_flows: list[tuple[str, str | None, Any]] = [(OV_FP32, None, None), (OV_NNCF, "nncf", None)]
    ov_flows += [(OV_INT8[cpu], "bitedge", OpenVinoConverter().int8_placement(cpu)) for cpu in Cpu]
    ov_flows += [(OV_SYM, "bitedge", SYMMETRIC_INT8)]
    for name, quantizer, placement in ov_flows:
        out = work / "".join(c if c.isalnum() else "_" for c in name)
        out.mkdir()
        simulated = simulate(deploy, table, placement) if placement else None
        spec = ExportSpec(
            processor.input_size,
            1,
            simulated=simulated,
            placement=placement,
            calibration=lambda: samples,
            quantizer=quantizer,
        )
        precision = Precision.INT8 if quantizer else Precision.FP32
        OpenVinoConverter().convert(deploy, out, precision=precision, spec=spec)
        irs[name] = core.read_model(str(out / "model.xml"))
    anchor_fp32 = transformers_ir(model, samples[0], work)
    irs[OV_ANCHOR] = nncf.quantize(anchor_fp32, nncf.Dataset(samples), subset_size=len(samples))
    for name, ir in irs.items():
        hint = {} if name in INT8_FLOWS else {"INFERENCE_PRECISION_HINT": "f32"}
        compiled = core.compile_model(ir, "CPU", {**CONFIG, **hint})
        flows[name] = lambda x, c=compiled: c(x)[0]
        profiled[name] = ("openvino", core.compile_model(ir, "CPU", {**CONFIG, **hint, "PERF_COUNT": True}))
    if _bf16_available():
        compiled = core.compile_model(irs[OV_FP32], "CPU", {**CONFIG, "INFERENCE_PRECISION_HINT": "bf16"})
        flows[OV_BF16] = lambda x, c=compiled: c(x)[0]
    return flows, profiled, model, processor


CONV_OPS = ("Conv", "FusedConv", "QLinearConv", "Gemm", "QGemm", "Convolution", "FullyConnected")


def op_ms(source: tuple[str, Any], x: np.ndarray) -> dict[str, float]:
    """Milliseconds per call by op type (onnxruntime's profiler, OpenVINO's performance counters)."""
    kind, handle = source
    return ort_kernel_ms(handle, x) if kind == "onnxruntime" else profile(handle, x)


def eval_inputs(model_name: str, processor: Any, labels: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """The demo's 400 held-out digits (with labels); for R50x1, scikit-image's photos and their mirror images."""
    if model_name == "bitedge/demo":
        batches = list(Batches(scan_images(DEMO_EVAL, labels), processor, batch_size=50))
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[2] for b in batches])
    import skimage.data
    from PIL import Image

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    images = [Image.fromarray(p) for p in photos]
    images += [i.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for i in images]
    return np.concatenate([processor(i)["pixel_values"] for i in images]).astype(np.float32), None


def run(model_name: str, quick: bool) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    calibration_size = 64 if model_name != "bitedge/demo" else 200
    with tempfile.TemporaryDirectory() as tmp:
        flows, profiled, model, processor = build(model_name, Path(tmp), calibration_size)
        pixels, labels = eval_inputs(model_name, processor, list(model.config.labels))
        with torch.no_grad():
            reference = model(torch.from_numpy(pixels)).logits.numpy()
        accuracy = {}
        for name, fn in flows.items():
            m = compare(reference, np.concatenate([fn(p[None]) for p in pixels]), labels)
            accuracy[name] = {"top1_agreement": m.top1_agreement, "snr_db": m.snr_db, "cosine": m.cosine_mean,
                              "accuracy": m.artifact_accuracy}  # fmt: skip
        x = np.ascontiguousarray(pixels[:1])
        protocol = latency_protocol(quick)
        peak = measure_peak(THREADS)
        stats = measure_interleaved({n: (lambda f=f: f(x)) for n, f in flows.items()}, batch=1, threads=THREADS,
                                    protocol=protocol)  # fmt: skip
        ops = {name: op_ms(source, x) for name, source in profiled.items()}
    gflop = 2 * count_macs(model.config, processor.input_size[0]) / 1e9
    strongest = {label: min(names, key=lambda n: stats[n].median_ms) for label, names in ANCHORS.items()}
    rows: dict[str, Any] = {}
    for name, s in stats.items():
        achieved = gflop / (s.median_ms / 1e3)
        share = peak.share(achieved, int8=name in INT8_FLOWS)
        rows[name] = {
            "latency": s.to_dict(), "gflops": achieved, "peak_share": share, **accuracy[name],
            "ratios": {label: paired_ratio(s, stats[strongest[label]]) for label in ANCHORS},
            "conv_ms": sum(v for k, v in ops[name].items() if k in CONV_OPS) if name in ops else None,
            "other_ms": sum(v for k, v in ops[name].items() if k not in CONV_OPS) if name in ops else None,
            "ms_by_op": ops.get(name),
        }  # fmt: skip
    return {
        "model": model_name,
        "input": list(processor.input_size),
        "gflop_per_image": gflop,
        "calibration_images": calibration_size,
        "bf16": _bf16_available(),
        "peak": peak.__dict__,
        "flows": rows,
        "strongest_anchors": strongest,
        "versions": {"onnxruntime": ort.__version__, "openvino": ov.__version__, "nncf": nncf.__version__},
    }


def markdown(results: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    isa = machine["isa"]
    lines = ["# INT8 per runtime: bitedge against float and against each runtime's own flow", "",
             f"Machine: {machine_line(machine)}. ISA found: **{isa}** (`bitedge.cpu.detect_cpu`: what `--cpu auto` "
             "picks here). 2 threads, batch 1, one run; ratios are paired (per-round medians). Rows marked * are "
             "what `--cpu auto` builds on this CPU.", ""]  # fmt: skip
    for r in results:
        peak = r["peak"]
        int8_peak = f"{peak['int8_gops']:.0f} GOP/s int8 ({peak['int8_by']})" if peak["int8_gops"] else "int8 unknown"
        lines += [
            f"## {r['model']} at {r['input'][0]} px ({r['gflop_per_image']:.2f} GFLOP per image)", "",
            f"Peak measured in this run: {peak['fp32_gflops']:.0f} GFLOP/s fp32 ({peak['fp32_by']}), {int8_peak}."
            + ("" if r["bf16"] else " This CPU has no bf16: OpenVINO's default precision here is f32, so no bf16 row."),
            "",
            "| flow | median ms | " + " | ".join(ANCHORS) + " | GFLOP/s | % of peak | conv ms | other ms "
            "| top-1 agree | SNR dB |",
            "|---|---|" + "---|" * len(ANCHORS) + "---|---|---|---|---|---|",
        ]  # fmt: skip
        for name, f in r["flows"].items():
            ratios = " | ".join(f"{v:.3f}" for v in f["ratios"].values())
            share = "-" if f["peak_share"] is None else f"{100 * f['peak_share']:.0f}%"
            conv = "- | -" if f["conv_ms"] is None else f"{f['conv_ms']:.1f} | {f['other_ms']:.1f}"
            mark = " *" if name in (ONNX_INT8[Cpu(isa)], OV_INT8[Cpu(isa)]) else ""
            lines.append(
                f"| {name}{mark} | {f['latency']['median_ms']:.1f} | {ratios} | {f['gflops']:.0f} | {share} | {conv} "
                f"| {100 * f['top1_agreement']:.2f}% | {f['snr_db']:.1f} |"
            )
        lines += ["", *targets(r, Cpu(isa)), ""]
    return lines


def targets(result: dict[str, Any], isa: Cpu) -> list[str]:
    """Issue 32's targets, judged on the rows ``--cpu auto`` builds on this CPU."""
    flows = result["flows"]
    onnx, openvino = flows[ONNX_INT8[isa]]["ratios"], flows[OV_INT8[isa]]["ratios"]
    checks = [
        ("ONNX int8 ≤ 0.85× quantize_static in onnxruntime's x86 advice", onnx["× ORT x86 advice"], 0.85),
        ("ONNX int8 ≤ 0.85× quantize_static defaults", onnx["× ORT defaults"], 0.85),
        ("OpenVINO int8 from the table ≤ 1.0× the NNCF anchor", openvino["× NNCF anchor"], 1.0),
    ]
    if isa is Cpu.VNNI:
        checks.append(("ONNX int8 ≤ 0.45× ONNX fp32 (VNNI)", onnx["× bitedge ONNX fp32"], 0.45))
    strongest = "; ".join(f"{label}: {name}" for label, name in result["strongest_anchors"].items() if "ORT" in label)
    return [f"Columns pair with the faster anchor of each pair ({strongest}).", ""] + [
        f"- {what}: **{value:.3f}×**, {'met' if value <= limit else 'NOT met'}" for what, value, limit in checks
    ]


def plot(results: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4.5))
    for ax, r in zip(np.atleast_1d(axes), results, strict=True):
        names = list(r["flows"])
        ax.barh(
            [n.replace("anchor: ", "")[:48] for n in names],
            [r["flows"][n]["ratios"]["× bitedge ONNX fp32"] for n in names],
        )
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("median latency × bitedge ONNX fp32 (paired)")
        ax.set_title(f"{r['model']} @ {r['input'][0]} px")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = script_arguments(__doc__)
    parser.add_argument("--models", nargs="+", default=["bit-m-r50x1", "bitedge/demo"])
    args = parser.parse_args()
    machine = machine_with_isa()
    results = [run(m, args.quick) for m in args.models]
    save_json(args.out, "int8_runtimes", {"machine": machine, "results": results})
    save_markdown(args.out, "int8_runtimes", markdown(results, machine))
    plot(results, args.out / "int8_runtimes.png")


if __name__ == "__main__":
    main()
