"""Verification at evaluation-set scale: images/s and peak memory of ``bitedge verify`` as the set grows.

The demo model's int8 ONNX artifact (three passes per image: float reference, simulated model, artifact) is
verified on 1,000 and 10,000 images generated from the demo's bundled held-out digits by seeded random crops
and horizontal flips (in their class folders), each flow in fresh processes:

- ``local``: one ``bitedge verify`` process, cold reference cache (the reference runs);
- ``local, cached reference``: the same again, the float reference read from the cache;
- ``2 shards merged``: ``--shard 0/2`` and ``--shard 1/2`` as two processes at once (``--threads 1`` each:
  two processes with a thread per core each were still running after 8x the local time, their thread pools
  spinning against each other),
  then ``--merge``;
- ``ray, 2 workers``: ``--engine ray --workers 2`` (a local Ray started for the run; skipped without Ray).

Every flow's parity.json must equal the local one's. Peak RSS is the largest of a flow's processes (Ray's
own processes are not counted: the driver only).

    python benchmarks/verify_scale.py        # writes benchmarks/results/verify_scale.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image
from results_io import RESULTS, machine_line, pyplot, save_json, save_markdown

from bitedge.bench.protocol import machine_info
from bitedge.model.demo import DEMO_EVAL

COUNTS = (1_000, 10_000)
_RUN = """
import json, sys, time
from bitedge.memory import peak_rss_mb
from bitedge.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"exit_code": code, "seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mb()}))
"""


def generate(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` images: seeded random crops (80-100 % of each side) and flips of the demo's held-out digits."""
    rng = random.Random(seed)
    sources = sorted(p for p in DEMO_EVAL.rglob("*.png"))
    for i in range(count):
        source = sources[i % len(sources)]
        image = Image.open(source).convert("RGB")
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.8, 1.0)), int(h * rng.uniform(0.8, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        image = image.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        (root / source.parent.name).mkdir(parents=True, exist_ok=True)
        image.save(root / source.parent.name / f"{i:06d}.png")
    return root


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _RUN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def _finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = process.communicate()
    lines = out.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"the process died: {err[-1500:]}")
    return dict(json.loads(lines[-1]))


def _flow(commands: list[list[list[str]]], env: dict[str, str]) -> dict[str, Any]:
    """Run ``commands`` as stages (the processes of a stage at once); wall time, peak RSS, last exit code."""
    start, peaks, code = time.perf_counter(), [], 0
    for stage in commands:
        results = [_finish(p) for p in [_start(args, env) for args in stage]]
        peaks += [r["peak_rss_mib"] for r in results]
        code = results[-1]["exit_code"]
    return {"seconds": time.perf_counter() - start, "peak_rss_mib": max(peaks), "exit_code": code}


def run(count: int, artifact: Path, root: Path, with_ray: bool) -> dict[str, Any]:
    images = generate(root / f"eval-{count}", count)
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
        print(count, name, result, flush=True)
    return {"images": count, "flows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    try:
        import ray  # noqa: F401

        with_ray = True
    except ImportError:
        with_ray = False
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        artifact = root / "onnx-int8"
        subprocess.run([sys.executable, "-m", "bitedge", "convert", "--target", "onnx", "--precision", "int8",
                        "--out", str(artifact)], check=True, capture_output=True)  # fmt: skip
        results = [run(count, artifact, root, with_ray) for count in COUNTS]
    data = {"benchmark": "verify_scale", "machine": machine_info(), "results": results}
    save_json(args.out, "verify_scale", data)
    small, large = results
    lines = ["# Verification at scale: images/s and peak RSS", "",
             f"Machine: {machine_line(data['machine'])}. Demo model, ONNX int8 artifact (float reference, simulated "
             "model and artifact per image), images generated from the demo's held-out digits (seeded crops and "
             "flips); each flow in fresh processes. `python benchmarks/verify_scale.py`", "",
             "| flow | images | wall s | images/s | peak RSS MiB | same report as local |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for result in results:
        for name, f in result["flows"].items():
            lines.append(f"| {name} | {result['images']:,} | {f['seconds']:.1f} | {f['images_per_s']:.0f} | "
                         f"{f['peak_rss_mib']:.0f} | {'yes' if f['same_report'] else 'NO'} |")  # fmt: skip
    ratio = large["flows"]["local"]["peak_rss_mib"] / small["flows"]["local"]["peak_rss_mib"]
    lines += ["", f"Peak RSS of the local verify, {large['images']:,} images against {small['images']:,}: "
              f"**{ratio:.2f}×**."]  # fmt: skip
    save_markdown(args.out, "verify_scale", lines)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(large["flows"])
    ax.barh(names, [large["flows"][n]["images_per_s"] for n in names])
    ax.set_xlabel(f"images/s, {large['images']:,} images")
    fig.tight_layout()
    fig.savefig(args.out / "verify_scale.png", dpi=100)


if __name__ == "__main__":
    main()
