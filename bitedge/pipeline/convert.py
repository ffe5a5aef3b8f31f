"""The conversion, step by step: load -> reference -> fold -> [calibrate] -> per artifact: export -> gate ->
publish.

``convert`` checks everything it can before any heavy work (destinations, option combinations, the
calibration source, the images), loads and folds the model once, calibrates once if any artifact is int8,
then builds each artifact in a temp directory, runs the parity gate in the target's real runtime, writes the
manifest and reports, and only then moves the artifact into place. A parity failure still publishes the
artifact (status "failed"), beside a passing one it never replaces; the caller decides the exit code. A
target whose own code fails (``ExportError``, ``TargetError``) fails that artifact alone: nothing of it is
published, the others still build. The shared deploy graph is checked after each converter (``guard``).

Memory: the float reference runs before folding, so its activations never sit on two weight copies; after
folding, the folded copy is the only one; the last artifact's converter frees it (``release_weights``) as
soon as its runtime holds its own copy.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from bitedge import interrupts
from bitedge.artifacts.ownership import MANIFEST_NAME, REPORT_FILES, check_own_file
from bitedge.artifacts.publish import Staged, atomic_directory, check_destination, exclusive
from bitedge.calibration.placement import Placement
from bitedge.calibration.simulate import simulate
from bitedge.calibration.table import CalibrationTable
from bitedge.converters import get_converter
from bitedge.converters.base import ConvertedFiles, ExportSpec, TargetRunner, keep_weights, target_code
from bitedge.converters.registry import is_builtin
from bitedge.errors import BadInputError, BitEdgeError, CalibrationError, ExportError, TargetError
from bitedge.fold import fold
from bitedge.memory import current_rss_mb, peak_rss_mb
from bitedge.model.image_processor import resolve_processor
from bitedge.model.loading import load_model
from bitedge.parity.gate import Outputs, record, run_parity, simulated_outputs
from bitedge.parity.images import scan_images
from bitedge.parity.metrics import Budget
from bitedge.parity.reference_cache import cached_reference_outputs
from bitedge.pipeline.guard import changes, fingerprint
from bitedge.pipeline.int8 import (
    TABLE_FILE,
    calibration_batches,
    calibration_record,
    calibration_table,
    fallback,
    open_source,
    search_set,
)  # fmt: skip
from bitedge.pipeline.options import ConvertRequest, Fallback
from bitedge.pipeline.plan import Job
from bitedge.pipeline.provenance import build_manifest, file_metadata
from bitedge.pipeline.result import Failure, Result
from bitedge.precisions import Precision

Log = Callable[[str], None]


def convert(
    request: ConvertRequest, jobs: list[Job], *, log: Log = lambda _: None
) -> tuple[list[Result], list[Failure]]:
    """Build, verify and publish every job's artifact from one loaded, folded model: the published artifacts,
    and the jobs whose target failed to build or run one."""
    calibration = request.calibration
    inputs = [Path(request.model), request.eval_images]
    inputs += [p for p in (calibration.images, calibration.table) if p is not None] if calibration else []
    created_root = _prepare_destinations(jobs, overwrite=request.overwrite, inputs=inputs)
    try:
        with contextlib.ExitStack() as locks:
            for job in jobs:
                locks.enter_context(exclusive(job.directory, log=log))
            conversion = _Conversion(request, jobs, log)
            conversion.load()
            conversion.run_reference()
            conversion.fold()
            conversion.calibrate()
            built = [conversion.build(job) for job in jobs]
            return [b for b in built if isinstance(b, Result)], [b for b in built if isinstance(b, Failure)]
    finally:
        if created_root is not None:
            _remove_if_empty(created_root)


class _Conversion:
    """One conversion's state; each public method is one step, in the order ``convert`` calls them."""

    def __init__(self, request: ConvertRequest, jobs: list[Job], log: Log) -> None:
        self.request, self.jobs, self.log = request, jobs, log
        self.int8 = [job for job in jobs if job.precision == Precision.INT8]  # the int8 jobs
        self.table: CalibrationTable | None = None
        self._simulated: dict[Placement, tuple[nn.Module, Outputs | None]] = {}  # per placement: model, its outputs

    def load(self) -> None:
        """The float model, its preprocessing and the evaluation images; every option checked, no heavy work."""
        request = self.request
        self.log(f"loading {request.model}")
        self.model = load_model(request.model, seed=request.seed)
        self.processor = resolve_processor(self.model.image_processor, request.image_size)
        self.spec = ExportSpec(
            self.processor.input_size, request.batch, request.raw_pixel_input,
            file_metadata(self.model, self.processor), processor=self.processor,
            labels=tuple(self.model.config.labels),
        )  # fmt: skip
        for job in self.jobs:  # every target's option combination, before any heavy work
            get_converter(job.target).validate(job.precision, self._job_spec(job))
        # a bad table or calibration set fails now, not after the reference pass
        self.calibration_source = None
        if self.int8 and request.calibration is not None:
            self.calibration_source = open_source(request.calibration, self.processor.input_size)
            if isinstance(self.calibration_source, CalibrationTable):  # its layers are checked once folded
                self.calibration_source.check_matches(
                    model_sha256=self.model.source.sha256 if self.model.source else None,
                    size=list(self.processor.input_size), raw_pixels=request.raw_pixel_input, layers=[],
                )  # fmt: skip
        self.images = scan_images(request.eval_images, self.model.config.labels)

    def run_reference(self) -> None:
        """The unfolded float model on the evaluation images: what every artifact is compared with."""
        self.log(f"running the float reference on {len(self.images.files)} evaluation images{_memory()}")
        self.reference = cached_reference_outputs(self.model, self.images, self.processor, log=self.log)

    def fold(self) -> None:
        """The deploy graph (weight standardization folded); the unfolded weights are freed."""
        raw = self.request.raw_pixel_input
        self.log(f"folding (raw pixel input: {raw}){_memory()}")
        self.deploy = fold(self.model, raw_pixel_input=raw, processor=self.processor)
        release_weights(self.model)  # from here on the folded copy is the only one: two at most while converting

    def calibrate(self) -> None:
        """int8 only: the calibration table (computed or reused); each target's simulated model follows from it."""
        calibration = self.request.calibration
        if not self.int8:
            return
        if calibration is None:
            raise BadInputError("int8 needs calibration images or a calibration table (--calibration)")
        raw = self.request.raw_pixel_input
        self.table = calibration_table(
            self.model, self.deploy, self.processor, calibration, raw_pixels=raw, source=self.calibration_source,
            log=self.log,
        )  # fmt: skip
        per_cpu = {self.placement(job).name for job in self.int8 if self._per_cpu(job)}
        if per_cpu:
            self.log(f"int8 placement {', '.join(sorted(per_cpu))}, made for {self.request.cpu.describe()}")
        if self.request.fallback is Fallback.AUTO:
            self.table = self._fallback(self.table)
        processor = self.processor
        self.spec = replace(
            self.spec,
            calibration=lambda: calibration_batches(processor, calibration, raw_pixels=raw),
            quantizer=self.request.quantizer,
        )

    def _fallback(self, table: CalibrationTable) -> CalibrationTable:
        """``--fallback auto``: float layers until every int8 job's simulated model meets its budget."""
        checks = list(dict.fromkeys((self.placement(job), self.budget(job)) for job in self.int8))
        self.log(f"searching for the fewest float layers that meet the int8 budget{_memory()}")
        raw = self.request.raw_pixel_input
        search = search_set(self.deploy, self.images, self.processor, raw_pixels=raw)
        return fallback(self.deploy, table, checks, search, log=self.log).table

    def build(self, job: Job) -> Result | Failure:
        """Export one artifact, gate it in its runtime, publish it (beside a passing one if it failed); a
        target that fails to build or run it publishes nothing."""
        interrupts.check()
        try:
            with atomic_directory(job.directory, overwrite=self.request.overwrite) as staged:
                converted = self._export(job, staged.path)
                result = self._gate(job, staged, converted)
        except ExportError as exc:
            interrupts.check()  # a runtime's rewrapped Ctrl-C is an interruption, not the target's failure
            self.log(f"{job.target} {job.precision} FAILED to build: {exc}")
            return Failure(job.target, job.precision, job.directory, str(exc))
        directory = job.directory
        if staged.published is not None and staged.published != job.directory.absolute():
            directory = staged.published
            self.log(f"{job.target} {job.precision} FAILED its parity gate: published to {directory}, beside "
                     f"the passing artifact {job.directory}, which is kept as it was")  # fmt: skip
        self.log(f"published {directory}{_memory()}")
        return replace(result, directory=directory)

    def _export(self, job: Job, tmp: Path) -> ConvertedFiles:
        spec, last = self._job_spec(job), job is self.jobs[-1]
        release = keep_weights
        if last:  # nothing after this artifact needs the folded weights: the converter frees them when it can
            if job.precision == Precision.INT8:
                self._simulated_outputs(job)  # while the simulated model's weights still exist
            release = self._release_folded
        self.log(f"converting to {job.target} {job.precision}{_memory()}")
        # an outside target gets its own copy: whatever it does, the built-ins after it get the graph intact
        own = not last and not is_builtin(job.target)
        deploy = copy.deepcopy(self.deploy) if own else self.deploy
        if own and spec.simulated is not None:
            spec = replace(spec, simulated=copy.deepcopy(spec.simulated))
        before = None if last else fingerprint(deploy)
        with target_code(job.target, f"convert to {job.precision}"):
            converted = get_converter(job.target).convert(
                deploy, tmp, precision=job.precision, spec=spec, release_weights=release
            )
        changed = changes(before, fingerprint(deploy)) if before is not None else []
        if changed:
            what = (
                f"the {job.target} target changed the deploy graph it was given ({', '.join(changed[:3])}), "
                "which every artifact of a run shares; a converter must work on a copy (docs/design.md)"
            )
            if own:
                raise TargetError(what)
            raise BitEdgeError(f"{what}: stopping, since the artifacts after it would be built from a changed model")
        if last:
            self._release_folded()  # whether or not the converter did: the runtime's copy is the only one now
        if job.precision == Precision.INT8 and self.table is not None:
            self.table.save(tmp / TABLE_FILE)
            converted = replace(converted, files=[*converted.files, TABLE_FILE])
        return converted

    def _gate(self, job: Job, staged: Staged, converted: ConvertedFiles) -> Result:
        converter, tmp = get_converter(job.target), staged.path
        calibration = None
        if job.precision == Precision.INT8 and self.table is not None:
            placement = self.placement(job) if converted.simulated_reference else None
            cpu = self.request.cpu if placement is not None and self._per_cpu(job) else None
            calibration = calibration_record(self.table, quantizer=converted.quantizer, placement=placement, cpu=cpu)
        manifest = build_manifest(
            self.model, self.processor, converter, precision=job.precision, spec=self._job_spec(job),
            files=list(converted.files), seed=self.request.seed, calibration=calibration,
        )  # fmt: skip
        manifest.hash_files(tmp)
        simulated = self._simulated_outputs(job) if converted.simulated_reference else None
        self.log(f"verifying {job.target} {job.precision} in its runtime on {len(self.images.files)} images{_memory()}")
        with target_code(job.target, "load the artifact in its runtime"):
            extra = converter.informational_runners(tmp, manifest)
        report = run_parity(
            self.reference, converter.open_runner(tmp, manifest, threads=self.request.threads), self.images,
            self.processor, manifest, budget=self.budget(job), simulated=simulated,
            extra_runners={name: TargetRunner(job.target, run) for name, run in extra.items()}, notes=converted.notes,
        )  # fmt: skip
        record(tmp, manifest, report, self.images)
        staged.passed = report.passed
        return Result(job.directory, manifest, report)

    def placement(self, job: Job) -> Placement:
        """Where the job's int8 Q/DQ go: its target's placement, for the CPU the request names."""
        return get_converter(job.target).int8_placement(self.request.cpu.cpu)

    @staticmethod
    def _per_cpu(job: Job) -> bool:
        """Whether the job's target places int8 differently per CPU (``--cpu`` changes it)."""
        return len(get_converter(job.target).int8_placements()) > 1

    def budget(self, job: Job) -> Budget:
        """The job's parity budget: its precision's default on its target, with the limits the user set."""
        return self.request.budget.apply(get_converter(job.target).budget(job.precision))

    def _job_spec(self, job: Job) -> ExportSpec:
        spec = replace(self.spec, options=self.request.options_for(job.target))
        if job.precision != Precision.INT8 or self.table is None:
            return spec
        placement = self.placement(job)
        return replace(spec, simulated=self._simulated_model(placement), placement=placement)

    def _simulated_model(self, placement: Placement) -> nn.Module:
        """The simulated int8 model in a target's placement: built once per placement, shared by its targets."""
        if placement not in self._simulated:
            if self.table is None:  # int8 jobs only, after calibrate()
                raise CalibrationError("int8 needs a calibration table, and none was made or given")
            self._simulated[placement] = (simulate(self.deploy, self.table, placement), None)
        return self._simulated[placement][0]

    def _simulated_outputs(self, job: Job) -> Outputs:
        """The job's simulated model on the evaluation images: computed once per placement."""
        placement = self.placement(job)
        model, outputs = self._simulated_model(placement), self._simulated[placement][1]
        if outputs is None:
            raw = self.request.raw_pixel_input
            outputs = simulated_outputs(model, self.images, self.processor, raw_pixels=raw)
            self._simulated[placement] = (model, outputs)
        return outputs

    def _release_folded(self) -> None:
        release_weights(self.deploy, *(model for model, _ in self._simulated.values()))


def release_weights(*models: nn.Module | None) -> None:
    """Free models' weights once they are no longer needed; the modules (config, source) stay."""
    for model in models:
        if model is not None:
            model.to(torch.device("meta"))


def _memory() -> str:
    """' (RSS 3.2 GiB, peak 8.6 GiB)': this process's memory now and so far, for the progress log (Linux)."""
    now = current_rss_mb()
    return f" (RSS {now / 1024:.1f} GiB, peak {peak_rss_mb() / 1024:.1f} GiB)" if now else ""


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
