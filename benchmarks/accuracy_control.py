"""Accuracy-aware int8, side by side: bitedge's ``--fallback auto`` and NNCF's ``quantize_with_accuracy_control``.

Part 1, the demo model (400 labelled held-out digits; calibration on its bundled calibration digits), one
budget for both: mean cosine between int8 and float logits >= COSINE, which plain int8 misses in both flows
(a top-1 budget on 400 images is too coarse to tell the flows apart: bitedge's plain int8 already agrees 100 %).
- bitedge: ``bitedge.convert(..., targets=["openvino"], precisions=["int8"], fallback="auto",
  min_cosine=COSINE)``: the search on the simulated model, then the OpenVINO IR built from the table
  and gated in OpenVINO. Search time from the conversion's own log; the whole conversion's time too.
- NNCF (the anchor, hand-wired): transformers' BiT -> ``ov.convert_model`` -> ``quantize_with_accuracy_control``
  with the mean cosine against the float model's logits as the validation metric, ``max_drop=1 - COSINE``
  (absolute), the same calibration and evaluation images. bitedge adds its margin (a quarter of the way to
  1); NNCF does not.
For each: layers kept float, accuracy and top-1 agreement with float in OpenVINO, search time, and latency
(batch 1, 2 threads, interleaved with OpenVINO fp32 and plain int8 of both flows, paired ratios).

Part 2, cost on an R50x1-shaped model (seeded weights, 64 evaluation images: scikit-image photos with seeded
crops and flips): bitedge's search alone under a cosine budget plain int8 misses (seeded weights have no
meaningful labels), with the onnx and openvino placement (x86-uint8) and with TensorRT's as well.

    python benchmarks/accuracy_control.py     # writes benchmarks/results/accuracy_control.{json,md,png}
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import nncf
import numpy as np
import openvino as ov
import torch
from openvino_vs_anchor import CONFIG
from results_io import latency_protocol, machine_line, pyplot, save_json, save_markdown, script_arguments

import bitedge
from bitedge import load_model
from bitedge.bench.protocol import machine_info, measure_interleaved, paired_ratio
from bitedge.calibration.placement import SYMMETRIC_INT8, X86_UINT8
from bitedge.calibration.simulate import simulate
from bitedge.fold import fold
from bitedge.model.demo import DEMO_CALIBRATION, DEMO_EVAL
from bitedge.model.presets import PRESETS
from bitedge.parity.images import Batches, scan_images
from bitedge.parity.metrics import Budget, compare
from bitedge.pipeline.int8 import calibration_table, fallback, search_set
from bitedge.pipeline.options import CalibrationOptions

COSINE = 0.99995  # plain int8 on the demo: ~0.99991 (bitedge's simulated model), ~0.9997 (NNCF)
THREADS = 2


def _timed_log() -> tuple[list[tuple[float, str]], Any]:
    lines: list[tuple[float, str]] = []
    return lines, lambda message: lines.append((time.perf_counter(), message))


def _since(lines: list[tuple[float, str]], start: str, end: tuple[str, ...]) -> float:
    first = next(t for t, m in lines if m.startswith(start))
    return next(t for t, m in lines if m.startswith(end)) - first


def _float_convolutions(model: ov.Model) -> int:
    """Convolutions and MatMuls whose data input is not fake-quantized (kept float)."""
    count = 0
    for op in model.get_ops():
        if op.get_type_name() in ("Convolution", "MatMul"):
            source = op.input_value(0).get_node()
            count += source.get_type_name() != "FakeQuantize"
    return count


def demo_part(work: Path, quick: bool) -> dict[str, Any]:
    import transformers

    model = load_model("bitedge/demo")
    processor = model.image_processor
    batches = list(Batches(scan_images(DEMO_EVAL, list(model.config.labels)), processor, batch_size=50))
    pixels, labels = np.concatenate([b[0] for b in batches]), np.concatenate([b[2] for b in batches])
    with torch.no_grad():
        reference = model(torch.from_numpy(pixels)).logits.numpy()
    core = ov.Core()
    compiled: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}

    def gate(name: str, ir: ov.Model, seconds: float | None, floats: list[str] | int) -> None:
        hint = {"INFERENCE_PRECISION_HINT": "f32"}
        c = core.compile_model(ir, "CPU", {**CONFIG, **hint})
        m = compare(reference, np.concatenate([c(p[None])[0] for p in pixels]), labels)
        compiled[name] = c
        rows[name] = {"search_s": seconds, "float_layers": floats if isinstance(floats, int) else len(floats),
                      "float_layer_names": floats if isinstance(floats, list) else None,
                      "accuracy": m.artifact_accuracy, "accuracy_drop": m.accuracy_drop,
                      "top1_agreement": m.top1_agreement, "cosine": m.cosine_mean}  # fmt: skip

    for name, extra in (("bitedge int8", {}), ("bitedge int8 --fallback auto", {"fallback": "auto"})):
        lines, log = _timed_log()
        start = time.perf_counter()
        out = work / name.replace(" ", "_")
        result = bitedge.convert("bitedge/demo", out, targets=["openvino"], precisions=["int8"],
                                 min_cosine=COSINE, log=log, **extra)[0]  # fmt: skip
        wall = time.perf_counter() - start
        searched = _since(lines, "searching", ("float layers", "no layer")) if extra else None
        assert result.manifest.calibration is not None
        gate(name, core.read_model(str(out / "model.xml")), searched, result.manifest.calibration.excluded)
        rows[name].update(convert_s=wall, gate_passed=result.passed)
    result = bitedge.convert("bitedge/demo", work / "fp32", targets=["openvino"], precisions=["fp32"])[0]
    gate("OpenVINO fp32", core.read_model(str(work / "fp32" / "model.xml")), None, 0)

    transformers.logging.set_verbosity_error()
    model.save_pretrained(work / "hf")
    hf = transformers.BitForImageClassification.from_pretrained(work / "hf").eval()
    calibration = [b[0] for b in Batches(scan_images(DEMO_CALIBRATION, list(model.config.labels)), processor, 1)]
    anchor = ov.convert_model(hf, example_input=torch.from_numpy(calibration[0]))
    validation = [(pixels[i : i + 1], reference[i]) for i in range(len(pixels))]

    def cosine(compiled_model: Any, data: Any) -> float:
        values = []
        for x, ref in data:
            out = compiled_model(x)[0][0]
            values.append(float(out @ ref / (np.linalg.norm(out) * np.linalg.norm(ref))))
        return float(np.mean(values))

    start = time.perf_counter()
    plain = nncf.quantize(anchor, nncf.Dataset(calibration), subset_size=len(calibration))
    plain_s = time.perf_counter() - start
    gate("NNCF int8", plain, None, _float_convolutions(plain))
    rows["NNCF int8"]["convert_s"] = plain_s
    start = time.perf_counter()
    controlled = nncf.quantize_with_accuracy_control(
        anchor, nncf.Dataset(calibration), nncf.Dataset(validation, lambda item: item[0]), validation_fn=cosine,
        max_drop=1 - COSINE, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
    )  # fmt: skip
    searched = time.perf_counter() - start
    gate("NNCF quantize_with_accuracy_control", controlled, searched, _float_convolutions(controlled))
    rows["NNCF quantize_with_accuracy_control"]["convert_s"] = searched

    x = np.ascontiguousarray(pixels[:1])
    protocol = latency_protocol(quick)
    stats = measure_interleaved({n: (lambda c=c: c(x)) for n, c in compiled.items()}, batch=1, threads=THREADS,
                                protocol=protocol)  # fmt: skip
    for name, s in stats.items():
        rows[name]["latency"] = s.to_dict()
        rows[name]["x_fp32"] = paired_ratio(s, stats["OpenVINO fp32"])
        rows[name]["x_nncf_controlled"] = paired_ratio(s, stats["NNCF quantize_with_accuracy_control"])
    return {"model": "bitedge/demo", "budget_min_cosine": COSINE, "images": len(pixels), "flows": rows}


def r50_images(root: Path, count: int = 64) -> Path:
    """``count`` seeded crops (and mirror images) of scikit-image's photos, flat (no labels)."""
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    root.mkdir(parents=True)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w)))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        image = Image.fromarray(photo[top : top + side, left : left + side])
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(root / f"{i:03d}.png")
    return root


