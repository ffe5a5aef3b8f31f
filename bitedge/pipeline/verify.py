"""``verify``: the parity gate again, on an existing artifact, from what its manifest records.

The float reference is loaded from the recorded checkpoint (refused if its sha256 changed), the simulated
model rebuilt from the artifact's own calibration table, and the artifact run in its runtime. Files that
changed since the artifact was written fail it, whatever the numbers say. A verdict that cannot be written
into the artifact (read-only) is still returned, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bitedge.artifacts.integrity import changed_files
from bitedge.artifacts.manifest import Manifest
from bitedge.artifacts.records import parse_record
from bitedge.calibration.simulate import simulate
from bitedge.calibration.table import CalibrationTable
from bitedge.converters import get_converter
from bitedge.errors import BadInputError
from bitedge.fold import fold
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.loading import load_model
from bitedge.parity.gate import Outputs, record, run_parity, simulated_outputs
from bitedge.parity.images import ImageSet, scan_images
from bitedge.parity.metrics import Budget, BudgetOverride
from bitedge.parity.reference_cache import cached_reference_outputs
from bitedge.pipeline.convert import release_weights
from bitedge.pipeline.result import Result
from bitedge.precisions import Precision


def verify(
    directory: str | Path,
    *,
    eval_images: Path | None = None,
    threads: int | None = None,
    budget: BudgetOverride | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Result:
    """Re-run the parity gate on an existing artifact; updates its reports and status.

    The budget is the one the artifact was last verified with (recorded in its manifest), or its precision's
    default for an artifact that records none; ``budget`` overrides single limits of it."""
    directory = Path(directory)
    manifest = Manifest.read(directory)
    changed = changed_files(directory, manifest)
    converter = get_converter(manifest.target)
    converter.check_runtime()
    source = manifest.source
    log(f"loading the float reference {source.path}")
    model = load_model(source.path, seed=source.seed or 0)
    if model.source.sha256 != source.sha256:
        raise BadInputError(f"{source.path} changed since the artifact was made (sha256 differs); convert again")
    processor = BitImageProcessor.from_dict(manifest.preprocessing)
    recorded = manifest.parity.get("eval", {}).get("path")
    if eval_images is None and recorded is None:
        raise BadInputError("no evaluation images recorded in the manifest; pass --eval DIR")
    images = scan_images(eval_images or Path(recorded), model.config.labels)
    simulated = _simulated(directory, manifest, model, processor, images)
    log(f"verifying {directory} on {len(images.files)} images")
    reference = cached_reference_outputs(model, images, processor, log=log)
    release_weights(model)
    default = _recorded_budget(directory, manifest, converter.budget(Precision(manifest.precision)))
    report = run_parity(
        reference, converter.load_runner(directory, manifest, threads=threads), images, processor, manifest,
        budget=(budget or BudgetOverride()).apply(default), simulated=simulated,
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
        warning = (f"{directory}: could not write parity.json, parity.md or bitedge.json ({exc.strerror or exc}); "
                   "the verdict above was not recorded in the artifact")  # fmt: skip
        return Result(directory, manifest, report, (warning,))
    return Result(directory, manifest, report)


def _recorded_budget(directory: Path, manifest: Manifest, default: Budget) -> Budget:
    recorded = manifest.parity.get("budget")
    return default if recorded is None else parse_record(Budget, recorded, f"{directory}/bitedge.json: parity.budget")


def _simulated(
    directory: Path, manifest: Manifest, model: object, processor: BitImageProcessor, images: ImageSet
) -> Outputs | None:
    """For an int8 artifact made from bitedge's table: the simulated model rebuilt from that table, run."""
    calibration = manifest.calibration
    if manifest.precision != Precision.INT8 or calibration is None or calibration.quantizer not in (None, "bitedge"):
        return None
    table = CalibrationTable.load(directory / calibration.table)
    folded = manifest.input.folded
    placement = get_converter(manifest.target).placement
    if calibration.placement not in (None, placement.name):
        raise BadInputError(
            f"{directory}: its int8 graph has the {calibration.placement} Q/DQ placement; this bitedge's "
            f"{manifest.target} target places {placement.name}, so its simulated model would not match: convert again"
        )
    network = simulate(fold(model, raw_pixel_input=folded, processor=processor), table, placement)  # type: ignore[arg-type]
    return simulated_outputs(network, images, processor, raw_pixels=folded)
