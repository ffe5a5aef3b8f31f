"""Where onnxruntime's int8 BiT spends the time outside its convolutions, and what other graph forms cost.

bitedge's ONNX int8 (the placement ``--cpu auto`` builds here) against its own fp32 and against the same graph
with one thing changed, each built by bitedge's emitter (or, for the stem, rewritten after it), timed
interleaved in one run under the latency protocol, 2 threads, batch 1, ratios paired per round:

- each layer its own Q/DQ pair (bitedge before it shared one between a stage's first conv and its shortcut);
- GroupNorm as LayerNormalization over the (N, G, -1) view (a threaded kernel, where InstanceNormalization's is
  not) instead of InstanceNormalization;
- GroupNorm as per-channel statistics (OpenVINO's form) and as one-pass statistics whose every full-size op is
  a reduction or elementwise, so onnxruntime's transpose optimizer can keep it in the convolutions' NHWC layout
  and drop the Transposes around them;
- GroupNorm as the native GroupNormalization-21 (onnxruntime expands its function body);
- the stem's 7x7 stride-2 convolution on 3 channels as a 4x4 stride-1 one on a space-to-depth input (12
  channels), rewritten in the saved graph: the same products, so the same logits.

Each row's logits are compared with bitedge's int8 on scikit-image photos (SNR; "exact" when equal), and its
median is split in the proportions onnxruntime's profiler finds into the convolutions and head (QLinearConv
and QGemm in int8) and everything else, the glue. The glue of bitedge's graph divided by fp32's median is a
floor on int8 × fp32 with these kernels: the ratio reachable if the integer convolutions took no time at all.

    python benchmarks/onnx_int8_glue.py          # writes benchmarks/results/onnx_int8_glue.{json,md,png}
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from int8_runtimes import CONV_OPS, THREADS, eval_inputs
from onnx import helper, numpy_helper
from onnx_fold_vs_unfolded import _session
from results_io import latency_protocol, machine_line, pyplot, save_json, save_markdown, script_arguments
from suite import ort_kernel_ms

import bitedge.converters._onnx_graph as graph
from bitedge import load_model
from bitedge.bench.protocol import machine_info, measure_interleaved, paired_ratio
from bitedge.calibration.simulate import simulate
from bitedge.converters._onnx_group_norm import as_instance_norm
from bitedge.converters.base import ExportSpec
from bitedge.converters.onnx import OnnxConverter, OnnxOptions
from bitedge.cpu import detect_cpu
from bitedge.fold import fold
from bitedge.model.demo import DEMO_CALIBRATION
from bitedge.model.presets import PRESETS
from bitedge.parity.metrics import compare
from bitedge.pipeline.int8 import calibration_table
from bitedge.pipeline.options import CalibrationOptions
from bitedge.precisions import Precision

MODEL = "bit-m-r50x1"
FP32, INT8 = "bitedge ONNX fp32", "bitedge ONNX int8"


@contextlib.contextmanager
def _patched(name: str, value: Any) -> Iterator[None]:
    original = getattr(graph, name)
    setattr(graph, name, value)
    try:
        yield
    finally:
        setattr(graph, name, original)


def _unshared() -> contextlib.AbstractContextManager[None]:
    """Every quantized layer its own Q/DQ pair on its input (bitedge's graph before they were shared)."""
    shared = graph._qdq

    def own_pair(e: Any, value: str, name: str, q: Any) -> str:
        e.quantized.clear()
        return shared(e, value, name, q)

    return _patched("_qdq", own_pair)


def _layer_norm(e: Any, n: Any, x: str, groups: int, eps: float, gamma: Any, beta: Any) -> str:
    """bitedge's GroupNorm chain (``as_instance_norm``) with its InstanceNormalization, over the (N, G, -1) view,
    swapped for a LayerNormalization over the same view's last axis: the same statistics, a threaded kernel."""
    out = as_instance_norm(e, n, x, groups, eps, gamma, beta)
    index, instance = next((i, node) for i, node in enumerate(e.nodes) if node.op_type == "InstanceNormalization"
                           and node.output[0] == f"{n.name}/in")  # fmt: skip
    channels, height, width = n.meta["tensor_meta"].shape[1:]
    size = channels // groups * height * width
    ones = e.const(f"layer_norm.ones.{size}", np.ones(size, np.float32), keep_fp32=True)
    e.nodes[index] = helper.make_node("LayerNormalization", [instance.input[0], ones], list(instance.output),
                                      name=instance.name, epsilon=eps, axis=-1)  # fmt: skip
    return out


def _one_pass(e: Any, n: Any, x: str, groups: int, eps: float, gamma: Any, beta: Any) -> str:
    """GroupNorm from per-channel sums of x and x^2 (ReduceMean, ReduceSumSquare over H, W), finished per group on
    (N, G, C/G) tensors, then x * scale + shift: every full-size op is a reduction or elementwise."""
    channels, height, width = n.meta["tensor_meta"].shape[1:]
    name, per_group = n.name, channels // groups
    hw, axis = e.const(f"{name}.hw", np.array([2, 3])), e.const(f"{name}.axis", np.array([2]))
    to_groups = e.const(f"{name}.to_groups", np.array([0, groups, per_group]))
    to_channels = e.const(f"{name}.to_channels", np.array([0, channels, 1, 1]))
    grouped_mean = e.node("ReduceMean", [x, hw], f"{name}/mean_c", keepdims=1)
    mean = e.node("ReduceMean", [e.node("Reshape", [grouped_mean, to_groups], f"{name}/mean_cg"), axis], f"{name}/m")
    squares = e.node("ReduceSumSquare", [x, hw], f"{name}/sq_c", keepdims=1)
    total = e.node("ReduceSum", [e.node("Reshape", [squares, to_groups], f"{name}/sq_cg"), axis], f"{name}/sq")
    count = e.const(f"{name}.inverse_count", np.array(1.0 / (per_group * height * width), np.float32), keep_fp32=True)
    second = e.node("Mul", [total, count], f"{name}/ex2")
    variance = e.node("Sub", [second, e.node("Mul", [mean, mean], f"{name}/m2")], f"{name}/var")
    eps_c = e.const(f"{name}.eps", np.array(eps, np.float32), keep_fp32=True)
    std = e.node("Sqrt", [e.node("Add", [variance, eps_c], f"{name}/var_eps")], f"{name}/std")
    gamma_g = e.const(f"{name}.gamma", gamma.reshape(1, groups, per_group), keep_fp32=True)
    beta_g = e.const(f"{name}.beta", beta.reshape(1, groups, per_group), keep_fp32=True)
    scale_g = e.node("Div", [gamma_g, std], f"{name}/scale_g")
    shift_g = e.node("Sub", [beta_g, e.node("Mul", [mean, scale_g], f"{name}/ms")], f"{name}/shift_g")
    scale = e.node("Reshape", [scale_g, to_channels], f"{name}/scale")
    shift = e.node("Reshape", [shift_g, to_channels], f"{name}/shift")
    return e.node("Add", [e.node("Mul", [x, scale], f"{name}/scaled"), shift], name)


def space_to_depth_stem(source: Path, target: Path) -> None:
    """Rewrite the stem's 7x7 stride-2 convolution (pads 3) as Pad -> SpaceToDepth(2) -> a 4x4 stride-1 one."""
    model = onnx.load(str(source))
    nodes = list(model.graph.node)
    constants = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in nodes if n.op_type == "Conv")
    weight = next(n for n in nodes if n.output[0] == conv.input[1])
    w = numpy_helper.to_array(constants[weight.input[0]])
    padded = np.zeros((*w.shape[:2], 8, 8), w.dtype)
    padded[:, :, :7, :7] = w
    blocks = [padded[:, :, dy::2, dx::2] for dy in range(2) for dx in range(2)]  # SpaceToDepth's channel order
    constants[weight.input[0]].CopyFrom(numpy_helper.from_array(np.concatenate(blocks, axis=1), weight.input[0]))
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 0, 3, 3, 0, 0, 3, 3]), "stem.pads"))
    stem = [helper.make_node("Pad", ["pixel_values", "stem.pads"], ["stem/padded"]),
            helper.make_node("SpaceToDepth", ["stem/padded"], ["stem/s2d"], blocksize=2)]  # fmt: skip
    for node in nodes:
        node.input[:] = ["stem/s2d" if i == "pixel_values" else i for i in node.input]
    for attribute, value in (("kernel_shape", [4, 4]), ("strides", [1, 1]), ("pads", [0, 0, 0, 0])):
        next(a for a in conv.attribute if a.name == attribute).ints[:] = value
    del model.graph.node[:]
    model.graph.node.extend(stem + nodes)
    onnx.save(model, str(target))


