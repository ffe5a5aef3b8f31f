"""The conversion pipeline as a library: load -> fold -> [calibrate] -> convert -> verify -> publish.

``convert`` checks everything it can before any heavy work (targets, precisions, destinations, images),
loads and folds the model once, calibrates once if any artifact is int8, then builds each artifact in a
temp directory, runs the parity gate in the target's real runtime, writes the manifest and reports, and
only then moves the artifact into place. A parity failure still publishes the artifact (status "failed"
in its manifest) so it can be inspected; the caller decides the exit code. ``verify`` re-runs the gate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from bitedge import interrupts
from bitedge.artifact import atomic_directory, check_destination, exclusive
from bitedge.bench import current_rss_mb, peak_rss_mb
from bitedge.calibration.simulate import simulate
from bitedge.calibration.table import CalibrationTable
from bitedge.converters import get_converter
from bitedge.converters.base import ExportSpec
from bitedge.data import scan_images
from bitedge.errors import BadInputError
from bitedge.fold import fold
from bitedge.gate import Outputs, record, reference_outputs, run_parity, simulated_outputs
from bitedge.image_processor import BitImageProcessor
from bitedge.jobs import Job
from bitedge.limits import check_image_size
from bitedge.loading import DEMO_EVAL, load_model
from bitedge.manifest import Manifest
from bitedge.ownership import MANIFEST_NAME, REPORT_FILES, check_own_file
from bitedge.parity import ParityReport
from bitedge.provenance import build_manifest, file_metadata
from bitedge.quantize import (
    TABLE_FILE,
    CalibrationOptions,
    calibration_batches,
    calibration_record,
    calibration_table,
    open_source,
)
from bitedge.targets import ONNX_GROUP_NORMS, Precision, Target

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
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    quantizer: str | None = None  # int8: "bitedge" or a target's own ("nncf"); None: each target's default
    onnx_group_norm: str = ONNX_GROUP_NORMS[0]  # the onnx target's GroupNorm form
    coreml_target: str | None = None  # Core ML minimum deployment target ("iOS17", ...); None: lowest possible
    tensor_input: bool = False  # Core ML: multi-array input instead of an image


@dataclass(frozen=True)
class Result:
    directory: Path
    manifest: Manifest
    report: ParityReport
    warnings: tuple[str, ...] = ()  # e.g. a verdict that could not be written into a read-only artifact


def convert(
    model_source: str | Path, jobs: list[Job], options: ConvertOptions, *, log: Log = lambda _: None
) -> list[Result]:
    """Build, verify and publish every job's artifact from one loaded, folded model."""
    inputs = [Path(model_source), options.eval_images, options.calibration.images, options.calibration.table]
    created_root = _prepare_destinations(jobs, overwrite=options.overwrite, inputs=[p for p in inputs if p is not None])
    try:
        with contextlib.ExitStack() as locks:
            for job in jobs:
                locks.enter_context(exclusive(job.directory, log=log))
            return _convert_locked(model_source, jobs, options, log)
    finally:
        if created_root is not None:
            _remove_if_empty(created_root)


