"""INT8 for the pipeline: get a calibration table (computed, or reused and checked) and the simulated model."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, replace

import numpy as np
from torch import nn

from bitedge.artifacts.manifest import CalibrationRecord
from bitedge.calibration.calibrate import collect_ranges, make_table
from bitedge.calibration.fallback import FallbackResult, search_float_layers
from bitedge.calibration.placement import Placement
from bitedge.calibration.recipe import select_layers
from bitedge.calibration.sensitivity import RANKING_IMAGES, SearchSet
from bitedge.calibration.sources import CalibrationData, open_calibration
from bitedge.calibration.table import CalibrationTable
from bitedge.cpu import CpuTarget
from bitedge.errors import BadInputError
from bitedge.limits import MAX_SEARCH_BYTES, MAX_SEARCH_IMAGES
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.modeling import BitPreTrainedModel
from bitedge.parity.images import Batches, ImageSet
from bitedge.parity.metrics import Budget
from bitedge.pipeline.options import CalibrationOptions

TABLE_FILE = "calibration.json"


def open_source(
    options: CalibrationOptions, input_size: tuple[int, int] | None = None
) -> CalibrationTable | CalibrationData:
    """The table to reuse, or the calibration data, opened and checked (cheap: before any model work)."""
    if options.table is not None:
        return CalibrationTable.load(options.table)
    return _open_images(options, input_size)


def _open_images(options: CalibrationOptions, input_size: tuple[int, int] | None = None) -> CalibrationData:
    if options.images is None:
        raise BadInputError("calibration needs images: pass --calibration IMAGES")
    return open_calibration(
        options.images, size=options.size, seed=options.seed, strict=options.strict_images, input_size=input_size
    )


def calibration_table(
    model: BitPreTrainedModel,
    deploy: nn.Module,
    processor: BitImageProcessor,
    options: CalibrationOptions,
    *,
    raw_pixels: bool,
    source: CalibrationTable | CalibrationData | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> CalibrationTable:
    """The table for ``deploy``: reused from ``options.table`` (after checking it fits) or calibrated now.

    ``source`` is what ``open_source(options)`` returned, when the caller checked it early."""
    sha = model.source.sha256 if model.source else None
    data = source if source is not None else open_source(options, processor.input_size)
    if isinstance(data, CalibrationTable):
        table = data
        layers, _ = select_layers(deploy, list(table.excluded), source=f"calibration table {options.table}")
        table.check_matches(model_sha256=sha, size=list(processor.input_size), raw_pixels=raw_pixels, layers=layers)
        log(f"reusing calibration table {options.table} ({table.method})")
        return table
    from tqdm import tqdm

    log(f"calibrating on {len(data.paths) or 'the array of'} images from {options.images} ({options.method})")
    ranges, excluded = collect_ranges(
        deploy, data, processor, exclude=list(options.exclude), raw_pixels=raw_pixels,
        progress=lambda it: tqdm(it, desc="calibration", unit="batch", leave=False),
    )  # fmt: skip
    manifest = data.manifest
    if manifest.skipped:
        log(f"skipped {len(manifest.skipped)} calibration images that could not be used, e.g. {manifest.skipped[0]}")
    if options.size is not None and manifest.used < options.size:
        log(f"calibrated on {manifest.used} images, fewer than the {options.size} asked for (that is all there were)")
    return make_table(
        ranges, excluded, data, method=options.method, model_sha256=sha, input_size=processor.input_size,
        raw_pixels=raw_pixels,
    )  # fmt: skip


def calibration_batches(
    processor: BitImageProcessor, options: CalibrationOptions, *, raw_pixels: bool
) -> Iterator[np.ndarray]:
    """The same calibration images, batch size 1, for quantizers of a target's own (NNCF)."""
    yield from _open_images(options).batches(processor, raw_pixels=raw_pixels, batch_size=1)


def calibration_record(
    table: CalibrationTable, *, quantizer: str | None, placement: Placement | None, cpu: CpuTarget | None
) -> CalibrationRecord:
    """What the manifest records about the calibration behind an int8 artifact: ``placement`` where bitedge's
    Q/DQ went (None: a target's own quantizer), and ``cpu`` where that placement was chosen for a CPU."""
    own = {"method", "table", "quantizer", "excluded", "placement", "cpu", "cpu_detected"}
    info = {k: v for k, v in table.calibration.items() if k in {f.name for f in fields(CalibrationRecord)} - own}
    return CalibrationRecord(
        method=table.method, table=TABLE_FILE, quantizer=quantizer, placement=placement.name if placement else None,
        cpu=cpu.cpu.value if cpu else None, cpu_detected=cpu is not None and cpu.detected,
        excluded=list(table.excluded), **info,
    )  # fmt: skip


def search_set(deploy: nn.Module, images: ImageSet, processor: BitImageProcessor, *, raw_pixels: bool) -> SearchSet:
    """Up to ``MAX_SEARCH_IMAGES`` evaluation images (fewer for large inputs: their pixels stay within
    ``MAX_SEARCH_BYTES``), evenly spread over the sorted list, decoded once, with the float deploy graph's
    logits: what a layer search scores simulated models on."""
    height, width = processor.input_size
    most = max(16, min(MAX_SEARCH_IMAGES, MAX_SEARCH_BYTES // (3 * height * width * 4)))
    step = -(-len(images.files) // most)
    labels = images.labels[::step] if images.labels is not None else None
    chosen = replace(images, files=images.files[::step], labels=labels)
    pixels: list[np.ndarray] = []
    found: list[np.ndarray] = []
    for normalized, raw, batch_labels in Batches(chosen, processor, batch_size=32, raw_pixels=raw_pixels):
        pixels.append(raw if raw is not None else normalized)
        if batch_labels is not None:
            found.append(batch_labels)
    if not pixels:
        raise BadInputError(f"{images.root}: none of the evaluation images could be read")
    return SearchSet.of(deploy, np.concatenate(pixels), np.concatenate(found) if found else None)


def fallback(
    deploy: nn.Module,
    table: CalibrationTable,
    checks: Sequence[tuple[Placement, Budget]],
    search: SearchSet,
    *,
    log: Callable[[str], None] = lambda _: None,
) -> FallbackResult:
    """``--fallback auto``: the fewest most harmful layers kept float until every check's budget holds."""
    result = search_float_layers(deploy, table, checks, search, ranking_images=RANKING_IMAGES,
                                 progress=progress_bar("layer search"), log=log)  # fmt: skip
    kept = result.float_layers
    log(f"float layers: {', '.join(kept)}" if kept else "no layer needs to stay float")
    return result


def progress_bar(desc: str) -> Callable[[list[str]], Iterator[str]]:
    """A progress bar over a search's layers."""

    def progress(layers: list[str]) -> Iterator[str]:
        from tqdm import tqdm

        yield from tqdm(layers, desc=desc, unit="layer", leave=False)

    return progress