def build(work: Path) -> tuple[dict[str, Path], Any, Any]:
    model = load_model(MODEL)
    processor = PRESETS[MODEL].image_processor()
    deploy = fold(model)
    table = calibration_table(model, deploy, processor, CalibrationOptions(images=DEMO_CALIBRATION, size=64),
                              raw_pixels=False)  # fmt: skip
    placement = OnnxConverter().int8_placement(detect_cpu())
    simulated = simulate(deploy, table, placement)

    def onnx_model(name: str, precision: Precision, group_norm: str = "instance") -> Path:
        out = work / "".join(c if c.isalnum() else "_" for c in name)
        out.mkdir()
        int8 = precision == Precision.INT8
        spec = ExportSpec(processor.input_size, 1, simulated=simulated if int8 else None,
                          placement=placement if int8 else None,
                          options=OnnxOptions(group_norm=group_norm))  # fmt: skip
        OnnxConverter().convert(deploy, out, precision=precision, spec=spec)
        return out / "model.onnx"

    paths = {FP32: onnx_model(FP32, Precision.FP32), INT8: onnx_model(INT8, Precision.INT8)}
    with _unshared():
        paths["each layer its own Q/DQ pair (before)"] = onnx_model("unshared", Precision.INT8)
    forms: dict[str, tuple[str, Callable[..., str] | None]] = {
        "GroupNorm as LayerNormalization": ("instance", _layer_norm),
        "GroupNorm as per-channel statistics (OpenVINO's form)": ("channel-stats", None),
        "GroupNorm as one-pass statistics (NHWC-friendly)": ("instance", _one_pass),
        "GroupNorm as GroupNormalization-21": ("native", None),
    }
    for name, (form, emitter) in forms.items():
        with _patched("as_instance_norm", emitter) if emitter else contextlib.nullcontext():
            paths[name] = onnx_model(name, Precision.INT8, form)
    paths["stem as space-to-depth, 4x4 stride 1"] = work / "s2d.onnx"
    space_to_depth_stem(paths[INT8], paths["stem as space-to-depth, 4x4 stride 1"])
    return paths, model, processor


