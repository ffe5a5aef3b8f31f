"""BiT-M R152x4 (936 M parameters, 3.7 GB fp32) at 480 through every target this machine can build.

Each conversion runs as ``bitedge convert`` in a fresh process, so that process's peak RSS is the target's:
load (seeded weights: no checkpoint can be downloaded here), fold, the float reference on the evaluation
photos, calibration for int8, conversion, and verification in the target's runtime. Peak RSS is read
against the size of one fp32 copy of the weights (3573 MiB): bitedge frees the reference model's weights
once its outputs are computed and shares the folded weights with the simulated int8 model, so its own
code holds two copies at most (folded model + the runtime's); what a runtime or converter allocates on
top shows up here.

    python benchmarks/r152x4_scale.py            # writes benchmarks/results/r152x4_scale.{json,md,png}
    python benchmarks/r152x4_scale.py onnx:fp16   # one target
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coreml_precisions import write_photos
from results_io import RESULTS, convert_in_fresh_process, pyplot, save_json, save_markdown

from bitedge.bench.protocol import machine_info

MODEL = "bit-m-r152x4-ilsvrc2012"
WEIGHTS_MIB = 936_533_224 * 4 / 2**20  # one fp32 copy (bitedge inspect)
TARGETS = ("onnx:fp16", "onnx:int8", "openvino:int8", "openvino:int8:bitedge", "coreml:fp16")
IMAGES = 4  # evaluation and calibration photos: every forward pass at 480 px takes seconds on 2 cores


def run_target(target: str, precision: str, quantizer: str, photos: Path, out: Path) -> dict[str, Any]:
    args = [MODEL, "--target", target, "--precision", precision, "--out", str(out), "--eval", str(photos),
            "--calibration", str(photos), "--overwrite"]  # fmt: skip
    args += ["--quantizer", quantizer] if quantizer else []
    record = convert_in_fresh_process(args)
    stderr = record.pop("stderr")
    row: dict[str, Any] = {"target": target, "precision": precision, "quantizer": quantizer or "default", **record}
    if "error" in record:
        return row
    # the pipeline's progress lines carry RSS and peak so far: which stage reached the peak
    row["stages"] = [line.removeprefix("bitedge: ") for line in stderr.replace("\r", "\n").splitlines()
                     if line.startswith("bitedge: ") and "GiB" in line]  # fmt: skip
    row["peak_rss_weight_copies"] = round(record["peak_rss_mib"] / WEIGHTS_MIB, 2)
    manifest_path = out / "bitedge.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        row["status"] = manifest["status"]
        row["files_mib"] = {f: round((out / f).stat().st_size / 2**20, 1) for f in manifest["files"]
                            if (out / f).stat().st_size > 2**20}  # fmt: skip
        row["top1_agreement"] = manifest["parity"]["top1_agreement"]
        row["cosine_mean"] = manifest["parity"]["cosine_mean"]
    else:
        row["error"] = stderr[-2000:]
    return row


def main(selected: list[str]) -> None:
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp_name:
        tmp = Path(tmp_name)
        photos = tmp / "photos"
        write_photos(photos, limit=IMAGES)
        for item in selected:
            target, precision, quantizer = [*item.split(":"), ""][:3]
            rows.append(run_target(target, precision, quantizer, photos, tmp / f"{target}-{precision}"))
            print(json.dumps(rows[-1])[:400], flush=True)
            shutil.rmtree(tmp / f"{target}-{precision}", ignore_errors=True)  # several GB each
    write(merge_with_saved(rows))


def write(rows: list[dict[str, Any]]) -> None:
    data = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "model": MODEL, "input": 480,
            "weights_fp32_mib": round(WEIGHTS_MIB), "images": IMAGES, "rows": rows}  # fmt: skip
    save_json(RESULTS, "r152x4_scale", data)
    lines = [
        f"# {MODEL} (936 M parameters, {WEIGHTS_MIB:.0f} MiB fp32) at 480, every target",
        "",
        f"{data['date']}, {data['machine'].get('cpu', '')}, {data['machine'].get('cores', '')} cores; "
        f"`python benchmarks/r152x4_scale.py`. One fresh process per target: load (seeded weights), fold, "
        f"float reference on {IMAGES} photos, calibration on the same {IMAGES} (int8), convert, verify in the runtime.",
        "",
        "| target | precision | quantizer | status | time | peak RSS | × fp32 weights | model files (MiB) "
        "| top-1 agreement |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "peak_rss_mib" not in row:
            lines.append(f"| {row['target']} | {row['precision']} | {row['quantizer']} | error | - | - | - | - | - |")
            continue
        files = ", ".join(f"{k} {v}" for k, v in row.get("files_mib", {}).items())
        agreement = f"{row['top1_agreement']:.0%}" if "top1_agreement" in row else "-"
        lines.append(
            f"| {row['target']} | {row['precision']} | {row['quantizer']} | {row.get('status', 'error')} | "
            f"{row['seconds']:.0f} s | "
            f"{row['peak_rss_mib']:.0f} MiB | {row['peak_rss_weight_copies']} | {files} | {agreement} |"
        )
    cosines = ", ".join(f"{r['target']} {r['precision']} {r['cosine_mean']:.4f}" for r in rows if "cosine_mean" in r)
    lines += [
        "",
        '"failed" is the parity gate on seeded random weights: top-1 agrees on every photo, but the logits\'',
        f"cosine with float ({cosines}) misses fp16's 0.9999 budget, and int8 drifts from the simulated model",
        "through 152 random layers (as R50x1 does: benchmarks/results/coreml.md). Trained weights are not",
        "available offline. Peaks above two weight copies come from third-party converters: NNCF's quantization",
        "(openvino, default quantizer) and coremltools' conversion; with bitedge's own table (openvino, quantizer",
        "bitedge) and for ONNX the peak stays under three copies, including onnxruntime's session and the",
        "activations of 480 px images. `stages` in the JSON gives RSS and peak at each pipeline stage.",
    ]
    save_markdown(RESULTS, "r152x4_scale", [*lines, ""])
    plot(rows)


def merge_with_saved(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of an earlier run for targets not rerun now (a run of one target updates its row only)."""
    saved = RESULTS / "r152x4_scale.json"
    if not saved.is_file():
        return rows

    def key(row: dict[str, Any]) -> tuple[str, str, str]:
        return row["target"], row["precision"], row.get("quantizer", "default")

    fresh = {key(r) for r in rows}
    kept = [{"quantizer": "default", **r} for r in json.loads(saved.read_text())["rows"] if key(r) not in fresh]
    order = {name: i for i, name in enumerate(TARGETS)}
    merged = kept + rows
    return sorted(merged, key=lambda r: order.get(":".join(k for k in key(r) if k != "default"), len(order)))


def plot(rows: list[dict[str, Any]]) -> None:
    plt = pyplot()
    done = [r for r in rows if "peak_rss_mib" in r]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    names = [f"{r['target']}\n{r['precision']}" + (f" ({r['quantizer']})" if r["quantizer"] != "default" else "")
             for r in done]  # fmt: skip
    ax.bar(names, [r["peak_rss_mib"] / 1024 for r in done], color="#4C72B0")
    for copies in (1, 2):
        ax.axhline(copies * WEIGHTS_MIB / 1024, color="gray", linestyle="--", linewidth=1)
        ax.text(len(done) - 0.5, copies * WEIGHTS_MIB / 1024, f"{copies}× fp32 weights", va="bottom", ha="right")
    ax.set_ylabel("peak RSS (GiB)")
    ax.set_title("R152x4 at 480: peak memory per conversion (24 GiB machine)")
    fig.tight_layout()
    fig.savefig(RESULTS / "r152x4_scale.png", dpi=120)


if __name__ == "__main__":
    if sys.argv[1:] == ["report"]:  # rebuild the Markdown and plot from the saved JSON
        write(merge_with_saved([]))
    else:
        main(sys.argv[1:] or list(TARGETS))