def r50_part(work: Path) -> dict[str, Any]:
    model = load_model("bit-s-r50x1")
    processor = PRESETS["bit-s-r50x1"].image_processor()
    deploy = fold(model)
    options = CalibrationOptions(images=DEMO_CALIBRATION, size=64)
    table = calibration_table(model, deploy, processor, options, raw_pixels=False)
    images = scan_images(r50_images(work / "r50-eval"), list(model.config.labels))
    start = time.perf_counter()
    search = search_set(deploy, images, processor, raw_pixels=False)
    decode_s = time.perf_counter() - start
    runs = {}
    choices = {"onnx, openvino (x86-uint8)": [X86_UINT8],
               "onnx, openvino, tensorrt (+ symmetric-int8)": [X86_UINT8, SYMMETRIC_INT8]}  # fmt: skip
    for label, placements in choices.items():
        plain = min(search.score(simulate(deploy, table, p)).cosine_mean for p in placements)
        budget = Budget(min_top1_agreement=0.0, min_cosine=plain + 0.5 * (1 - plain))
        start = time.perf_counter()
        result = fallback(deploy, table, [(p, budget) for p in placements], search)
        seconds = time.perf_counter() - start
        runs[label] = {"plain_cosine": plain, "min_cosine": budget.min_cosine, "search_s": seconds,
                       "float_layers": result.float_layers, "steps": len(result.steps),
                       "final_cosine": result.steps[-1].cosine, "layers": len(table.layers)}  # fmt: skip
    return {"model": "bit-s-r50x1 (seeded)", "images": len(search), "decode_and_float_s": decode_s, "runs": runs}


