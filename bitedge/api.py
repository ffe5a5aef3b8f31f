"""The library API: ``convert`` and ``verify``, with the command line's options as keyword arguments.

Strings are parsed here, once, into enums and frozen dataclasses; every option combination is checked
before any heavy work; errors are exceptions of the ``BitEdgeError`` family (``BadInputError`` for bad
input), never ``SystemExit``. ``bitedge``'s command line is a thin layer over these two functions.

The demo's bundled images belong to the demo model only: any other model must name its evaluation images
(``eval_images``) and, for int8, its calibration images or table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitedge.arguments import checked
from bitedge.artifacts.integrity import Allowances
from bitedge.converters import get_converter, parse_target
from bitedge.cpu import parse_cpu
from bitedge.engines import Engine, parse_engine
from bitedge.errors import BadInputError
from bitedge.limits import check_positive
from bitedge.model.demo import DEMO_MODEL
from bitedge.model.loading import check_source
from bitedge.parity.metrics import BudgetOverride
from bitedge.pipeline.checks import (
    calibration_given,
    calibration_or_demo,
    check_fallback,
    check_partial_destination,
    check_table_destination,
    eval_images_for,
    with_calibration_defaults,
)  # fmt: skip
from bitedge.pipeline.options import ConvertRequest, parse_fallback
from bitedge.pipeline.plan import Skipped, plan
from bitedge.pipeline.result import Failure, Result
from bitedge.precisions import Precision, parse_precision

if TYPE_CHECKING:
    from bitedge.calibration.table import CalibrationTable
    from bitedge.diagnose.run import Diagnosis
    from bitedge.pipeline.sensitivity import Sensitivity

Log = Callable[[str], None]


class Conversion(list[Result]):
    """The artifacts one ``convert`` published (a list of ``Result``), the targets it left out (``skipped``)
    and the artifacts whose target failed to build them (``failures``: nothing of them was published)."""

    def __init__(self, results: Sequence[Result], skipped: Sequence[Skipped], failures: Sequence[Failure] = ()) -> None:
        super().__init__(results)
        self.skipped = list(skipped)
        self.failures = list(failures)

    @property
    def passed(self) -> bool:
        return not self.failures and all(result.passed for result in self)


@checked
def convert(
    model: str | Path = DEMO_MODEL,
    out: str | Path = "bitedge-artifacts",
    *,
    targets: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    eval_images: str | Path | None = None,
    calibration: str | Path | None = None,
    calibration_table: str | Path | None = None,
    calibration_method: str | None = None,
    calibration_size: int | None = None,
    calibration_seed: int | None = None,
    exclude: Sequence[str] | None = None,
    strict_images: bool = False,
    quantizer: str | None = None,
    image_size: int | None = None,
    batch: int | None = None,
    raw_pixel_input: bool = False,
    overwrite: bool = False,
    threads: int | None = None,
    seed: int = 0,
    target_options: Mapping[str, Mapping[str, Any]] | None = None,
    min_top1_agreement: float | None = None,
    min_cosine: float | None = None,
    max_accuracy_drop: float | None = None,
    fallback: str = "none",
    cpu: str = "auto",
    report: bool = True,
    log: Log | None = None,
) -> Conversion:
    """Convert ``model`` for every target (or those named) at every precision (or those named), verify each
    artifact in its runtime, and publish it under ``out``; several artifacts also get a report there.

    Returns one ``Result`` per artifact (``.passed``, ``.directory``, ``.manifest``, ``.report``); a failed
    artifact is still published, marked failed. ``report=False`` leaves the report to the caller (the command
    line writes it after ``--bench``, with the latencies). Raises ``BadInputError`` (and kin) before any work when the
    request cannot be done, e.g. a non-demo model without ``eval_images``.

    ``min_top1_agreement``, ``min_cosine`` and ``max_accuracy_drop`` override the precision's default parity
    budget (artifact vs float); the manifest records the budget used. ``fallback="auto"`` (int8): when the
    simulated int8 model misses that budget, the fewest most harmful layers stay float until it meets it
    with a margin, one decision every target's artifact is built from (``calibration/fallback.py``).
    ``cpu`` (int8): the CPU the x86 targets' int8 is made for, ``"avx2"`` (7-bit weights, exact on every x86
    CPU), ``"vnni"`` (8-bit weights, for CPUs with VNNI or AMX) or ``"auto"`` (this machine's; ``bitedge/cpu.py``).
    """
    log = log or (lambda _: None)
    check_source(model)
    names = [name for name in (targets or []) if name != "all"]
    given = calibration_given(
        calibration, calibration_table, calibration_method, calibration_size, calibration_seed, exclude, strict_images
    )
    named_options = {parse_target(t): values for t, values in (target_options or {}).items()}
    options = {name: get_converter(name).parse_options(values) for name, values in named_options.items()}
    request = ConvertRequest(
        model=str(model),
        out=Path(out),
        eval_images=eval_images_for(model, eval_images),
        targets=tuple(dict.fromkeys(parse_target(t) for t in names)) or None,
        precisions=tuple(dict.fromkeys(parse_precision(p) for p in precisions)) if precisions else None,
        calibration=given,
        quantizer=quantizer,
        image_size=check_positive("image_size", image_size),
        batch=check_positive("batch", batch),
        raw_pixel_input=raw_pixel_input,
        overwrite=overwrite,
        threads=check_positive("threads", threads),
        seed=seed,
        target_options=options,
        budget=BudgetOverride(min_top1_agreement, min_cosine, max_accuracy_drop),
        fallback=parse_fallback(fallback),
        cpu=parse_cpu(cpu),
    )
    jobs, skipped = plan(request)
    check_fallback(request, jobs)
    request = with_calibration_defaults(request, int8=[j.target for j in jobs if j.precision == Precision.INT8])
    for skip in skipped:
        log(f"skipping {skip.target}: {skip.reason}")
    from bitedge.pipeline.convert import convert as run

    results, failures = run(request, jobs, log=log)
    if report and results and len(jobs) > 1:
        write_report(request.out, log=log)
    return Conversion(results, skipped, failures)


def write_report(root: Path, *, log: Log) -> None:
    """report.html and report.md across the artifacts in ``root``, right after converting them: failed ones are
    shown as such (the results say so already); files changed since they were verified are warned about."""
    from bitedge.report import build_report

    log(f"writing the report in {root}")
    for problem in build_report(root, allow=Allowances(failed=True)).problems:
        log(f"warning: {problem}")


@checked
def verify(
    directory: str | Path,
    eval_images: str | Path | None = None,
    *,
    model: str | Path | None = None,
    threads: int | None = None,
    min_top1_agreement: float | None = None,
    min_cosine: float | None = None,
    max_accuracy_drop: float | None = None,
    shard: str | None = None,
    partial_out: str | Path | None = None,
    engine: str = "local",
    workers: int | None = None,
    log: Log | None = None,
) -> Result:
    """Re-run the parity gate of the artifact in ``directory`` (on ``eval_images``, or the recorded ones) and
    record the verdict in it. The budget is the one recorded in its manifest; the three limits override it.

    ``shard="I/N"`` with ``partial_out``: run only shard I of N (counted from 0) of the sorted images and write
    its partial result there, leaving the artifact as it is; ``merge`` then records the whole verdict.
    ``engine="ray"`` runs ``workers`` shards as Ray actors and merges them (the same verdict as ``"local"``).
    ``model``: where the artifact's source checkpoint is now, when it moved (checked by its sha256)."""
    from bitedge.parity.shards import ShardSpec
    from bitedge.pipeline.verify import verify as run

    if (shard is None) != (partial_out is None):
        raise BadInputError("--shard I/N and --partial-out FILE go together: a shard's result is a partial file")
    spec = ShardSpec.parse(shard) if shard is not None else None
    out = Path(partial_out) if partial_out is not None else None
    if out is not None:
        check_partial_destination(out)
    images = Path(eval_images) if eval_images is not None else None
    model_path = Path(model) if model is not None else None
    threads = check_positive("threads", threads)
    budget = BudgetOverride(min_top1_agreement, min_cosine, max_accuracy_drop)
    if parse_engine(engine) == Engine.RAY:
        if spec is not None:
            raise BadInputError("--engine ray makes its own shards (one per worker): drop --shard/--partial-out")
        from bitedge.pipeline.ray_engine import verify_on_ray

        count = check_positive("workers", workers) or 2
        return verify_on_ray(Path(directory), model_path=model_path, eval_images=images, workers=count,
                             threads=threads, budget=budget, log=log or (lambda _: None))  # fmt: skip
    if workers is not None:
        raise BadInputError("--workers sizes the Ray engine: add --engine ray, or drop --workers")
    return run(Path(directory), model_path=model_path, eval_images=images, threads=threads, budget=budget,
               shard=spec, partial_out=out, log=log or (lambda _: None))  # fmt: skip


@checked
def merge(directory: str | Path, partials: Sequence[str | Path], *, log: Log | None = None) -> Result:
    """Record the parity verdict of the artifact in ``directory`` from the partial results of all its shards
    (``verify(..., shard=..., partial_out=...)``): the same report and verdict as one unsharded ``verify``."""
    from bitedge.pipeline.verify import merge_partials

    if not partials:
        raise BadInputError("--merge needs the partial result files of every shard")
    return merge_partials(Path(directory), [Path(p) for p in partials], log=log or (lambda _: None))


@checked
def build_on_device(directory: str | Path, *, log: Log | None = None) -> Result:
    """Build what an artifact needs on the device that runs it (TensorRT's engine, from its bundle), record
    the new files in its manifest, and verify it again with them."""
    from bitedge.artifacts.manifest import Manifest

    directory, log = Path(directory), log or (lambda _: None)
    manifest = Manifest.read(directory)
    files = get_converter(manifest.target).build_on_device(directory)
    manifest.files = sorted(set(manifest.files) | set(files))
    manifest.hash_files(directory)
    manifest.write(directory)
    log(f"built {', '.join(files)} in {directory}; verifying it")
    return verify(directory, log=log)


@checked
def diagnose(
    artifact: str | Path,
    eval_images: str | Path | None = None,
    *,
    images: int = 32,
    out: str | Path | None = None,
    model: str | Path | None = None,
    threads: int | None = None,
    verify_hashes: bool = True,
    log: Log | None = None,
) -> Diagnosis:
    """Find where the artifact in ``artifact`` diverges: every layer tapped in its runtime, compared with the
    float deploy graph and (int8) the simulated model on ``images`` of ``eval_images`` (default: the recorded
    evaluation images); diagnose.json, .md and .png go to ``out`` (default: the artifact's directory). A failed
    artifact is what this is for; a modified one is refused unless ``verify_hashes=False``."""
    from bitedge.diagnose import write
    from bitedge.diagnose.run import diagnose as run

    directory = Path(artifact)
    destination = Path(out) if out is not None else directory
    write.check_out(destination)
    result = run(directory, eval_images=Path(eval_images) if eval_images is not None else None,
                 images=check_positive("images", images) or 32, model_path=Path(model) if model is not None else None,
                 threads=check_positive("threads", threads), allow=Allowances(failed=True, modified=not verify_hashes),
                 log=log or (lambda _: None))  # fmt: skip
    write.write(result, destination)
    return result


@checked
def calibrate(
    model: str | Path = DEMO_MODEL,
    out: str | Path = "calibration.json",
    *,
    calibration: str | Path | None = None,
    calibration_method: str | None = None,
    calibration_size: int | None = None,
    calibration_seed: int | None = None,
    exclude: Sequence[str] | None = None,
    strict_images: bool = False,
    image_size: int | None = None,
    raw_pixel_input: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    log: Log | None = None,
) -> CalibrationTable:
    """Compute ``model``'s int8 calibration table on ``calibration`` images and save it to ``out`` (JSON), to
    reuse with ``convert(..., calibration_table=out)``. Replaces only a calibration table (``overwrite``)."""
    from bitedge.fold import fold
    from bitedge.model.image_processor import resolve_processor
    from bitedge.model.loading import load_model
    from bitedge.pipeline.int8 import calibration_table

    out = Path(out)
    check_table_destination(out, overwrite=overwrite)
    given = calibration_given(
        calibration, None, calibration_method, calibration_size, calibration_seed, exclude, strict_images
    )
    options = calibration_or_demo(model, given)
    loaded = load_model(model, seed=seed)
    processor = resolve_processor(loaded.image_processor, check_positive("image_size", image_size))
    deploy = fold(loaded, raw_pixel_input=raw_pixel_input, processor=processor)
    table: CalibrationTable = calibration_table(
        loaded, deploy, processor, options, raw_pixels=raw_pixel_input, log=log or (lambda _: None)
    )
    table.save(out)
    return table


@checked
def sensitivity(
    model: str | Path = DEMO_MODEL,
    out: str | Path = "bitedge-sensitivity",
    *,
    eval_images: str | Path | None = None,
    targets: Sequence[str] | None = None,
    ranking_images: int | None = None,
    calibration: str | Path | None = None,
    calibration_table: str | Path | None = None,
    calibration_method: str | None = None,
    calibration_size: int | None = None,
    calibration_seed: int | None = None,
    exclude: Sequence[str] | None = None,
    strict_images: bool = False,
    image_size: int | None = None,
    raw_pixel_input: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    cpu: str = "auto",
    log: Log | None = None,
) -> Sensitivity:
    """Rank ``model``'s layers by what int8 costs when only that layer is quantized (top-1 agreement, cosine,
    SNR against float on ``eval_images``), in the int8 placement of each of ``targets`` (default: all), and
    write sensitivity.json, .md and .png into ``out``. ``ranking_images``: score on that many of the images
    the fully quantized model gets most wrong instead of all of them (faster on big sets). ``cpu``: as for
    ``convert``, the CPU the x86 placements are made for."""
    from bitedge.converters import converter_classes
    from bitedge.pipeline.sensitivity import SensitivityRequest, check_destination, run, write

    check_source(model)
    out = Path(out)
    check_destination(out, overwrite=overwrite)
    given = calibration_given(
        calibration, calibration_table, calibration_method, calibration_size, calibration_seed, exclude, strict_images
    )
    options = calibration_or_demo(model, given)
    names = [name for name in (targets or []) if name != "all"]
    request = SensitivityRequest(
        model=str(model), out=out, eval_images=eval_images_for(model, eval_images),
        calibration=options,
        targets=tuple(dict.fromkeys(parse_target(t) for t in names)) or tuple(c.name for c in converter_classes()),
        ranking_images=check_positive("ranking_images", ranking_images),
        image_size=check_positive("image_size", image_size), raw_pixel_input=raw_pixel_input, seed=seed,
        overwrite=overwrite, cpu=parse_cpu(cpu),
    )  # fmt: skip
    result = run(request, log=log or (lambda _: None))
    write(result, out)
    return result
