"""TensorRT bundles of BiT-R50x1 at 224 (seeded weights): size and conversion time, fp16 and int8.

Runs ``bitedge convert bit-s-r50x1 --target tensorrt`` through the library API (calibration on 512 images
for int8; parity in onnxruntime on the demo's 400 held-out images, resized) and records, per bundle, the
files' sizes and the wall time of the whole conversion. The engine is not built: no machine here can.

    python benchmarks/tensorrt_bundle.py        # writes benchmarks/results/tensorrt_bundle.{json,md}
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from results_io import RESULTS, save_json, save_markdown

from bitedge import convert
from bitedge.bench.protocol import machine_info
from bitedge.memory import peak_rss_mb
from bitedge.model.demo import DEMO_DIR, DEMO_EVAL
from bitedge.precisions import Precision


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in (Precision.FP16, Precision.INT8):
            out = Path(tmp) / precision.value
            start = time.perf_counter()
            # seeded weights: the demo's images only exercise the pipeline here, they measure nothing
            calibration = {"calibration": DEMO_DIR, "calibration_size": 512} if precision == Precision.INT8 else {}
            (result,) = convert("bit-s-r50x1", out, targets=["tensorrt"], precisions=[precision], eval_images=DEMO_EVAL,
                                **calibration)  # fmt: skip
            seconds = time.perf_counter() - start
            sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
            rows.append({
                "precision": precision.value, "seconds": round(seconds, 1), "files": sizes,
                "bundle_mib": round(sum(sizes.values()) / 2**20, 1), "status": result.manifest.status,
                "notes": result.report.notes,
            })  # fmt: skip
    data = {
        "model": "bit-s-r50x1 at 224",
        "machine": machine_info(),
        "peak_rss_mb": round(peak_rss_mb()),
        "bundles": rows,
    }
    save_json(RESULTS, "tensorrt_bundle", data)
    lines = [
        "# TensorRT bundles of BiT-R50x1 at 224",
        "",
        "| precision | bundle MiB | model.onnx MiB | convert s | parity |",
    ]
    lines += ["|---|---|---|---|---|"]
    for r in rows:
        onnx_mib = r["files"]["model.onnx"] / 2**20
        lines.append(f"| {r['precision']} | {r['bundle_mib']} | {onnx_mib:.1f} | {r['seconds']} | {r['status']} |")
    lines += ["", f"Convert time covers load, fold, (int8: calibration on 512 images), ONNX, lint, and parity in "
              f"onnxruntime on 400 images, on {data['machine']['cores']} cores; peak RSS {data['peak_rss_mb']} MiB. "
              "Engines were not built (no GPU with TensorRT here). The weights are seeded, not trained: a random "
              "1000-way head gives near-tied logits, so int8 agreement with float is not meaningful here (the "
              "int8 budgets are tested on the trained demo model).", "",
              "Reproduce: `python benchmarks/tensorrt_bundle.py`", ""]  # fmt: skip
    save_markdown(RESULTS, "tensorrt_bundle", lines)


if __name__ == "__main__":
    main()
