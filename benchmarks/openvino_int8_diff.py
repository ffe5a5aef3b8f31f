"""What NNCF's OpenVINO int8 does differently from bitedge's table, layer by layer, on the CPU that runs this.

For BiT-R50x1 at 224 (seeded weights; 64 of the demo's calibration images for every flow), 2 threads, batch 1,
compiled at the CPU's default precision (a user's setting): the hand-wired anchor (transformers ->
convert_model -> nncf.quantize defaults), bitedge's ``--quantizer nncf`` route, and bitedge's table in each
placement the openvino target can build (``--cpu avx2``: x86-uint8; ``--cpu vnni``: conv inputs only, 8-bit
weights) plus the symmetric one and NNCF's pattern on the table (conv inputs only, uint8, 8-bit weights).
For each: where the IR's FakeQuantize nodes sit (what consumes them), the
precision every convolution runs at in the compiled model (OpenVINO's runtime info: input and output
precision), milliseconds by layer type and kernel (performance counters), and the median latency paired
against the anchor (bitedge's latency protocol). ``--cpu`` placements are built whatever CPU runs this; the
ISA found is printed and recorded.

    python benchmarks/openvino_int8_diff.py     # writes benchmarks/results/openvino_int8_diff.{json,md,png}
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path
from typing import Any

import nncf
import numpy as np
import openvino as ov
import torch
from openvino_vs_anchor import CONFIG, transformers_ir
from results_io import (
    latency_protocol,
    machine_line,
    machine_with_isa,
    pyplot,
    save_json,
    save_markdown,
    script_arguments,
)

from bitedge import load_model
from bitedge.bench.protocol import measure_interleaved, paired_ratio
from bitedge.calibration.placement import SYMMETRIC_INT8, IntType, Placement
from bitedge.calibration.simulate import simulate
from bitedge.converters.base import ExportSpec
from bitedge.converters.openvino import OpenVinoConverter
from bitedge.cpu import Cpu
from bitedge.fold import fold
from bitedge.model.demo import DEMO_CALIBRATION
from bitedge.model.presets import PRESETS
from bitedge.pipeline.int8 import calibration_batches, calibration_table
from bitedge.pipeline.options import CalibrationOptions
from bitedge.precisions import Precision

MODEL = "bit-m-r50x1"
# NNCF's pattern on the table: Q/DQ on convolution inputs only. Measured faster and more accurate than
# x86-uint8-vnni on an AMX Xeon, but not bitedge's: OpenVINO's CPU plugin returns wrong values for outputs added
# on float convolution outputs it fuses in place (a residual Add as a sum post-op), so diagnose cannot tap it.
INPUTS_ONLY = Placement("conv-inputs-uint8", IntType.UINT8, weight_bits=8)
ANCHOR = "anchor: transformers -> convert_model -> nncf.quantize"


def build(work: Path) -> dict[str, Any]:
    """{flow: its IR}: the anchor, bitedge's nncf route and the table in every placement."""
    model = load_model(MODEL)
    processor = PRESETS[MODEL].image_processor()
    deploy = fold(model)
    options = CalibrationOptions(images=DEMO_CALIBRATION, size=64)
    table = calibration_table(model, deploy, processor, options, raw_pixels=False)
    samples = list(calibration_batches(processor, options, raw_pixels=False))
    converter = OpenVinoConverter()
    flows: list[tuple[str, Any, str]] = [("bitedge --quantizer nncf", None, "nncf")]
    flows += [(f"bitedge table, --cpu {cpu.value} ({converter.int8_placement(cpu).name})",
               converter.int8_placement(cpu), "bitedge") for cpu in Cpu]  # fmt: skip
    flows += [
        ("bitedge table, symmetric-int8", SYMMETRIC_INT8, "bitedge"),
        ("bitedge table, conv inputs only, uint8, 8-bit weights (not used)", INPUTS_ONLY, "bitedge"),
    ]
    core, irs = ov.Core(), {}
    for name, placement, quantizer in flows:
        out = work / str(len(irs))
        out.mkdir()
        simulated = simulate(deploy, table, placement) if placement else None
        spec = ExportSpec(processor.input_size, 1, simulated=simulated, placement=placement,
                          calibration=lambda: samples, quantizer=quantizer)  # fmt: skip
        converter.convert(deploy, out, precision=Precision.INT8, spec=spec)
        irs[name] = core.read_model(str(out / "model.xml"))
    fp32 = transformers_ir(model, samples[0], work)
    irs[ANCHOR] = nncf.quantize(fp32, nncf.Dataset(samples), subset_size=len(samples))
    return {"irs": irs, "input": samples[0]}


