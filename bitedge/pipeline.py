"""The conversion pipeline as a library: load -> fold -> convert -> verify -> publish; and re-verify.

``convert`` checks everything it can before any heavy work (target, precision, destination, images), builds
the artifact in a temp directory, runs the parity gate in the target's real runtime, writes the manifest
and reports, and only then moves the artifact into place. A parity failure still publishes the artifact
(status "failed" in its manifest) so it can be inspected; the caller decides the exit code.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bitedge import __version__
from bitedge.artifact import Manifest, atomic_directory, check_destination, write_json_atomic
from bitedge.converters import get_converter
from bitedge.converters.base import Converter, ExportSpec, Runner
from bitedge.data import Batches, ImageSet, scan_images
from bitedge.errors import BadInputError
from bitedge.fold import fold
from bitedge.image_processor import BitImageProcessor
from bitedge.jobs import Job
from bitedge.loading import DEMO_EVAL, load_model
from bitedge.modeling import BitPreTrainedModel
from bitedge.parity import Comparison, ParityReport, compare, violations
from bitedge.targets import Precision, Target

Log = Callable[[str], None]


@dataclass(frozen=True)
class ConvertOptions:
    eval_images: Path = DEMO_EVAL
    image_size: int | None = None  # overrides the checkpoint's resize/crop size
    batch: int | None = None  # None: dynamic batch dimension
    raw_pixel_input: bool = False
    overwrite: bool = False
    threads: int | None = None  # runtime threads during verification
    seed: int = 0  # weight seed, for presets


@dataclass(frozen=True)
class Result:
    directory: Path
    manifest: Manifest
    report: ParityReport


def convert(
    model_source: str | Path, jobs: list[Job], options: ConvertOptions, *, log: Log = lambda _: None
) -> list[Result]:
    """Build, verify and publish every job's artifact from one loaded, folded model."""
    if len(jobs) > 1:  # several artifacts: --out is their root, created now so that every check below is real
        root = jobs[0].directory.parent
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInputError(
                f"{root}: cannot create the output directory ({exc.strerror}); choose another --out"
            ) from None
    for job in jobs:
        check_destination(job.directory.absolute(), overwrite=options.overwrite)
    log(f"loading {model_source}")
    model = load_model(model_source, seed=options.seed)
    processor = resolve_processor(model.image_processor, options.image_size)
    images = scan_images(options.eval_images, model.config.labels)
    log(f"folding (raw pixel input: {options.raw_pixel_input})")
    deploy = fold(model, raw_pixel_input=options.raw_pixel_input, processor=processor)
    spec = ExportSpec(processor.input_size, options.batch, options.raw_pixel_input, _metadata(model, processor))
    results = []
    for job in jobs:
        converter = get_converter(job.target)
        with atomic_directory(job.directory, overwrite=options.overwrite) as tmp:
            log(f"converting to {job.target} {job.precision}")
            converted = converter.convert(deploy, tmp, precision=job.precision, spec=spec)
            manifest = _manifest(model, processor, converter, job, options, spec, converted.files)
            log(f"verifying {job.target} {job.precision} in its runtime on {len(images.files)} images")
            runner = converter.load_runner(tmp, manifest, threads=options.threads)
            report = run_parity(model, runner, images, processor, converter, manifest, notes=converted.notes)
            _record(tmp, manifest, report, images)
        results.append(Result(job.directory, manifest, report))
    return results


def verify(
    directory: str | Path, *, eval_images: Path | None = None, threads: int | None = None, log: Log = lambda _: None
) -> Result:
    """Re-run the parity gate on an existing artifact, from its manifest; updates its reports."""
    directory = Path(directory)
    manifest = Manifest.read(directory)
    converter = get_converter(Target(manifest.target))
    converter.check_runtime()
    source = manifest.source
    log(f"loading the float reference {source['path']}")
    model = load_model(source["path"], seed=source.get("seed", 0))
    if model.source.sha256 != source.get("sha256"):
        raise BadInputError(
            f"{source['path']} changed since the artifact was made (sha256 differs); convert again to verify"
        )
    processor = BitImageProcessor.from_dict(manifest.preprocessing)
    recorded = manifest.parity.get("eval", {}).get("path")
    if eval_images is None and recorded is None:
        raise BadInputError("no evaluation images recorded in the manifest; pass --eval DIR")
    images = scan_images(eval_images or Path(recorded), model.config.labels)
    runner = converter.load_runner(directory, manifest, threads=threads)
    log(f"verifying {directory} on {len(images.files)} images")
    report = run_parity(model, runner, images, processor, converter, manifest)
    _record(directory, manifest, report, images)
    return Result(directory, manifest, report)