def run(quick: bool) -> dict[str, Any]:
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        paths, _, processor = build(Path(tmp))
        sessions = {name: _session(path, THREADS) for name, path in paths.items()}
        pixels, _ = eval_inputs(MODEL, processor, [])
        outputs = {n: np.concatenate([s.run(None, {"pixel_values": p[None]})[0] for p in pixels])
                   for n, s in sessions.items()}  # fmt: skip
        x = np.ascontiguousarray(pixels[:1])
        protocol = latency_protocol(quick)
        stats = measure_interleaved({n: (lambda s=s: s.run(None, {"pixel_values": x})) for n, s in sessions.items()},
                                    batch=1, threads=THREADS, protocol=protocol)  # fmt: skip
        ops = {name: ort_kernel_ms(path, x) for name, path in paths.items()}
    rows = {}
    for name, s in stats.items():
        # the profile's split applied to the median: a profiled run is slower than a timed one, and by how much
        # varies with whatever else the machine runs while it is profiled
        profiled = sum(ops[name].values())
        kernels = s.median_ms * sum(v for k, v in ops[name].items() if k in CONV_OPS) / profiled
        same = np.array_equal(outputs[name], outputs[INT8])
        rows[name] = {
            "latency": s.to_dict(), "× int8": paired_ratio(s, stats[INT8]), "× fp32": paired_ratio(s, stats[FP32]),
            "kernels_ms": kernels, "glue_ms": s.median_ms - kernels, "ms_by_op": ops[name], "profiled_ms": profiled,
            "vs_int8": "exact" if same else f"{compare(outputs[INT8], outputs[name], None).snr_db:.1f} dB",
        }  # fmt: skip
    glue = rows[INT8]["glue_ms"]
    return {"model": MODEL, "input": list(processor.input_size), "cpu": detect_cpu().value, "flows": rows,
            "floor": {"glue_ms": glue, "fp32_median_ms": stats[FP32].median_ms,
                      "int8_x_fp32_if_convolutions_took_no_time": glue / stats[FP32].median_ms},
            "versions": {"onnxruntime": ort.__version__}}  # fmt: skip