def _convert_locked(model_source: str | Path, jobs: list[Job], options: ConvertOptions, log: Log) -> list[Result]:
    log(f"loading {model_source}")
    model = load_model(model_source, seed=options.seed)
    processor = resolve_processor(model.image_processor, options.image_size)
    spec = ExportSpec(
        processor.input_size, options.batch, options.raw_pixel_input, file_metadata(model, processor),
        onnx_group_norm=options.onnx_group_norm, processor=processor, labels=tuple(model.config.labels),
        coreml_target=options.coreml_target, tensor_input=options.tensor_input,
    )  # fmt: skip
    for job in jobs:  # every option combination, before any heavy work
        get_converter(job.target).validate(job.precision, spec)
    int8 = any(job.precision == Precision.INT8 for job in jobs)
    # a bad table or calibration set fails now, not after the reference run
    calibration_source = open_source(options.calibration, processor.input_size) if int8 else None
    images = scan_images(options.eval_images, model.config.labels)
    # the reference runs before folding, so its activations never sit on top of two weight copies
    log(f"running the float reference on {len(images.files)} evaluation images{_memory()}")
    reference = reference_outputs(model, images, processor)
    log(f"folding (raw pixel input: {options.raw_pixel_input}){_memory()}")
    deploy = fold(model, raw_pixel_input=options.raw_pixel_input, processor=processor)
    release_weights(model)  # from here on the folded copy is the only one: two at most while converting
    table: CalibrationTable | None = None
    if int8:
        table = calibration_table(
            model, deploy, processor, options.calibration, raw_pixels=options.raw_pixel_input,
            source=calibration_source, log=log,
        )  # fmt: skip
        raw, calibration_options = options.raw_pixel_input, options.calibration
        spec = replace(
            spec,
            simulated=simulate(deploy, table),
            calibration=lambda: calibration_batches(processor, calibration_options, raw_pixels=raw),
            quantizer=options.quantizer,
        )
    results = []
    cache: dict[str, Outputs] = {}

    def simulated_once(network: nn.Module) -> Outputs:
        """The simulated int8 model on the evaluation images: computed once, shared by every int8 artifact."""
        if "simulated" not in cache:
            cache["simulated"] = simulated_outputs(network, images, processor, raw_pixels=options.raw_pixel_input)
        return cache["simulated"]

    for job in jobs:
        interrupts.check()
        converter = get_converter(job.target)
        with atomic_directory(job.directory, overwrite=options.overwrite) as staged:
            tmp = staged.path
            job_spec = spec
            if job is jobs[-1]:  # nothing after this artifact needs the folded weights: let the converter free them
                if job.precision == Precision.INT8 and spec.simulated is not None:
                    simulated_once(spec.simulated)  # while its weights still exist
                job_spec = replace(spec, release_source=lambda: release_weights(deploy, spec.simulated))
            log(f"converting to {job.target} {job.precision}{_memory()}")
            converted = converter.convert(deploy, tmp, precision=job.precision, spec=job_spec)
            files = list(converted.files)
            calibration = None
            if job.precision == Precision.INT8 and table is not None:
                table.save(tmp / TABLE_FILE)
                files.append(TABLE_FILE)
                calibration = calibration_record(table, quantizer=converted.quantizer)
            manifest = build_manifest(
                model, processor, converter, target=job.target, precision=job.precision, spec=spec, files=files,
                seed=options.seed, calibration=calibration,
            )  # fmt: skip
            manifest.hash_files(tmp)
            simulated: Outputs | None = None
            if converted.simulated_reference and spec.simulated is not None:
                simulated = simulated_once(spec.simulated)
            if job is jobs[-1]:  # the folded weights are done with: the runtime's copy is the only one now
                release_weights(deploy, spec.simulated)
            log(f"verifying {job.target} {job.precision} in its runtime on {len(images.files)} images{_memory()}")
            runner = converter.load_runner(tmp, manifest, threads=options.threads)
            report = run_parity(
                reference, runner, images, processor, converter, manifest, notes=converted.notes,
                simulated=simulated,
                extra_runners=converter.informational_runners(tmp, manifest),
            )  # fmt: skip
            record(tmp, manifest, report, images)
            staged.passed = report.passed
        directory = job.directory
        if staged.published is not None and staged.published != job.directory.absolute():
            directory = staged.published
            log(f"{job.target} {job.precision} FAILED its parity gate: published to {directory}, beside the "
                f"passing artifact {job.directory}, which is kept as it was")  # fmt: skip
        log(f"published {directory}{_memory()}")
        results.append(Result(directory, manifest, report))
    return results


