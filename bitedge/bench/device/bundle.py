"""``bitedge bench --bundle DIR ARTIFACT...``: one self-contained folder per artifact, to time it on a device.

Each folder holds the artifact's runtime files, ``inputs.npy`` (real images from the artifact's evaluation set,
preprocessed as it takes them; ``input.bin``: the first batch as raw bytes, for native tools), ``reference.npy``
and ``host.npy`` (the float model's and the artifact's own outputs on them, here), ``bundle.json`` (what it is,
the protocol, the budget its outputs are held to), ``run.py`` (bitedge's runner: numpy and the runtime only)
and a README with the runtime's native benchmark command. Nothing in it imports bitedge or torch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bitedge.artifacts.integrity import STRICT, Allowances, check_artifact
from bitedge.artifacts.manifest import Manifest
from bitedge.bench.protocol import Protocol
from bitedge.converters import converter_classes, get_converter
from bitedge.converters.base import Converter, DeviceBundle
from bitedge.errors import BadInputError
from bitedge.fileio import write_json_atomic
from bitedge.model.image_processor import BitImageProcessor
from bitedge.parity.images import Batches, scan_images, spread
from bitedge.parity.metrics import BUDGETS, Budget
from bitedge.pipeline.rebuild import float_reference, recorded_eval
from bitedge.precisions import Precision

BUNDLE_FORMAT = "bitedge-bundle-1"
RUNNER = Path(__file__).with_name("run.py")
DEFAULT_PROTOCOL = Protocol()
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "executorch": "executorch",
                    "coreml": "coremltools"}  # fmt: skip


def make_bundle(
    artifact: Path,
    out: Path,
    *,
    eval_images: Path | None = None,
    images: int = 16,
    model_path: Path | None = None,
    threads: int | None = None,
    protocol: Protocol = DEFAULT_PROTOCOL,
    allow: Allowances = STRICT,
    log: Callable[[str], None] = lambda _: None,
) -> Path:
    """The bundle of ``artifact`` in ``out/<artifact name>`` (see the module docstring); returns its folder."""
    manifest = Manifest.read(artifact)
    check_artifact(artifact, manifest, allow)
    converter = get_converter(manifest.target)
    how = converter.device_bundle(artifact, manifest)
    if how is None:
        supported = [c.name for c in converter_classes() if c.device_bundle is not Converter.device_bundle]
        raise BadInputError(f"{artifact}: {manifest.target} artifacts have no device bundle; bitedge bench --bundle "
                            f"supports {', '.join(supported)}")  # fmt: skip
    destination = out / artifact.resolve().name
    if destination.exists() or destination.is_symlink():
        raise BadInputError(f"{destination}: already exists (it may hold a device's results); remove it or choose "
                            "another --bundle DIR")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    model = float_reference(manifest, model_path, log)
    processor = BitImageProcessor.from_dict(manifest.preprocessing)
    chosen = spread(scan_images(eval_images or recorded_eval(manifest), model.config.labels), images)
    raw = manifest.input.raw_pixels
    normalized, pixels = [], []
    for batch_normalized, batch_raw, _ in Batches(chosen, processor, batch_size=16, raw_pixels=raw):
        normalized.append(batch_normalized)
        pixels.append(batch_raw if raw and batch_raw is not None else batch_normalized)
    inputs = np.concatenate(pixels).astype(np.float32)  # (N, 3, H, W), as the artifact takes it
    log(f"bundling {artifact} with {len(inputs)} images from {chosen.root}")
    with torch.no_grad():
        reference = model(torch.from_numpy(np.concatenate(normalized))).logits.numpy()
    host = converter.open_runner(artifact, manifest, threads=threads)(inputs)
    if how.outputs_are == "log_probabilities":  # the runtime gives a softmax: compare log-probabilities
        reference, host = _log_softmax(reference), _log_softmax(np.asarray(host))
    with tempfile.TemporaryDirectory(dir=out, prefix=f".{destination.name}.partial-") as scratch:
        staging = Path(scratch) / "bundle"
        staging.mkdir()
        _copy(artifact, staging, how.files)
        np.save(staging / "inputs.npy", inputs)
        np.save(staging / "reference.npy", reference.astype(np.float32))
        np.save(staging / "host.npy", np.asarray(host, np.float32))
        if chosen.labels is not None:  # class folders: the device's accuracy can be checked too
            np.save(staging / "labels.npy", np.asarray(chosen.labels, np.int64))
        batch = manifest.input.batch or 1
        _first_batch(inputs, batch, how).tofile(staging / "input.bin")
        if raw:  # the first image as the app sees it, after resize and crop (Core ML's Bench.swift reads it)
            Image.fromarray(inputs[0].round().clip(0, 255).astype(np.uint8).transpose(1, 2, 0)).save(
                staging / "input.png"
            )
        shutil.copy(RUNNER, staging / "run.py")
        for name, text in how.extra_files.items():
            (staging / name).write_text(text, encoding="utf-8")
        record = _record(artifact, manifest, how, processor, batch, len(inputs), threads, protocol, staging)
        write_json_atomic(staging / "bundle.json", record)
        (staging / "README.md").write_text(_readme(record, how), encoding="utf-8")
        staging.rename(destination)
    return destination


def _copy(artifact: Path, staging: Path, files: list[str]) -> None:
    for name in files:
        source, target = artifact / name, staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    out: np.ndarray = (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).astype(np.float32)
    return out


def _first_batch(inputs: np.ndarray, batch: int, how: DeviceBundle) -> np.ndarray:
    first = np.concatenate([inputs[:batch], np.zeros((max(0, batch - len(inputs)), *inputs.shape[1:]), np.float32)])
    if how.uint8_nhwc:
        return np.ascontiguousarray(first.round().clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
    return np.ascontiguousarray(first, np.float32)


def _record(
    artifact: Path, manifest: Manifest, how: DeviceBundle, processor: BitImageProcessor, batch: int, count: int,
    threads: int | None, protocol: Protocol, staging: Path,
) -> dict[str, Any]:  # fmt: skip
    height, width = processor.input_size
    budget = manifest.parity.get("budget") or asdict(BUDGETS[Precision(manifest.precision)])
    files = {p.relative_to(staging).as_posix(): _sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    identity = hashlib.sha256(json.dumps([manifest.seal, files], sort_keys=True).encode()).hexdigest()[:16]
    timing = {"warmup_runs": protocol.warmup_runs, "warmup_seconds": protocol.warmup_seconds,
              "min_runs": protocol.min_runs, "min_seconds": protocol.min_seconds}  # fmt: skip
    values = {"batch": batch, "height": height, "width": width, "threads": threads or 0, "runs": protocol.min_runs,
              "seconds": int(protocol.min_seconds), "input_bin": "input.bin"}  # fmt: skip
    return {
        "format": BUNDLE_FORMAT, "id": identity,
        "artifact": {"name": f"{manifest.target} {manifest.precision}", "target": manifest.target,
                     "precision": manifest.precision, "directory": str(artifact.resolve()), "seal": manifest.seal},
        "report_root": str(artifact.resolve().parent),
        "runtime": how.runtime, "model": how.model, "output": how.output, "outputs_are": how.outputs_are,
        "labels": manifest.labels if how.outputs_are == "log_probabilities" else None,
        "input": {"name": manifest.input.name, "shape": [batch, 3, height, width],
                  "raw_pixels": manifest.input.raw_pixels, "uint8_nhwc": how.uint8_nhwc},
        "batch": batch, "inputs": "inputs.npy", "count": count, "threads": threads,
        "protocol": timing, "budget": asdict(Budget(**budget)),
        "native": {tool: command.format(**values) for tool, command in how.native.items()},
        "notes": how.notes, "files": files,
    }  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _readme(record: dict[str, Any], how: DeviceBundle) -> str:
    runtime = RUNTIME_PACKAGES.get(how.runtime or "")
    lines = [f"# bitedge device bundle: {record['artifact']['name']}", "",
             f"Times this artifact on the device it runs on, and records its outputs on {record['count']} real "
             "images for bitedge to check against the float model. Nothing here needs bitedge or torch.",
             ""]  # fmt: skip
    if runtime:
        lines += ["## With Python (numpy and the runtime only)", "", "```sh",
                  f"python3 -m pip install numpy {runtime}",
                  "python3 run.py    # writes results.json beside it; --threads N, --out FILE", "```", ""]  # fmt: skip
    if record["native"]:
        lines += ["## With the runtime's own benchmark tool (latency only)", "", "```sh"]
        lines += [f"{command}  > {tool}.log" for tool, command in record["native"].items()] + ["```", ""]
    for name, text in how.extra_files.items():  # e.g. Core ML's Bench.swift: its own first lines say how to run it
        usage = [line.removeprefix("//").strip() for line in text.splitlines()[:4] if line.startswith("//")]
        lines += [f"## {name}", "", *usage, ""]
    lines += ["## Back on the machine that made the bundle", "", "Copy `results.json` (or the tool's log) into "
              "this folder, then:", "", "```sh", "bitedge bench --import results.json", "```", "",
              "It checks the device's outputs against the float model with the artifact's parity budget and adds "
              "a device row beside the host's latency rows in `bitedge report`."]  # fmt: skip
    lines += ["", *(f"Note: {note}" for note in record["notes"])] if record["notes"] else []
    return "\n".join(lines) + "\n"
