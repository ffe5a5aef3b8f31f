"""BiT-M R152x4 (936 M parameters, 3.7 GB in fp32) at 480: fold and export to ONNX fp32 and fp16.

The fp32 weights pass ONNX's 2 GB protobuf limit, so the artifact stores them as external data. Records
time, file sizes and peak RSS; the exported graph is checked with onnx.checker and one image is run through
onnxruntime against the float model. Seeded weights (no real checkpoint can be downloaded here).

    python benchmarks/r152x4_export.py       # writes benchmarks/results/r152x4_export.{json,md}
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results_io import RESULTS, save_json, save_markdown

from bitedge import load_model
from bitedge.bench.protocol import machine_info
from bitedge.converters.base import ExportSpec
from bitedge.converters.onnx import OnnxConverter
from bitedge.fold import fold
from bitedge.memory import peak_rss_mb
from bitedge.precisions import Precision

NAME = "bit-m-r152x4-ilsvrc2012"


def main() -> None:
    torch.set_num_threads(2)
    start = time.perf_counter()
    model = load_model(NAME)
    timings = {"load_s": time.perf_counter() - start}
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 480, 480)).astype(np.float32))
    with torch.no_grad():
        reference = model(x).logits.numpy()
    start = time.perf_counter()
    deploy = fold(model)
    del model
    gc.collect()
    timings["fold_s"] = time.perf_counter() - start
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in (Precision.FP32, Precision.FP16):
            out = Path(tmp) / precision.value
            out.mkdir()
            start = time.perf_counter()
            files = OnnxConverter().convert(deploy, out, precision=precision, spec=ExportSpec((480, 480), None)).files
            seconds = time.perf_counter() - start
            import onnxruntime as ort

            session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
            logits = session.run(None, {"pixel_values": x.numpy()})[0]
            rows.append({
                "precision": precision.value, "export_s": round(seconds, 1),
                "files": {f: (out / f).stat().st_size for f in files},
                "max_abs_diff_vs_float": float(np.abs(logits - reference).max()),
                "top1_agrees": bool(logits.argmax() == reference.argmax()),
            })  # fmt: skip
            del session
            gc.collect()
    result = {"model": NAME, "input": 480, "timings": timings, "exports": rows,
              "peak_rss_mb": round(peak_rss_mb()), "machine": machine_info()}  # fmt: skip
    save_json(RESULTS, "r152x4_export", result)
    lines = [f"# {NAME} (936 M parameters) at 480: ONNX export", "",
             "| precision | files (MiB) | export s | max abs Δ vs float (1 image) |", "|---|---|---|---|"]  # fmt: skip
    for r in rows:
        files = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in r["files"].items())
        lines.append(f"| {r['precision']} | {files} | {r['export_s']} | {r['max_abs_diff_vs_float']:.3g} |")
    lines += ["", f"Load {timings['load_s']:.0f} s, fold {timings['fold_s']:.0f} s; peak RSS of the whole run "
              f"{result['peak_rss_mb']} MiB on {result['machine']['cores']} cores.", "",
              "Reproduce: `python benchmarks/r152x4_export.py`", ""]  # fmt: skip
    save_markdown(RESULTS, "r152x4_export", lines)


if __name__ == "__main__":
    main()