def fake_quantizes(ir: Any) -> dict[str, Any]:
    """How many FakeQuantize nodes the IR has, their levels, and what consumes them."""
    nodes = [op for op in ir.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    consumers: collections.Counter[str] = collections.Counter()
    for op in nodes:
        for target in op.output(0).get_target_inputs():
            consumers[target.get_node().get_type_name()] += 1
    levels = collections.Counter(int(op.get_attributes()["levels"]) for op in nodes)
    return {"count": len(nodes), "levels": dict(levels), "consumers": dict(consumers.most_common())}


def convolutions(compiled: Any) -> list[str]:
    """Each convolution of the compiled model, in order, as "input -> output" runtime precisions."""
    rows = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) == "Convolution":
            rows.append(f"{info['runtimePrecision'].astype(str)} -> {info['outputPrecisions'].astype(str)}")
    return rows


def counters(compiled: Any, x: np.ndarray, runs: int = 30) -> dict[str, float]:
    """Mean ms per inference by "layer type: kernel" (OpenVINO's performance counters, after warm-up)."""
    request = compiled.create_infer_request()
    for _ in range(5):
        request.infer({0: x})
    totals: collections.Counter[str] = collections.Counter()
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            totals[f"{info.node_type}: {info.exec_type}"] += info.real_time.total_seconds() * 1e3 / runs
    return {k: round(v, 3) for k, v in totals.most_common() if v >= 0.01}


def run(quick: bool) -> dict[str, Any]:
    torch.set_num_threads(2)
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        built = build(Path(tmp))
        x = built["input"]
        compiled = {name: core.compile_model(ir, "CPU", CONFIG) for name, ir in built["irs"].items()}
        flows: dict[str, Any] = {}
        for name, ir in built["irs"].items():
            profiled = core.compile_model(ir, "CPU", {**CONFIG, "PERF_COUNT": True})
            flows[name] = {"fake_quantize": fake_quantizes(ir), "convolutions": convolutions(compiled[name]),
                           "ms_by_kernel": counters(profiled, x)}  # fmt: skip
        protocol = latency_protocol(quick)
        stats = measure_interleaved({n: (lambda c=c: c({0: x})) for n, c in compiled.items()}, batch=1, threads=2,
                                    protocol=protocol)  # fmt: skip
    for name, s in stats.items():
        flows[name]["latency"] = s.to_dict()
        flows[name]["x_anchor"] = paired_ratio(s, stats[ANCHOR])
    return {"model": MODEL, "precision": core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string(),
            "openvino": ov.__version__, "nncf": nncf.__version__, "flows": flows}  # fmt: skip


def markdown(result: dict[str, Any], machine: dict[str, Any]) -> list[str]:
    lines = [
        "# OpenVINO int8: NNCF's placement against bitedge's table, layer by layer", "",
        f"Machine: {machine_line(machine)}. ISA found: **{machine['isa']}**. {result['model']} at 224 px, batch 1, "
        f"2 threads, the CPU's default inference precision ({result['precision']}) for what stays float; OpenVINO "
        f"{result['openvino']}, NNCF {result['nncf']}.", "",
        "| flow | median ms | × anchor | FakeQuantize (levels) | FakeQuantize feeds | convolutions run as |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, f in result["flows"].items():
        fq = f["fake_quantize"]
        feeds = ", ".join(f"{k} {v}" for k, v in fq["consumers"].items())
        convs = ", ".join(f"{v}× {k}" for k, v in collections.Counter(f["convolutions"]).most_common())
        levels = ", ".join(str(k) for k in fq["levels"])
        lines.append(f"| {name} | {f['latency']['median_ms']:.2f} | {f['x_anchor']:.3f} | {fq['count']} ({levels}) "
                     f"| {feeds} | {convs} |")  # fmt: skip
    lines += ["", "Milliseconds by layer type and kernel (performance counters, profiled runs; largest first):", ""]
    for name, f in result["flows"].items():
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(f["ms_by_kernel"].items())[:10])
        lines += [f"- **{name}**: {top}"]
    return [*lines, ""]


def plot(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    names = list(result["flows"])
    kinds = sorted({k.split(":")[0] for f in result["flows"].values() for k in f["ms_by_kernel"]})
    fig, ax = plt.subplots(figsize=(10, 4.5))
    left = np.zeros(len(names))
    for kind in kinds:
        ms = np.array([sum(v for k, v in result["flows"][n]["ms_by_kernel"].items() if k.split(":")[0] == kind)
                       for n in names])  # fmt: skip
        if ms.max() >= 0.2:
            ax.barh([n[:60] for n in names], ms, left=left, label=kind)
            left += ms
    ax.set_xlabel("ms per inference by layer type (performance counters)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = script_arguments(__doc__)
    args = parser.parse_args()
    machine = machine_with_isa()
    result = run(args.quick)
    save_json(args.out, "openvino_int8_diff", {"machine": machine, "result": result})
    save_markdown(args.out, "openvino_int8_diff", markdown(result, machine))
    plot(result, args.out / "openvino_int8_diff.png")


if __name__ == "__main__":
    main()
