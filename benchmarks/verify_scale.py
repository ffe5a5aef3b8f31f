"""Verification at evaluation-set scale: images/s and peak memory of ``bitedge verify`` as the set grows.

Two int8 ONNX artifacts (three passes per image: float reference, simulated model, artifact) are verified on
1,000 and 10,000 generated images, each flow in fresh processes:

- **demo, 10 classes**: the bundled demo model, on seeded random crops (80-100 % of each side) and horizontal
  flips of its held-out digits, in their class folders;
- **1000 classes**: the demo's trained backbone under a seeded random 1000-class head (ImageNet's label count:
  what makes per-image logits big), on seeded crops and flips of scikit-image's sample photos, one class
  folder per photo. Its int8 gate fails (random logits reorder under int8); verification still runs in full.

Flows (the anchors the issue names):

- ``local``: one ``bitedge verify`` process, cold reference cache (the reference runs);
- ``local, cached reference``: the same again, the float reference read from the cache;
- ``2 shards merged``: ``--shard 0/2`` and ``--shard 1/2`` as two processes at once (``--threads 1`` each:
  two processes with a thread per core each were still running after 8x the local time, their thread pools
  spinning against each other), then ``--merge``;
- ``ray, 2 workers``: ``--engine ray --workers 2`` (a local Ray started for the run; skipped without Ray).

Every flow's parity.json must equal the local one's. Peak RSS is the largest of a flow's processes (Ray's
own processes are not counted: the driver only).

    python benchmarks/verify_scale.py        # writes benchmarks/results/verify_scale.{json,md,png}

``--bitedge DIR --name NAME`` runs every ``bitedge`` process with another bitedge first on its path (e.g. an
older commit: ``git worktree add /tmp/old REV && pip install --no-deps --target /tmp/old-site /tmp/old``),
the models and images being the same, and writes ``NAME.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from results_io import (
    RESULTS,
    cli_process_result,
    machine_line,
    pyplot,
    save_json,
    save_markdown,
    start_cli_process,
)

from bitedge.bench.protocol import machine_info
from bitedge.model.demo import DEMO_EVAL, DEMO_MODEL
from bitedge.model.loading import load_model
from bitedge.model.modeling import BitForImageClassification

COUNTS = (1_000, 10_000)


WIDE_CLASSES = 1000
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel",
          "retina", "camera", "coins", "moon", "brick", "grass", "gravel", "horse", "clock")  # fmt: skip


def digits() -> list[tuple[str, Image.Image]]:
    """The demo's held-out digits, with their class folder names."""
    return [(p.parent.name, Image.open(p).convert("RGB")) for p in sorted(DEMO_EVAL.rglob("*.png"))]


def photos() -> list[tuple[str, Image.Image]]:
    """scikit-image's sample photos (shorter side 96 px), one class of the 1000-class model each."""
    import skimage.data

    out = []
    for i, name in enumerate(PHOTOS):
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        scale = 96 / min(image.size)
        out.append((f"class_{i * 61}", image.resize((round(image.width * scale), round(image.height * scale)))))
    return out


def generate(root: Path, count: int, sources: list[tuple[str, Image.Image]], seed: int = 0) -> Path:
    """``count`` images in class folders: seeded random crops (80-100 % of each side) and flips of ``sources``."""
    rng = random.Random(seed)
    for i in range(count):
        label, image = sources[i % len(sources)]
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = image.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        (root / label).mkdir(parents=True, exist_ok=True)
        crop.save(root / label / f"{i:06d}.png")
    return root


def wide_model(directory: Path) -> Path:
    """The demo's trained backbone under a seeded random ``WIDE_CLASSES``-class head, saved as a checkpoint."""
    demo = load_model(DEMO_MODEL)
    labels = {i: f"class_{i}" for i in range(WIDE_CLASSES)}
    model = BitForImageClassification(dataclasses.replace(demo.config, num_labels=WIDE_CLASSES, id2label=labels))
    model.load_state_dict({k: v for k, v in demo.state_dict().items() if not k.startswith("classifier.")},
                          strict=False)  # fmt: skip
    head = model.classifier[1]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * 0.1)
        head.bias.zero_()
    model.eval().save_pretrained(directory)
    demo.image_processor.save_pretrained(directory)
    return directory


def convert(root: Path, model: str, sources: list[tuple[str, Image.Image]]) -> Path:
    """The int8 ONNX artifact of ``model``: the demo's from its own calibration and evaluation splits, another
    model's calibrated and gated on 200 generated images of its own."""
    artifact = root / "onnx-int8"
    args = [sys.executable, "-m", "bitedge", "convert", model, "--target", "onnx", "--precision", "int8",
            "--out", str(artifact)]  # fmt: skip
    if model != DEMO_MODEL:
        images = str(generate(root / "convert-images", 200, sources, seed=1))
        args += ["--calibration", images, "--eval", images]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if not (artifact / "bitedge.json").is_file():
        raise RuntimeError(f"convert {model} failed: {done.stderr[-1500:]}")
    return artifact


def _flow(commands: list[list[list[str]]], env: dict[str, str]) -> dict[str, Any]:
    """Run ``commands`` as stages (the processes of a stage at once); wall time, peak RSS, last exit code."""
    start, peaks, code = time.perf_counter(), [], 0
    for stage in commands:
        results = [cli_process_result(p) for p in [start_cli_process(args, env) for args in stage]]
        for result in results:
            if "error" in result:
                raise RuntimeError(f"the process died: {result['error'][-1500:]}")
        peaks += [r["peak_rss_mib"] for r in results]
        code = results[-1]["exit_code"]
    return {"seconds": time.perf_counter() - start, "peak_rss_mib": max(peaks), "exit_code": code}


