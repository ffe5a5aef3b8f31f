"""Running the parity gate: reference, simulated-quantized model and artifact on the same images.

For every batch of evaluation images: the *unfolded* float reference on normalized pixels, the artifact in
its runtime on what it takes (normalized or raw pixels) and, for int8, the simulated-quantized model on
the same input as the artifact. Comparisons: artifact vs float (the precision's budget); for int8 also
artifact vs simulated (conversion fidelity, gated) and simulated vs float (quantization error, shown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from bitedge.artifact import Manifest, write_json_atomic
from bitedge.converters.base import Converter, Runner
from bitedge.data import Batches, ImageSet
from bitedge.errors import BadInputError
from bitedge.image_processor import BitImageProcessor
from bitedge.modeling import BitPreTrainedModel
from bitedge.parity import INT8_VS_SIMULATED, Comparison, ParityReport, compare
from bitedge.targets import Precision

ARTIFACT_VS_FLOAT = "artifact vs float reference"
ARTIFACT_VS_SIMULATED = "artifact vs simulated-quantized (conversion fidelity)"
SIMULATED_VS_FLOAT = "simulated-quantized vs float (quantization error)"
OUTPUTS_FILE = "parity_outputs.npz"
MAX_STORED_LOGITS = 1000  # full logits of the first images, for the report's scatter plots; top-1s for all


def input_folded(manifest: Manifest) -> bool:
    """Whether the artifact's deploy graph has the input normalization folded into its stem (raw pixels in)."""
    raw = bool(manifest.input.get("raw_pixels"))
    return manifest.input.get("normalization", "stem" if raw else "caller") == "stem"


def run_parity(
    model: BitPreTrainedModel,
    runner: Runner,
    images: ImageSet,
    processor: BitImageProcessor,
    converter: Converter,
    manifest: Manifest,
    *,
    simulated: nn.Module | None = None,
    extra_runners: dict[str, Runner] | None = None,
    notes: list[str] | None = None,
) -> ParityReport:
    """Compare the artifact (and the simulated model, if any) with the float reference on ``images``."""
    from tqdm import tqdm

    raw = bool(manifest.input.get("raw_pixels"))
    simulated_takes_raw = input_folded(manifest)
    batches = Batches(images, processor, batch_size=16, raw_pixels=raw)
    extra = extra_runners or {}
    outputs: dict[str, list[np.ndarray]] = {"reference": [], "artifact": [], "simulated": [], "labels": []}
    outputs |= {name: [] for name in extra}
    total = -(-len(images.files) // batches.batch_size)
    for normalized, raw_pixels, labels in tqdm(batches, total=total, desc="parity", unit="batch", leave=False):
        artifact_input = raw_pixels if raw_pixels is not None else normalized
        with torch.no_grad():
            outputs["reference"].append(model(torch.from_numpy(normalized)).logits.numpy())
            if simulated is not None:
                sim_input = raw_pixels if simulated_takes_raw and raw_pixels is not None else normalized
                outputs["simulated"].append(simulated(torch.from_numpy(sim_input)).numpy())
        outputs["artifact"].append(runner(artifact_input))
        for name, other in extra.items():
            outputs[name].append(other(artifact_input))
        if labels is not None:
            outputs["labels"].append(labels)
    if not outputs["reference"]:
        raise BadInputError(f"{images.root}: none of the {len(images.files)} images could be read")
    ref, art = np.concatenate(outputs["reference"]), np.concatenate(outputs["artifact"])
    labels_all = np.concatenate(outputs["labels"]) if outputs["labels"] else None
    budget = converter.budget(Precision(manifest.precision))
    comparisons = [Comparison.of(ARTIFACT_VS_FLOAT, compare(ref, art, labels_all), budget)]
    if simulated is not None:
        sim = np.concatenate(outputs["simulated"])
        comparisons.append(Comparison.of(ARTIFACT_VS_SIMULATED, compare(sim, art), INT8_VS_SIMULATED))
        comparisons.append(Comparison.of(SIMULATED_VS_FLOAT, compare(ref, sim, labels_all), budget, gated=False))
    for name in extra:
        metrics = compare(ref, np.concatenate(outputs[name]), labels_all)
        comparisons.append(Comparison.of(f"artifact run with {name} vs float", metrics, budget, gated=False))
    all_notes = list(notes or []) + list(getattr(runner, "notes", []))  # e.g. the Core ML emulator's overflows
    if batches.skipped:
        all_notes.append(f"skipped {len(batches.skipped)} unreadable images, e.g. {batches.skipped[0]}")
    if images.note:
        all_notes.append(images.note)
    report = ParityReport(manifest.target, manifest.precision, comparisons, all_notes)
    report.outputs = {
        "reference": ref[:MAX_STORED_LOGITS],
        "artifact": art[:MAX_STORED_LOGITS],
        "reference_top1": ref.argmax(1),
        "artifact_top1": art.argmax(1),
        "labels": labels_all if labels_all is not None else np.zeros(0, np.int64),
        "files": np.asarray([str(p) for p in batches.used]),
    }
    return report


def record(directory: Path, manifest: Manifest, report: ParityReport, images: ImageSet) -> None:
    """Write parity.json, parity.md and the manifest (with its parity summary) into ``directory``."""
    write_json_atomic(directory / "parity.json", report.to_dict())
    if report.outputs is not None:
        np.savez_compressed(directory / OUTPUTS_FILE, **report.outputs)
    (directory / "parity.md").write_text(report.to_markdown(), encoding="utf-8")
    first = report.comparisons[0].metrics
    manifest.status = "passed" if report.passed else "failed"
    manifest.parity = {
        "passed": report.passed,
        "eval": {"path": str(images.root.absolute()), "images": first.samples, "listed": len(images.files)},
        "comparisons": {
            c.name: {"passed": c.passed, "gated": c.gated, "failures": c.failures, "top1": c.metrics.top1_agreement}
            for c in report.comparisons
        },
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