def resolve_processor(processor: BitImageProcessor | None, image_size: int | None) -> BitImageProcessor:
    """The checkpoint's preprocessing (BiT's default when it has none), resized to ``image_size`` if given."""
    if processor is None:
        processor = BitImageProcessor(resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if image_size is not None:
        processor = replace(
            processor, size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    return processor


def run_parity(
    model: BitPreTrainedModel,
    runner: Runner,
    images: ImageSet,
    processor: BitImageProcessor,
    converter: Converter,
    manifest: Manifest,
    *,
    notes: list[str] | None = None,
) -> ParityReport:
    """Float reference (unfolded) vs the artifact in its runtime, on every readable image of ``images``."""
    from tqdm import tqdm

    raw = bool(manifest.input.get("raw_pixels"))
    batches = Batches(images, processor, batch_size=16, raw_pixels=raw)
    reference, artifact, labels = [], [], []
    total = -(-len(images.files) // batches.batch_size)
    for normalized, raw_pixels, batch_labels in tqdm(batches, total=total, desc="parity", unit="batch", leave=False):
        with torch.no_grad():
            reference.append(model(torch.from_numpy(normalized)).logits.numpy())
        artifact.append(runner(raw_pixels if raw_pixels is not None else normalized))
        if batch_labels is not None:
            labels.append(batch_labels)
    if not reference:
        raise BadInputError(f"{images.root}: none of the {len(images.files)} images could be read")
    metrics = compare(np.concatenate(reference), np.concatenate(artifact), np.concatenate(labels) if labels else None)
    budget = converter.budget(Precision(manifest.precision))
    comparison = Comparison("artifact vs float reference", budget, metrics, violations(metrics, budget))
    all_notes = list(notes or [])
    if batches.skipped:
        all_notes.append(f"skipped {len(batches.skipped)} unreadable images, e.g. {batches.skipped[0]}")
    if images.note:
        all_notes.append(images.note)
    return ParityReport(manifest.target, manifest.precision, [comparison], all_notes)


def _record(directory: Path, manifest: Manifest, report: ParityReport, images: ImageSet) -> None:
    """Write parity.json, parity.md and the manifest (with its parity summary) into ``directory``."""
    write_json_atomic(directory / "parity.json", report.to_dict())
    (directory / "parity.md").write_text(report.to_markdown(), encoding="utf-8")
    first = report.comparisons[0].metrics
    manifest.status = "passed" if report.passed else "failed"
    manifest.parity = {
        "passed": report.passed,
        "eval": {"path": str(images.root.absolute()), "images": first.samples, "listed": len(images.files)},
        "comparisons": {c.name: {"passed": c.passed, "failures": c.failures} for c in report.comparisons},
        "top1_agreement": first.top1_agreement,
        "top5_agreement": first.top5_agreement,
        "max_abs_diff": first.max_abs_diff,
        "cosine_mean": first.cosine_mean,
        "snr_db": first.snr_db,
        "reference_accuracy": first.reference_accuracy,
        "artifact_accuracy": first.artifact_accuracy,
        "report": "parity.json",
    }
    manifest.write(directory)


def _manifest(
    model: BitPreTrainedModel,
    processor: BitImageProcessor,
    converter: Converter,
    job: Job,
    options: ConvertOptions,
    spec: ExportSpec,
    files: list[str],
) -> Manifest:
    assert model.source is not None  # load_model always sets it
    batch: int | str = spec.batch if spec.batch is not None else "batch"
    source: dict[str, Any] = {"path": model.source.path, "format": model.source.format, "sha256": model.source.sha256}
    if model.source.format == "preset":
        source["seed"] = options.seed
    return Manifest(
        target=job.target.value,
        precision=job.precision.value,
        files=files,
        input={
            "name": "pixel_values",
            "shape": [batch, 3, *spec.input_size],
            "dtype": "float32",
            "layout": "NCHW, RGB",
            "raw_pixels": spec.raw_pixel_input,
        },
        output={"name": "logits", "shape": [batch, model.config.num_labels]},
        source=source,
        model_config=model.config.to_dict(),
        preprocessing=processor.to_dict(),
        labels=model.config.labels,
        tool_versions=_tool_versions(converter),
    )


def _tool_versions(converter: Converter) -> dict[str, str]:
    return {
        "bitedge": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        **converter.tool_versions(),
    }


def _metadata(model: BitPreTrainedModel, processor: BitImageProcessor) -> dict[str, str]:
    """Key/value strings embedded in the runtime file itself (ONNX metadata_props, OpenVINO rt_info, ...)."""
    source: dict[str, Any] = {}
    if model.source is not None:
        source = {"path": model.source.path, "format": model.source.format, "sha256": model.source.sha256}
    return {
        "bitedge.version": __version__,
        "bitedge.labels": json.dumps(model.config.labels),
        "bitedge.preprocessing": json.dumps(processor.to_dict()),
        "bitedge.source": json.dumps(source),
        "bitedge.python": sys.version.split()[0],
    }