def main() -> None:
    parser = script_arguments(__doc__)
    parser.add_argument("--skip-r50", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        versions = {"openvino": ov.__version__, "nncf": nncf.__version__, "torch": torch.__version__}
        result = {"benchmark": "accuracy_control", "machine": machine_info(), "versions": versions,
                  "demo": demo_part(Path(tmp), args.quick)}  # fmt: skip
        if not args.skip_r50:
            result["r50x1"] = r50_part(Path(tmp))
    save_json(args.out, "accuracy_control", result)
    _write(args.out, result)


def _write(out: Path, result: dict[str, Any]) -> None:
    demo = result["demo"]
    lines = ["# Accuracy-aware int8: bitedge --fallback auto and NNCF quantize_with_accuracy_control", "",
             f"Machine: {machine_line(result['machine'])}. OpenVINO {result['versions']['openvino']}, NNCF "
             f"{result['versions']['nncf']}; batch 1, {THREADS} threads, one run, paired ratios.", "",
             f"## Demo model: mean cosine with float >= {demo['budget_min_cosine']} on {demo['images']} "
             "labelled images (OpenVINO, f32 inference precision)", "",
             "| flow | float convs | cosine | accuracy % | top-1 agreement | median ms | × fp32 | × NNCF controlled "
             "| search s | convert s |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in demo["flows"].items():
        search = "-" if r["search_s"] is None else f"{r['search_s']:.1f}"
        convert = f"{r['convert_s']:.1f}" if "convert_s" in r else "-"
        lines.append(f"| {name} | {r['float_layers']} | {r['cosine']:.6f} | {r['accuracy']:.2f} | "
                     f"{r['top1_agreement']:.2%} | {r['latency']['median_ms']:.3f} | {r['x_fp32']:.3f} | "
                     f"{r['x_nncf_controlled']:.3f} | {search} | {convert} |")  # fmt: skip
    kept = demo["flows"]["bitedge int8 --fallback auto"]["float_layer_names"]
    lines += ["", f"bitedge kept float: {', '.join(kept) or 'nothing'}."]
    if "r50x1" in result:
        r50 = result["r50x1"]
        lines += ["", f"## Search cost: {r50['model']} at 224, {r50['images']} evaluation images", "",
                  f"Decoding them and the float pass: {r50['decode_and_float_s']:.1f} s. Budget: cosine halfway from "
                  "plain int8's to 1 (top-1 not gated: seeded weights).", "",
                  "| placements | layers | plain cosine | budget | float layers | final cosine | steps | search s |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for label, r in r50["runs"].items():
            lines.append(f"| {label} | {r['layers']} | {r['plain_cosine']:.5f} | {r['min_cosine']:.5f} | "
                         f"{len(r['float_layers'])} | {r['final_cosine']:.5f} | {r['steps']} | "
                         f"{r['search_s']:.0f} |")  # fmt: skip
    lines += ["", "Reproduce: `python benchmarks/accuracy_control.py`"]
    save_markdown(out, "accuracy_control", lines)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = list(demo["flows"])
    ax.barh(names, [demo["flows"][n]["latency"]["median_ms"] for n in names])
    for i, n in enumerate(names):
        ax.text(0, i, f" {demo['flows'][n]['float_layers']} float, {demo['flows'][n]['accuracy']:.2f}%", va="center",
                fontsize=7, color="white")  # fmt: skip
    ax.set_xlabel("median ms, batch 1 (demo model, OpenVINO)")
    fig.tight_layout()
    fig.savefig(out / "accuracy_control.png", dpi=100)


if __name__ == "__main__":
    main()
