"""Calibrate: stream calibration images through the deploy graph; record each quantized layer's input and
output range (every range any target's placement needs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from bitedge.calibration import DEFAULT_METHOD, METHODS
from bitedge.calibration.observers import AbsRange
from bitedge.calibration.recipe import select_layers
from bitedge.calibration.sources import CalibrationData
from bitedge.calibration.table import SITES, CalibrationTable, Range
from bitedge.errors import BadInputError, CalibrationError
from bitedge.model.image_processor import BitImageProcessor

__all__ = ["DEFAULT_METHOD", "collect_ranges", "make_table"]


def collect_ranges(
    deploy: nn.Module,
    data: CalibrationData,
    processor: BitImageProcessor,
    *,
    exclude: list[str],
    raw_pixels: bool,
    batch_size: int = 16,
    progress: Callable[[Any], Any] = lambda it: it,
) -> tuple[dict[str, dict[str, AbsRange]], list[str]]:
    """One streaming pass: statistics of every quantized layer's input and output, and the excluded layers."""
    layers, excluded = select_layers(deploy, exclude)
    ranges = {name: {site: AbsRange() for site in SITES} for name in layers}
    hooks = []
    for name in layers:
        layer, stats = deploy.get_submodule(name), ranges[name]
        hooks.append(layer.register_forward_pre_hook(lambda _m, args, s=stats: s["input"].update(args[0])))
        hooks.append(layer.register_forward_hook(lambda _m, _a, out, s=stats: s["output"].update(out)))
    expected = tuple(processor.input_size)
    try:
        with torch.no_grad():
            for batch in progress(data.batches(processor, raw_pixels=raw_pixels, batch_size=batch_size)):
                if tuple(batch.shape[-2:]) != expected:
                    raise BadInputError(
                        f"calibration array has images of {batch.shape[-2:]}, the model takes {expected}"
                    )
                deploy(torch.from_numpy(np.ascontiguousarray(batch)))
    finally:
        for hook in hooks:
            hook.remove()
    return ranges, excluded


def make_table(
    ranges: dict[str, dict[str, AbsRange]],
    excluded: list[str],
    data: CalibrationData,
    *,
    method: str,
    model_sha256: str | None,
    input_size: tuple[int, int],
    raw_pixels: bool,
) -> CalibrationTable:
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    manifest = data.manifest
    return CalibrationTable(
        method=method,
        layers={
            name: {site: Range(r.amax(method), r.low, r.high) for site, r in sites.items()}
            for name, sites in ranges.items()
        },
        excluded=excluded,
        model_sha256=model_sha256,
        input={"size": list(input_size), "raw_pixels": raw_pixels},
        calibration={
            "manifest_sha256": manifest.digest(),
            "source": manifest.source,
            "kind": manifest.kind,
            "seed": manifest.seed,
            "requested": manifest.requested,
            "used": manifest.used,
            "skipped": len(manifest.skipped),
        },
    )
