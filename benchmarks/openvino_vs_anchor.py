"""OpenVINO on the CPU: bitedge's IRs against the hand-wired flow, latency and parity in one run.

Anchor flow (what an engineer wires by hand): transformers' BitForImageClassification ->
``openvino.convert_model`` -> ``nncf.quantize`` with defaults on the same real calibration images ->
compiled with the LATENCY hint. bitedge: its folded graph as IR in fp32, fp16, int8 via NNCF (default),
int8 via NNCF with the GroupNorm subgraphs in an ignored scope, int8 via NNCF on the native GroupNormalization
op (to show what bitedge's GroupNorm form buys), and int8 from bitedge's own calibration table; the anchor
is also measured with GroupNormalization in an ignored scope.

For BiT-R50x1 at 224 (seeded weights) and the demo model at 64: every IR is compiled with the LATENCY
hint, 2 threads and the CPU's default precision (what users get), timed interleaved under bitedge's latency
protocol at batch 1; ratios are medians of per-round pairs against the anchor INT8. On the demo model each
IR is also checked against the float model on the 400 held-out images. The per-layer-type profile
(OpenVINO performance counters) of the anchor and bitedge's default INT8 shows where the time goes.

    python benchmarks/openvino_vs_anchor.py      # writes benchmarks/results/openvino.{json,md,png}
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
from results_io import latency_protocol, pyplot, save_json, save_markdown, script_arguments

from bitedge import load_model
from bitedge.bench.protocol import machine_info, measure_interleaved, paired_ratio
from bitedge.calibration.simulate import simulate
from bitedge.converters._onnx_graph import build_onnx
from bitedge.converters.base import ExportSpec
from bitedge.converters.onnx import save_onnx
from bitedge.converters.openvino import OpenVinoConverter
from bitedge.fold import fold
from bitedge.model.demo import DEMO_CALIBRATION, DEMO_EVAL
from bitedge.model.presets import PRESETS
from bitedge.parity.images import Batches, scan_images
from bitedge.parity.metrics import compare
from bitedge.pipeline.int8 import calibration_batches, calibration_table
from bitedge.pipeline.options import CalibrationOptions
from bitedge.precisions import Precision

CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2}
ANCHOR = "anchor: transformers -> convert_model -> nncf.quantize (int8)"
DEFAULT = "bitedge int8 (nncf, default)"


def build(model_name: str, work: Path) -> tuple[dict[str, Any], Any, Any]:
    """All IRs of one model: {name: ov.Model}, plus the float model and its processor."""
    model = load_model(model_name)
    processor = model.image_processor if model_name == "bitedge/demo" else PRESETS[model_name].image_processor()
    size = processor.input_size
    deploy = fold(model)
    options = CalibrationOptions(images=DEMO_CALIBRATION, size=300)
    table = calibration_table(model, deploy, processor, options, raw_pixels=False)
    samples = list(calibration_batches(processor, options, raw_pixels=False))
    spec = ExportSpec(
        size, None, simulated=simulate(deploy, table, OpenVinoConverter.placement), calibration=lambda: samples
    )
    irs: dict[str, Any] = {}
    converter = OpenVinoConverter()
    for name, precision, quantizer in [
        ("bitedge fp32", Precision.FP32, None),
        ("bitedge fp16", Precision.FP16, None),
        (DEFAULT, Precision.INT8, "nncf"),
        ("bitedge int8 (bitedge table)", Precision.INT8, "bitedge"),
    ]:
        out = work / name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        out.mkdir()
        converter.convert(
            deploy, out, precision=precision, spec=ExportSpec(**{**spec.__dict__, "quantizer": quantizer})
        )
        irs[name] = ov.Core().read_model(str(out / "model.xml"))
    dataset = nncf.Dataset(samples)
    gn_subgraphs = nncf.IgnoredScope(patterns=[r".*group_norm(_\d+)?(/.*)?$"], validate=False)
    irs["bitedge int8 (nncf, GroupNorm ignored)"] = nncf.quantize(
        irs["bitedge fp32"].clone(), dataset, subset_size=len(samples), ignored_scope=gn_subgraphs
    )
    native_path = work / "native.onnx"
    save_onnx(build_onnx(deploy, input_size=size, batch=None, group_norm="native"), native_path)
    native = ov.convert_model(str(native_path))
    irs["bitedge int8 (nncf, native GroupNorm op)"] = nncf.quantize(native, dataset, subset_size=len(samples))
    anchor_fp32 = transformers_ir(model, samples[0], work)
    irs["anchor fp32 (transformers -> convert_model)"] = anchor_fp32
    irs[ANCHOR] = nncf.quantize(anchor_fp32.clone(), dataset, subset_size=len(samples))
    irs["anchor int8, GroupNorm ignored"] = nncf.quantize(
        anchor_fp32.clone(), dataset, subset_size=len(samples),
        ignored_scope=nncf.IgnoredScope(types=["GroupNormalization"]),
    )  # fmt: skip
    return irs, model, processor


def transformers_ir(model: Any, example: np.ndarray, work: Path) -> Any:
    """The anchors' fp32 IR: bitedge's weights saved as a transformers checkpoint, loaded by transformers'
    BitForImageClassification and converted by ``openvino.convert_model``, as a user wiring it by hand would."""
    import transformers

    model.save_pretrained(work / "hf")
    transformers.logging.set_verbosity_error()
    hf = transformers.BitForImageClassification.from_pretrained(work / "hf").eval()
    return ov.convert_model(hf, example_input=torch.from_numpy(example))


def profile(compiled: Any, x: np.ndarray, runs: int = 30, warm_up: int = 5) -> dict[str, float]:
    """Mean ms per inference by layer type, from OpenVINO's performance counters (after warm-up calls: the
    first ones include one-time kernel preparation)."""
    request = compiled.create_infer_request()
    for _ in range(warm_up):
        request.infer({0: x})
    totals: collections.Counter[str] = collections.Counter()
    for _ in range(runs):
        request.infer({0: x})
        for info in request.profiling_info:
            totals[info.node_type] += info.real_time.total_seconds() * 1e3
    return {k: round(v / runs, 3) for k, v in totals.most_common()}


def run(model_name: str, quick: bool) -> dict[str, Any]:
    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        irs, model, processor = build(model_name, Path(tmp))
        compiled = {name: core.compile_model(ir, "CPU", CONFIG) for name, ir in irs.items()}
        images = scan_images(DEMO_EVAL, model.config.labels)
        batches = list(Batches(images, processor, batch_size=50))
        pixels = np.concatenate([b[0] for b in batches])
        result: dict[str, Any] = {"model": model_name, "input": list(processor.input_size), "irs": {}}
        if model_name == "bitedge/demo":
            labels = np.concatenate([b[2] for b in batches])
            with torch.no_grad():
                reference = model(torch.from_numpy(pixels)).logits.numpy()
            for name, c in compiled.items():
                m = compare(reference, np.concatenate([c(p[None])[0] for p in pixels]), labels)
                result["irs"][name] = {
                    "top1_agreement": m.top1_agreement,
                    "accuracy": m.artifact_accuracy,
                    "float_accuracy": m.reference_accuracy,
                    "cosine": m.cosine_mean,
                }
        x = pixels[:1]
        requests = {name: c.create_infer_request() for name, c in compiled.items()}
        protocol = latency_protocol(quick)
        stats = measure_interleaved(
            {name: (lambda r=r: r.infer({0: x})) for name, r in requests.items()}, batch=1, threads=2, protocol=protocol
        )
        for name, s in stats.items():
            entry = result["irs"].setdefault(name, {})
            entry["latency"] = s.to_dict()
            entry["ratio_vs_anchor_int8"] = paired_ratio(s, stats[ANCHOR])
        profiled = {k: core.compile_model(irs[k], "CPU", {**CONFIG, "PERF_COUNT": True}) for k in (ANCHOR, DEFAULT)}
        result["profile_ms_by_layer_type"] = {k: profile(c, x) for k, c in profiled.items()}
    return result


def main() -> None:
    parser = script_arguments(__doc__)
    args = parser.parse_args()
    torch.set_num_threads(2)
    core = ov.Core()
    result = {
        "benchmark": "openvino_vs_anchor",
        "machine": machine_info(),
        "versions": {"openvino": ov.__version__, "nncf": nncf.__version__, "torch": torch.__version__},
        "compile_config": CONFIG,
        "default_inference_precision": core.get_property("CPU", "INFERENCE_PRECISION_HINT").to_string(),
        "models": [run("bit-s-r50x1", args.quick), run("bitedge/demo", args.quick)],
    }
    _write(args.out, result)


def _write(out: Path, result: dict[str, Any]) -> None:
    plt = pyplot()
    save_json(out, "openvino", result)
    lines = [
        "# OpenVINO (CPU): bitedge vs the hand-wired NNCF flow",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, flags "
        f"{' '.join(result['machine']['flags'])}; OpenVINO {result['versions']['openvino']}, NNCF "
        f"{result['versions']['nncf']}. Compiled with {result['compile_config']} and the CPU's default "
        f"inference precision ({result['default_inference_precision']}); batch 1.",
    ]
    for m in result["models"]:
        lines += ["", f"## {m['model']} at {m['input'][0]}", ""]
        lines += ["| IR | median ms | p90 ms | × anchor int8 (paired) | top-1 agree | accuracy | cosine |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for name, e in m["irs"].items():
            s = e["latency"]
            parity = "- | - | -"
            if "top1_agreement" in e:
                accuracy = f"{e['accuracy']:.2f}% (float {e['float_accuracy']:.2f}%)"
                parity = f"{e['top1_agreement']:.2%} | {accuracy} | {e['cosine']:.5f}"
            lines.append(
                f"| {name} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {e['ratio_vs_anchor_int8']:.3f} | {parity} |"
            )
        lines += ["", "Per-layer-type time (OpenVINO performance counters, ms per inference):", ""]
        profiles = m["profile_ms_by_layer_type"]
        kinds = sorted(
            {k for p in profiles.values() for k in p}, key=lambda k: -max(p.get(k, 0) for p in profiles.values())
        )
        lines += ["| layer type | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
        lines += [f"| {k} | " + " | ".join(f"{p.get(k, 0):.2f}" for p in profiles.values()) + " |" for k in kinds[:10]]
    lines += ["", "Reproduce: `python benchmarks/openvino_vs_anchor.py`", ""]
    save_markdown(out, "openvino", lines)
    fig, axes = plt.subplots(1, len(result["models"]), figsize=(12, 4))
    for ax, m in zip(axes, result["models"], strict=True):
        names = list(m["irs"])
        ax.boxplot([m["irs"][n]["latency"]["samples_ms"] for n in names], orientation="horizontal", showfliers=False)
        ax.set_yticks(range(1, len(names) + 1), names, fontsize=6)
        ax.set_xlabel("ms per image, batch 1")
        ax.set_title(f"{m['model']} at {m['input'][0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "openvino.png", dpi=110)


if __name__ == "__main__":
    main()
