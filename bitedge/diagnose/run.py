"""The diagnosis of one artifact: its tapped layers beside the float deploy graph's and the simulated model's,
on the same images, and where each comparison falls off (``compare``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitedge.artifacts.integrity import STRICT, Allowances, check_artifact
from bitedge.artifacts.manifest import Manifest
from bitedge.artifacts.ownership import DIAGNOSE_FORMAT
from bitedge.converters import converter_classes, get_converter
from bitedge.converters.base import Converter, ExportSpec, TapSource
from bitedge.diagnose.compare import (
    ARTIFACT_VS_FLOAT,
    ARTIFACT_VS_SIMULATED,
    LIMITS_DB,
    SIMULATED_VS_FLOAT,
    FallOff,
    LayerStats,
    fall_off,
)
from bitedge.diagnose.taps import run_tapped, tap_order
from bitedge.errors import BadInputError
from bitedge.model.image_processor import BitImageProcessor
from bitedge.parity.images import Batches, scan_images, spread
from bitedge.pipeline.rebuild import deploy_graph, float_reference, recorded_eval, simulated_model

DEFAULT_IMAGES = 32
MAX_BATCH_BYTES = 256 * 2**20  # one batch's tapped outputs, per model


@dataclass
class Diagnosis:
    directory: Path
    manifest: Manifest
    layers: list[LayerStats]
    images: list[Path]
    untapped: list[str]  # tap points the artifact's runtime could not observe
    fall_offs: dict[str, FallOff]  # "conversion" and (int8 from bitedge's table) "quantization"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": DIAGNOSE_FORMAT,
            "artifact": str(self.directory),
            "target": self.manifest.target,
            "precision": self.manifest.precision,
            "images": len(self.images),
            "first_images": [str(p) for p in self.images[:5]],
            "fall_offs": {key: vars(value) for key, value in self.fall_offs.items()},
            "layers": [_layer_dict(layer) for layer in self.layers],
            "untapped": self.untapped,
            "notes": self.notes,
        }


def _layer_dict(layer: LayerStats) -> dict[str, Any]:
    pairs = {pair: stats.to_dict() for pair, stats in layer.pairs.items()}
    return {"name": layer.name, "kind": layer.kind, "shape": layer.shape, "problem": layer.problem, **pairs}


def diagnose(
    directory: Path,
    *,
    eval_images: Path | None = None,
    images: int = DEFAULT_IMAGES,
    model_path: Path | None = None,
    threads: int | None = None,
    allow: Allowances = STRICT,
    log: Callable[[str], None] = lambda _: None,
) -> Diagnosis:
    """Tap the artifact in ``directory`` in its runtime and compare every layer (see the package docstring)."""
    manifest = Manifest.read(directory)
    notes = check_artifact(directory, manifest, allow)  # a tampered or failed artifact is refused like predict's
    converter = get_converter(manifest.target)
    converter.check_runtime()
    model = float_reference(manifest, model_path, log)
    processor = BitImageProcessor.from_dict(manifest.preprocessing)
    deploy = deploy_graph(model, manifest)
    simulated = simulated_model(directory, manifest, deploy)
    kinds = tap_order(deploy, processor.input_size)
    spec = ExportSpec(processor.input_size, manifest.input.batch, manifest.input.folded, processor=processor,
                      labels=tuple(manifest.labels), simulated=simulated,
                      options=converter.parse_options(manifest.conversion.get("target_options") or {}))  # fmt: skip
    log(f"tapping {len(kinds)} layers of {directory} in its runtime")
    taps = converter.tap_runner(directory, manifest, source=TapSource(deploy, spec, list(kinds)), threads=threads)
    if taps is None:
        supported = [c.name for c in converter_classes() if c.tap_runner is not Converter.tap_runner]
        raise BadInputError(f"{directory}: {manifest.target} artifacts cannot be tapped layer by layer; bitedge "
                            f"diagnose supports {', '.join(supported)}")  # fmt: skip
    chosen = spread(scan_images(eval_images or recorded_eval(manifest), model.config.labels), images)
    layers = {name: LayerStats(name, kind) for name, kind in kinds.items()}
    seen: set[str] = set()
    artifact_raw, model_raw = manifest.input.raw_pixels, manifest.input.folded
    batch = _batch_size(deploy, kinds, processor.input_size)
    log(f"comparing {len(kinds)} layers on {len(chosen.files)} images")
    for normalized, raw, _ in Batches(chosen, processor, batch_size=batch, raw_pixels=artifact_raw or model_raw):
        tapped = taps(raw if artifact_raw and raw is not None else normalized)
        pixels = raw if model_raw and raw is not None else normalized
        floats = run_tapped(deploy, list(kinds), pixels)
        sims = run_tapped(simulated, list(kinds), pixels) if simulated is not None else {}
        for name, stats in layers.items():
            reference = floats[name]
            stats.shape = list(reference.shape[1:])
            if name in tapped:  # against what it should compute: the simulated model where there is one
                seen.add(name)
                if name in sims:
                    stats.add(ARTIFACT_VS_SIMULATED, tapped[name], sims[name])
                else:
                    stats.add(ARTIFACT_VS_FLOAT, tapped[name], reference)
            if name in sims:
                stats.add(SIMULATED_VS_FLOAT, sims[name], reference)
    notes += [str(note) for note in getattr(taps, "notes", [])]  # e.g. how a tapped twin relates to the artifact
    ordered = list(layers.values())
    return Diagnosis(directory, manifest, ordered, chosen.files, [n for n in kinds if n not in seen],
                     _fall_offs(ordered, manifest.precision, simulated is not None), notes)  # fmt: skip


def _fall_offs(layers: list[LayerStats], precision: str, simulated: bool) -> dict[str, FallOff]:
    """Conversion: the artifact against what it should compute (the simulated model for int8 from bitedge's
    table, else the float graph); quantization: the simulated model against float."""
    if not simulated:
        return {"conversion": fall_off(layers, ARTIFACT_VS_FLOAT, LIMITS_DB[precision])}
    return {
        "conversion": fall_off(layers, ARTIFACT_VS_SIMULATED, LIMITS_DB[precision]),
        "quantization": fall_off(layers, SIMULATED_VS_FLOAT, LIMITS_DB["quantization"]),
    }


def _batch_size(deploy: Any, kinds: dict[str, str], input_size: tuple[int, int]) -> int:
    """Images per batch so one batch's tapped outputs stay within ``MAX_BATCH_BYTES`` per model."""
    shapes = run_tapped(deploy, list(kinds), np.zeros((1, 3, *input_size), np.float32))
    per_image = sum(tensor.numel() * tensor.element_size() for tensor in shapes.values())
    return int(max(1, min(16, MAX_BATCH_BYTES // max(per_image, 1))))