def verify(
    directory: str | Path, *, eval_images: Path | None = None, threads: int | None = None, log: Log = lambda _: None
) -> Result:
    """Re-run the parity gate on an existing artifact, from its manifest; updates its reports."""
    directory = Path(directory)
    manifest = Manifest.read(directory)
    changed = manifest.changed_files(directory)
    converter = get_converter(Target(manifest.target))
    converter.check_runtime()
    source = manifest.source
    log(f"loading the float reference {source.path}")
    model = load_model(source.path, seed=source.seed or 0)
    if model.source.sha256 != source.sha256:
        raise BadInputError(
            f"{source.path} changed since the artifact was made (sha256 differs); convert again to verify"
        )
    processor = BitImageProcessor.from_dict(manifest.preprocessing)
    recorded = manifest.parity.get("eval", {}).get("path")
    if eval_images is None and recorded is None:
        raise BadInputError("no evaluation images recorded in the manifest; pass --eval DIR")
    images = scan_images(eval_images or Path(recorded), model.config.labels)
    simulated = None
    calibration = manifest.calibration
    if manifest.precision == Precision.INT8 and calibration is not None and calibration.quantizer in (None, "bitedge"):
        table = CalibrationTable.load(directory / calibration.table)
        folded = manifest.input.folded
        network = simulate(fold(model, raw_pixel_input=folded, processor=processor), table)
        simulated = simulated_outputs(network, images, processor, raw_pixels=folded)
        del network
    log(f"verifying {directory} on {len(images.files)} images")
    reference = reference_outputs(model, images, processor)
    release_weights(model)
    runner = converter.load_runner(directory, manifest, threads=threads)
    report = run_parity(
        reference, runner, images, processor, converter, manifest, simulated=simulated,
        extra_runners=converter.informational_runners(directory, manifest),
    )  # fmt: skip
    if changed:  # whatever the numbers say now, this is no longer the artifact that was converted and verified
        report.problems.append(
            f"{', '.join(changed)} changed since the artifact was written (sha256 differs from bitedge.json); "
            "convert again"
        )
    try:
        record(directory, manifest, report, images)
    except OSError as exc:  # a read-only artifact: the verdict still stands, it just cannot be stored there
        reason = exc.strerror or str(exc)
        return Result(directory, manifest, report, (f"{directory}: could not write parity.json, parity.md or "
                      f"bitedge.json ({reason}); the verdict above was not recorded in the artifact",))  # fmt: skip
    return Result(directory, manifest, report)


def release_weights(*models: nn.Module | None) -> None:
    """Free models' weights once they are no longer needed; the modules (config, source) stay."""
    for model in models:
        if model is not None:
            model.to(torch.device("meta"))


def _memory() -> str:
    """' (RSS 3.2 GiB, peak 8.6 GiB)': this process's memory now and so far, for the progress log (Linux)."""
    now = current_rss_mb()
    return f" (RSS {now / 1024:.1f} GiB, peak {peak_rss_mb() / 1024:.1f} GiB)" if now else ""


def resolve_processor(processor: BitImageProcessor | None, image_size: int | None) -> BitImageProcessor:
    """The checkpoint's preprocessing (BiT's default when it has none), resized to ``image_size`` if given."""
    if processor is None:
        processor = BitImageProcessor(resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if image_size is not None:
        processor = replace(
            processor, size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
        )
    check_image_size(processor.input_size, "--image-size" if image_size else "the checkpoint's preprocessing")
    return processor


def _prepare_destinations(jobs: list[Job], *, overwrite: bool, inputs: list[Path]) -> Path | None:
    """Fail before any work if an artifact cannot be written; create the root of several artifacts.

    A destination that is, or contains, one of the ``inputs`` (the model, its images) is refused: replacing
    it would delete what the conversion reads. Returns the root directory when this call created it.
    """
    for job in jobs:
        destination = job.directory.resolve()
        for source in inputs:
            if source.exists() and (source.resolve() == destination or destination in source.resolve().parents):
                raise BadInputError(
                    f"--out {job.directory} would replace {source}, an input of this conversion; choose another --out"
                )
    created = None
    if len(jobs) > 1:
        root = jobs[0].directory.parent
        if (root / MANIFEST_NAME).exists():
            raise BadInputError(
                f"{root}: is an artifact directory; several artifacts need a directory of their own "
                "(they go into <out>/<target>-<precision>/): choose another --out"
            )
        for name in REPORT_FILES:  # rebuilt at the end: only bitedge's own may be there
            check_own_file(root / name)
        if not root.exists():
            try:
                root.mkdir(parents=True)
            except OSError as exc:
                raise BadInputError(
                    f"{root}: cannot create the output directory ({exc.strerror}); choose another --out"
                ) from None
            created = root
    try:
        for job in jobs:
            check_destination(job.directory.absolute(), overwrite=overwrite)
    except BaseException:
        if created is not None:
            _remove_if_empty(created)
        raise
    return created


def _remove_if_empty(directory: Path) -> None:
    """Remove a directory this run created if nothing was published into it (locks are gone by now)."""
    with contextlib.suppress(OSError):
        directory.rmdir()
