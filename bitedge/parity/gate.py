"""Running the parity gate: reference, simulated-quantized model and artifact on the same images.

Each takes its own pass over the evaluation images, so only one network needs to be in memory at a time:
the *unfolded* float reference on normalized pixels (once per conversion, however many artifacts), for
int8 the simulated-quantized model (once), then each artifact in its runtime on what it takes (normalized
or raw pixels). Comparisons: artifact vs float (the precision's budget); for int8 also artifact vs
simulated (conversion fidelity, gated) and simulated vs float (quantization error, shown).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bitedge.artifacts.manifest import Manifest
from bitedge.artifacts.ownership import OUTPUTS_FILE
from bitedge.errors import BadInputError
from bitedge.fileio import write_atomic, write_json_atomic
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.modeling import BitPreTrainedModel
from bitedge.parity.images import Batches, ImageSet
from bitedge.parity.metrics import INT8_VS_SIMULATED, Budget, Comparison, ParityReport, Runner, compare

ARTIFACT_VS_FLOAT = "artifact vs float reference"
ARTIFACT_VS_SIMULATED = "artifact vs simulated-quantized (conversion fidelity)"
SIMULATED_VS_FLOAT = "simulated-quantized vs float (quantization error)"
MAX_STORED_LOGITS = 1000  # full logits of the first images, for the report's scatter plots; top-1s for all


@dataclass(frozen=True)
class Outputs:
    """What one model or artifact said about the evaluation images, in image order."""

    logits: np.ndarray  # (N, K)
    labels: np.ndarray | None  # (N,) class indices, when the images are in class folders
    files: list[Path]  # the images that were read
    skipped: list[str]  # why the others were not


def evaluate(run: Runner, images: ImageSet, processor: BitImageProcessor, *, raw_pixels: bool, desc: str) -> Outputs:
    """Run ``run`` over ``images`` in batches (normalized pixels, or raw 0..255 when ``raw_pixels``)."""
    from tqdm import tqdm

    batches = Batches(images, processor, batch_size=16, raw_pixels=raw_pixels)
    logits: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    total = -(-len(images.files) // batches.batch_size)
    for normalized, raw, batch_labels in tqdm(batches, total=total, desc=desc, unit="batch", leave=False):
        logits.append(run(raw if raw is not None else normalized))
        if batch_labels is not None:
            labels.append(batch_labels)
    if not logits:
        raise BadInputError(f"{images.root}: none of the {len(images.files)} images could be read")
    return Outputs(np.concatenate(logits), np.concatenate(labels) if labels else None, batches.used, batches.skipped)


def torch_runner(module: nn.Module) -> Runner:
    """A float torch module (a BiT classifier or a deploy/simulated graph) as ``pixels -> logits``."""

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(torch.from_numpy(pixels))
        logits: np.ndarray = (out.logits if hasattr(out, "logits") else out).numpy()
        return logits

    return run


def reference_outputs(model: BitPreTrainedModel, images: ImageSet, processor: BitImageProcessor) -> Outputs:
    """The unfolded float reference on normalized pixels: what every artifact is compared with."""
    return evaluate(torch_runner(model), images, processor, raw_pixels=False, desc="float reference")


def simulated_outputs(
    simulated: nn.Module, images: ImageSet, processor: BitImageProcessor, *, raw_pixels: bool
) -> Outputs:
    """The simulated-quantized model, on the input its deploy graph takes: what int8 artifacts must match."""
    return evaluate(torch_runner(simulated), images, processor, raw_pixels=raw_pixels, desc="simulated int8")


def run_parity(
    reference: Outputs,
    runner: Runner,
    images: ImageSet,
    processor: BitImageProcessor,
    manifest: Manifest,
    *,
    budget: Budget,
    simulated: Outputs | None = None,
    extra_runners: dict[str, Runner] | None = None,
    notes: list[str] | None = None,
) -> ParityReport:
    """Run the artifact on ``images`` and compare it (and the simulated model, if any) with the reference."""
    artifact, others, runner_notes = artifact_outputs(runner, images, processor, manifest, extra_runners=extra_runners)
    all_notes = list(notes or []) + runner_notes
    return parity_report(reference, artifact, manifest, budget=budget, simulated=simulated, others=others,
                         notes=all_notes, images_note=images.note)  # fmt: skip


def artifact_outputs(
    runner: Runner,
    images: ImageSet,
    processor: BitImageProcessor,
    manifest: Manifest,
    *,
    extra_runners: dict[str, Runner] | None = None,
) -> tuple[Outputs, dict[str, Outputs], list[str]]:
    """The artifact's outputs on ``images`` (on the input it takes), those of its informational runners, and
    what the runner noted while running (e.g. the Core ML emulator's overflows)."""
    raw = manifest.input.raw_pixels
    artifact = evaluate(runner, images, processor, raw_pixels=raw, desc="parity")
    others = {name: evaluate(run, images, processor, raw_pixels=raw, desc=name) for name, run in
              (extra_runners or {}).items()}  # fmt: skip
    return artifact, others, list(getattr(runner, "notes", []))


def parity_report(
    reference: Outputs,
    artifact: Outputs,
    manifest: Manifest,
    *,
    budget: Budget,
    simulated: Outputs | None = None,
    others: dict[str, Outputs] | None = None,
    notes: list[str] | None = None,
    images_note: str = "",
) -> ParityReport:
    """Compare the artifact's outputs (and the simulated model's) with the reference's: the parity report."""
    others = others or {}
    for outputs in [artifact, *others.values(), *([simulated] if simulated else [])]:
        if outputs.files != reference.files:  # the same images must have been read, in the same order
            raise BadInputError("the evaluation images changed while being read; run again")
    ref, art, labels = reference.logits, artifact.logits, reference.labels
    comparisons = [Comparison.of(ARTIFACT_VS_FLOAT, compare(ref, art, labels), budget)]
    if simulated is not None:
        sim = simulated.logits
        comparisons.append(Comparison.of(ARTIFACT_VS_SIMULATED, compare(sim, art), INT8_VS_SIMULATED))
        comparisons.append(Comparison.of(SIMULATED_VS_FLOAT, compare(ref, sim, labels), budget, gated=False))
    for name, other in others.items():
        metrics = compare(ref, other.logits, labels)
        comparisons.append(Comparison.of(f"artifact run with {name} vs float", metrics, budget, gated=False))
    all_notes = list(notes or [])
    if artifact.skipped:
        all_notes.append(f"skipped {len(artifact.skipped)} images that could not be used, e.g. {artifact.skipped[0]}")
    if images_note:
        all_notes.append(images_note)
    report = ParityReport(manifest.target, manifest.precision, comparisons, all_notes)
    report.outputs = {
        "reference": ref[:MAX_STORED_LOGITS],
        "artifact": art[:MAX_STORED_LOGITS],
        "reference_top1": ref.argmax(1),
        "artifact_top1": art.argmax(1),
        "labels": labels if labels is not None else np.zeros(0, np.int64),
        "files": np.asarray([str(p) for p in artifact.files]),
    }
    return report


def record(
    directory: Path, manifest: Manifest, report: ParityReport, images: ImageSet, *, listed: int | None = None
) -> None:
    """Write parity.json, parity.md and the manifest (with its parity summary) into ``directory``
    (``listed``: how many images the evaluation set lists, when ``images`` is not the whole set)."""
    write_json_atomic(directory / "parity.json", report.to_dict())
    if report.outputs is not None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **report.outputs)
        write_atomic(directory / OUTPUTS_FILE, buffer.getvalue())
    write_atomic(directory / "parity.md", report.to_markdown())
    first = report.comparisons[0].metrics
    manifest.status = "passed" if report.passed else "failed"
    manifest.parity = {
        "passed": report.passed,
        "eval": {"path": str(images.root.absolute()), "images": first.samples, "listed": listed or len(images.files)},
        "comparisons": {
            c.name: {"passed": c.passed, "gated": c.gated, "failures": c.failures, "top1": c.metrics.top1_agreement}
            for c in report.comparisons
        },
        "budget": asdict(report.comparisons[0].budget),  # what the verdict was held to: verify reuses it
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
