"""Evaluation streams images: peak memory of `bitedge convert` with 500 and with 50,000 evaluation images.

The demo model converted to ONNX fp32 and int8 (int8 also calibrates: the calibration sample is drawn from
the same folder), verified on N images, each run in a fresh process whose peak RSS is recorded. The
images are hard links to 100 distinct digit images of the demo's held-out split (spread over the ten
class folders, so accuracy is measured too): 50,000 files cost no disk space.

    python benchmarks/streaming_memory.py     # writes benchmarks/results/streaming_memory.{json,md}
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from results_io import RESULTS, convert_in_fresh_process, save_json, save_markdown

from bitedge.bench.protocol import machine_info
from bitedge.model.demo import DEMO_EVAL

COUNTS = (500, 50_000)


def image_folder(root: Path, count: int) -> Path:
    sources = [p for label in sorted(os.listdir(DEMO_EVAL)) for p in sorted((DEMO_EVAL / label).iterdir())[:10]]
    folder = root / f"eval-{count}"
    for i in range(count):
        source = sources[i % len(sources)]
        (folder / source.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(source, folder / source.parent.name / f"{i:06d}.png")
    return folder


def run(folder: Path, precision: str, out: Path) -> dict[str, Any]:
    args = ["--target", "onnx", "--precision", precision, "--out", str(out), "--eval", str(folder)]
    record = convert_in_fresh_process([*args, "--calibration", str(folder)])
    if "error" in record:
        raise RuntimeError(record["error"])
    record.pop("stderr")
    manifest = json.loads((out / "bitedge.json").read_text())
    return {**record, "images": manifest["parity"]["eval"]["images"], "status": manifest["status"],
            "accuracy": manifest["parity"]["artifact_accuracy"]}  # fmt: skip


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for count in COUNTS:
            folder = image_folder(tmp, count)
            for precision in ("fp32", "int8"):
                row = {"count": count, "precision": precision, **run(folder, precision, tmp / f"{count}-{precision}")}
                print(row, flush=True)
                rows.append(row)
    data = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(), "rows": rows}
    save_json(RESULTS, "streaming_memory", data)
    lines = [
        "# Evaluation streams: peak RSS with 500 vs 50,000 evaluation images",
        "",
        f"{data['date']}, {data['machine'].get('cpu', '')}; `python benchmarks/streaming_memory.py`. Demo model, "
        "ONNX target, one fresh process per row (int8 also calibrates on a 512-image sample of the folder).",
        "",
        "| images | precision | status | time | peak RSS | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['images']:,} | {row['precision']} | {row['status']} | {row['seconds']:.0f} s | "
            f"{row['peak_rss_mib']:.0f} MiB | {row['accuracy']:.2f} % |"
        )
    lines += [
        "",
        "Images are decoded, preprocessed and run one batch at a time; what grows with their number is the",
        "per-image record the parity report keeps (file path, logits, top-1s): about 1.5 KB per image.",
    ]
    save_markdown(RESULTS, "streaming_memory", [*lines, ""])


if __name__ == "__main__":
    main()