def markdown(result: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    floor = result["floor"]
    lines = [
        "# onnxruntime int8: the time outside the convolutions, and other graph forms", "",
        f"Machine: {machine_line(machine)}; placement for `--cpu {result['cpu']}`. {result['model']} at "
        f"{result['input'][0]} px, 2 threads, batch 1, one run, ratios paired per round; onnxruntime "
        f"{result['versions']['onnxruntime']}. 'conv + head' is the profiled time in the convolutions and the "
        "classifier (QLinearConv and QGemm in int8), 'glue' everything else: the profiler's split of each row's time, "
        "applied to its median.", "",
        "| flow | median ms | × bitedge int8 | × fp32 | conv + head ms | glue ms | logits vs bitedge int8 |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, f in result["flows"].items():
        lines.append(f"| {name} | {f['latency']['median_ms']:.1f} | {f['× int8']:.3f} | {f['× fp32']:.3f} "
                     f"| {f['kernels_ms']:.1f} | {f['glue_ms']:.1f} | {f['vs_int8']} |")  # fmt: skip
    top = sorted(result["flows"][INT8]["ms_by_op"].items(), key=lambda kv: -kv[1])
    lines += ["", "bitedge int8 by op (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in top if v >= 0.05), "",
              f"Floor: bitedge int8's glue is {floor['glue_ms']:.1f} ms, **"
              f"{floor['int8_x_fp32_if_convolutions_took_no_time']:.3f}× fp32's median** "
              f"({floor['fp32_median_ms']:.1f} ms): int8 × fp32 cannot go below that with these kernels.",
              ""]  # fmt: skip
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names = list(result["flows"])
    fig, ax = plt.subplots(figsize=(9, 4.5))
    glue = [result["flows"][n]["glue_ms"] for n in names]
    kernels = [result["flows"][n]["kernels_ms"] for n in names]
    ax.barh(names, kernels, label="convolutions and head")
    ax.barh(names, glue, left=kernels, label="everything else (glue)")
    ax.set_xlabel("ms per image (each median, split as the profiler splits it)")
    ax.set_title(f"{result['model']} @ {result['input'][0]} px: onnxruntime int8 graph forms")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = script_arguments(__doc__)
    args = parser.parse_args()
    machine = machine_info()
    result = run(args.quick)
    save_json(args.out, "onnx_int8_glue", {"machine": machine, "result": result})
    save_markdown(args.out, "onnx_int8_glue", markdown(result, machine))
    plot(result, args.out / "onnx_int8_glue.png")


if __name__ == "__main__":
    main()