def run(count: int, artifact: Path, sources: list[tuple[str, Image.Image]], with_ray: bool) -> dict[str, Any]:
    root = artifact.parent
    images = generate(root / f"eval-{count}", count, sources)
    env = {**os.environ, "BITEDGE_CACHE_DIR": str(root / f"cache-{count}")}
    verify = ["verify", str(artifact), "--eval", str(images)]
    flows: dict[str, list[list[list[str]]]] = {
        "local": [[verify]],
        "local, cached reference": [[verify]],
    }
    partials = [str(root / f"shard-{count}-{i}.npz") for i in range(2)]
    shard = [*verify, "--threads", "1"]  # two processes on two cores: one thread each
    flows["2 shards merged"] = [[[*shard, "--shard", f"{i}/2", "--partial-out", p] for i, p in enumerate(partials)],
                                [["verify", str(artifact), "--merge", *partials]]]  # fmt: skip
    if with_ray:
        flows["ray, 2 workers"] = [[[*verify, "--engine", "ray", "--workers", "2"]]]
    rows: dict[str, Any] = {}
    expected = None
    for name, commands in flows.items():
        if name == "2 shards merged":  # a cold cache again: the shards run the reference themselves
            env = {**env, "BITEDGE_CACHE_DIR": str(root / f"cache-{count}-shards")}
        if name == "ray, 2 workers":
            env = {**env, "BITEDGE_CACHE_DIR": str(root / f"cache-{count}-ray")}
        result = _flow(commands, env)
        report = json.loads((artifact / "parity.json").read_text())
        expected = expected or report
        result.update(images_per_s=count / result["seconds"], same_report=report == expected)
        rows[name] = result
        print(root.name, count, name, result, flush=True)
    return {"images": count, "flows": rows}


MODELS: dict[str, tuple[Callable[[Path], str], Callable[[], list[tuple[str, Image.Image]]]]] = {
    "demo, 10 classes": (lambda root: DEMO_MODEL, digits),
    f"{WIDE_CLASSES} classes": (lambda root: str(wide_model(root / "wide-model")), photos),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--bitedge", type=Path, help="a folder with another bitedge installed in it (--target)")
    parser.add_argument("--name", default="verify_scale", help="results file name")
    args = parser.parse_args()
    if args.bitedge is not None:  # every process the flows start imports that bitedge
        os.environ["PYTHONPATH"] = os.pathsep.join([str(args.bitedge.absolute()), os.environ.get("PYTHONPATH", "")])
    try:
        import ray  # noqa: F401

        with_ray = True
    except ImportError:
        with_ray = False
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, (make_model, make_sources) in MODELS.items():
            root, sources = Path(tmp) / f"model-{len(results)}", make_sources()
            root.mkdir()
            artifact = convert(root, make_model(root), sources)
            results[label] = [run(count, artifact, sources, with_ray) for count in COUNTS]
    data = {"benchmark": "verify_scale", "machine": machine_info(), "bitedge": str(args.bitedge or "this checkout"),
            "results": results}  # fmt: skip
    save_json(args.out, args.name, data)
    lines = ["# Verification at scale: images/s and peak RSS", "",
             f"Machine: {machine_line(data['machine'])}. int8 ONNX artifacts (float reference, simulated model and "
             "artifact per image) of the demo model (its digits) and of a 1000-class model (the demo's backbone, "
             "seeded random head; scikit-image photos), on images generated by seeded crops and flips; each flow in "
             f"fresh processes. bitedge: {data['bitedge']}. `python benchmarks/verify_scale.py`", "",
             "| model | flow | images | wall s | images/s | × local | peak RSS MiB | same report as local |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for label, per_count in results.items():
        for result in per_count:
            local = result["flows"]["local"]["seconds"]
            for name, f in result["flows"].items():
                lines.append(f"| {label} | {name} | {result['images']:,} | {f['seconds']:.1f} | "
                             f"{f['images_per_s']:.0f} | {local / f['seconds']:.2f} | {f['peak_rss_mib']:.0f} | "
                             f"{'yes' if f['same_report'] else 'NO'} |")  # fmt: skip
    lines += ["", "Peak RSS, 10,000 images against 1,000 (the target is at most 1.2×):", ""]
    for label, (small, large) in results.items():
        for name in large["flows"]:
            ratio = large["flows"][name]["peak_rss_mib"] / small["flows"][name]["peak_rss_mib"]
            lines.append(f"- {label}, {name}: **{ratio:.2f}×**")
    save_markdown(args.out, args.name, lines)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), sharey=True)
    names = list(next(iter(results.values()))[1]["flows"])
    y = np.arange(len(names))
    for k, (label, (small, large)) in enumerate(results.items()):
        axes[0].barh(y + 0.4 * k, [large["flows"][n]["images_per_s"] for n in names], 0.4, label=label)
        axes[1].barh(y + 0.4 * k, [large["flows"][n]["peak_rss_mib"] / small["flows"][n]["peak_rss_mib"]
                                   for n in names], 0.4, label=label)  # fmt: skip
    axes[0].set_yticks(y + 0.2, names)
    axes[0].set_xlabel(f"images/s, {COUNTS[-1]:,} images")
    axes[1].set_xlabel(f"peak RSS, {COUNTS[-1]:,} / {COUNTS[0]:,} images")
    axes[1].axvline(1.2, color="k", linestyle="--", linewidth=0.8)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / f"{args.name}.png", dpi=100)


if __name__ == "__main__":
    main()
