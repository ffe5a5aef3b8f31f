"""``verify``: the parity gate again, on an existing artifact, from what its manifest records.

The float reference is loaded from the recorded checkpoint (refused if its sha256 changed), the simulated
model rebuilt from the artifact's own calibration table, and the artifact run in its runtime. Files that
changed since the artifact was written fail it, whatever the numbers say. A verdict that cannot be written
into the artifact (read-only) is still returned, with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bitedge.artifacts.integrity import changed_files
from bitedge.artifacts.manifest import Manifest, seal_state
from bitedge.artifacts.records import parse_record
from bitedge.converters import get_converter
from bitedge.converters.base import TargetRunner, target_code
from bitedge.errors import ArtifactRefusedError, BadInputError
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.modeling import BitPreTrainedModel
from bitedge.parity.gate import Outputs, artifact_outputs, gather, parity_report, record, simulated_outputs
from bitedge.parity.images import ImageSet, scan_images
from bitedge.parity.metrics import Budget, BudgetOverride, ParityReport
from bitedge.parity.reference_cache import cached_reference_outputs
from bitedge.parity.shards import (
    Partial,
    ShardHeader,
    ShardSpec,
    artifact_digest,
    budget_of,
    image_set_digest,
    merge,
    read_partial,
    write_partial,
)
from bitedge.pipeline.convert import release_weights
from bitedge.pipeline.rebuild import deploy_graph, float_reference, simulated_model
from bitedge.pipeline.result import Result
from bitedge.precisions import Precision


def verify(
    directory: str | Path,
    *,
    model_path: Path | None = None,
    eval_images: Path | None = None,
    threads: int | None = None,
    budget: BudgetOverride | None = None,
    shard: ShardSpec | None = None,
    partial_out: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Result:
    """Re-run the parity gate on an existing artifact; updates its reports and status.

    The budget is the one the artifact was last verified with (recorded in its manifest), or its precision's
    default for an artifact that records none; ``budget`` overrides single limits of it. With ``shard``, only
    that shard of the images runs and its result goes to ``partial_out`` (merged later with ``merge``); the
    artifact is left as it is. ``model_path``: where the source checkpoint is now, if it moved (it must be the one
    the manifest records, by sha256)."""
    directory = Path(directory)
    manifest = Manifest.read(directory)
    unsealed = _check_seal(directory)
    changed = changed_files(directory, manifest)
    converter = get_converter(manifest.target)
    converter.check_runtime()
    model = float_reference(manifest, model_path, log)
    processor = BitImageProcessor.from_dict(manifest.preprocessing)
    recorded = manifest.parity.get("eval", {}).get("path")
    if eval_images is None and recorded is None:
        raise BadInputError("no evaluation images recorded in the manifest; pass --eval DIR")
    if threads is not None:  # every model verify runs: shards side by side must not oversubscribe the cores
        import torch

        torch.set_num_threads(threads)
    listing = scan_images(eval_images or Path(recorded), model.config.labels)
    images = shard.select(listing) if shard is not None else listing
    if shard is not None and not images.files:
        raise BadInputError(f"shard {shard.index}/{shard.count} of {len(listing.files)} images is empty: use fewer "
                            "shards")  # fmt: skip
    simulated = _simulated(directory, manifest, model, processor, images)
    log(f"verifying {directory} on {len(images.files)} images")
    reference = cached_reference_outputs(model, images, processor, log=log)
    release_weights(model)
    limits = (budget or BudgetOverride()).apply(
        _recorded_budget(directory, manifest, converter.budget(Precision(manifest.precision)))
    )
    runner = converter.open_runner(directory, manifest, threads=threads)
    with target_code(manifest.target, "load the artifact in its runtime"):
        extra = converter.informational_runners(directory, manifest)
    extra = {name: TargetRunner(manifest.target, run) for name, run in extra.items()}
    artifact, others, notes = artifact_outputs(runner, images, processor, manifest, extra_runners=extra)
    evidence = gather(reference, artifact, simulated=simulated, others=others)
    report = parity_report(evidence, manifest, budget=limits, notes=notes + unsealed, images_note=images.note)
    if manifest.labels != model.config.labels:  # what predict would name the classes
        report.problems.append("bitedge.json's labels differ from the model's; convert again")
    if shard is not None and partial_out is not None:
        header = ShardHeader(artifact_digest(manifest), image_set_digest(listing), str(listing.root),
                             len(listing.files), shard.index, shard.count, asdict(limits), notes,
                             images.note)  # fmt: skip
        write_partial(partial_out, Partial(header, evidence))
        note = f"shard {shard.index}/{shard.count}: partial result in {partial_out}; the verdict comes from --merge"
        return Result(directory, manifest, report, (note,))
    return _record(directory, manifest, report, listing, changed)


def merge_partials(directory: str | Path, paths: list[Path], *, log: Callable[[str], None] = lambda _: None) -> Result:
    """The artifact's parity report from the partial results of all its shards, exactly as one unsharded
    ``verify`` writes it; recorded in the artifact."""
    directory = Path(directory)
    manifest = Manifest.read(directory)
    _check_seal(directory)
    changed = changed_files(directory, manifest)
    merged = merge([(path, read_partial(path)) for path in paths], manifest)
    header = merged.header
    log(f"merging {len(paths)} partial results of {directory} ({header.listed} images)")
    report = parity_report(merged.evidence, manifest, budget=budget_of(merged), notes=header.notes,
                           images_note=header.images_note)  # fmt: skip
    images = ImageSet(Path(header.root), merged.evidence.files, None, header.images_note)
    return _record(directory, manifest, report, images, changed, listed=header.listed)


def _record(
    directory: Path, manifest: Manifest, report: ParityReport, images: ImageSet, changed: list[str],
    *, listed: int | None = None,
) -> Result:  # fmt: skip
    if changed:  # whatever the numbers say now, this is no longer the artifact that was converted and verified
        report.problems.append(
            f"{', '.join(changed)} changed since the artifact was written (sha256 differs from bitedge.json); "
            "convert again"
        )
    try:
        record(directory, manifest, report, images, listed=listed)
    except OSError as exc:  # a read-only artifact: the verdict still stands, it just cannot be stored there
        warning = (f"{directory}: could not write parity.json, parity.md or bitedge.json ({exc.strerror or exc}); "
                   "the verdict above was not recorded in the artifact")  # fmt: skip
        return Result(directory, manifest, report, (warning,))
    return Result(directory, manifest, report)


def _check_seal(directory: Path) -> list[str]:
    """Refuse a manifest edited since bitedge wrote it (recording a verdict would seal the edit); an older
    bitedge's unsealed one is checked and sealed (the returned note says so)."""
    state = seal_state(directory)
    if state == "broken":
        raise ArtifactRefusedError(
            f"{directory}: bitedge.json was edited since bitedge wrote it (its seal does not hold: its labels, "
            "preprocessing or status may not be the verified ones); convert again"
        )
    if state == "missing":
        return ["bitedge.json had no seal (an older bitedge wrote it): checked and sealed now"]
    return []


def _recorded_budget(directory: Path, manifest: Manifest, default: Budget) -> Budget:
    recorded = manifest.parity.get("budget")
    return default if recorded is None else parse_record(Budget, recorded, f"{directory}/bitedge.json: parity.budget")


def _simulated(
    directory: Path, manifest: Manifest, model: BitPreTrainedModel, processor: BitImageProcessor, images: ImageSet
) -> Outputs | None:
    """For an int8 artifact made from bitedge's table: the simulated model rebuilt from that table, run."""
    network = simulated_model(directory, manifest, deploy_graph(model, manifest))
    if network is None:
        return None
    return simulated_outputs(network, images, processor, raw_pixels=manifest.input.folded)
