"""Running the parity gate: reference, simulated-quantized model and artifact on the same images.

Each takes its own pass over the evaluation images, so only one network needs to be in memory at a time:
the *unfolded* float reference on normalized pixels (once per conversion, however many artifacts), for
int8 the simulated-quantized model (once), then each artifact in its runtime on what it takes (normalized
or raw pixels). Each pass writes its logits to disk (`LogitStore`); the comparisons then read them back a
chunk at a time into per-image numbers (`Evidence`), so memory does not grow with the evaluation set and
shards' evidence joins exactly. Comparisons: artifact vs float (the precision's budget); for int8 also
artifact vs simulated (conversion fidelity, gated) and simulated vs float (quantization error, shown).
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
from bitedge.parity.logits import CHUNK_ROWS, LogitStore
from bitedge.parity.metrics import INT8_VS_SIMULATED, Budget, Comparison, ParityReport, PerImage, Runner

ARTIFACT_VS_FLOAT = "artifact vs float reference"
ARTIFACT_VS_SIMULATED = "artifact vs simulated-quantized (conversion fidelity)"
SIMULATED_VS_FLOAT = "simulated-quantized vs float (quantization error)"
MAX_STORED_LOGITS = 1000  # full logits of the first images, for the report's scatter plots; top-1s for all
HEADS = ("reference", "artifact")  # whose logits of the first images `Evidence` keeps


@dataclass(frozen=True)
class Outputs:
    """What one model or artifact said about the evaluation images, in image order."""

    logits: LogitStore  # (N, K), on disk
    labels: np.ndarray | None  # (N,) class indices, when the images are in class folders
    files: list[Path]  # the images that were read
    skipped: list[str]  # why the others were not


EVAL_BATCH = 16  # images per batch of every evaluation pass


def evaluate(run: Runner, images: ImageSet, processor: BitImageProcessor, *, raw_pixels: bool, desc: str) -> Outputs:
    """Run ``run`` over ``images`` in batches (normalized pixels, or raw 0..255 when ``raw_pixels``)."""
    from tqdm import tqdm

    batches = Batches(images, processor, batch_size=EVAL_BATCH, raw_pixels=raw_pixels)
    logits = LogitStore.temporary()
    labels: list[np.ndarray] = []
    total = -(-len(images.files) // batches.batch_size)
    for normalized, raw, batch_labels in tqdm(batches, total=total, desc=desc, unit="batch", leave=False):
        logits.append(run(raw if raw is not None else normalized))
        if batch_labels is not None:
            labels.append(batch_labels)
    if not len(logits):
        raise BadInputError(f"{images.root}: none of the {len(images.files)} images could be read")
    return Outputs(logits, np.concatenate(labels) if labels else None, batches.used, batches.skipped)


def torch_runner(module: nn.Module) -> Runner:
    """A float torch module (a BiT classifier or a deploy/simulated graph) as ``pixels -> logits``.

    Every call runs one contiguous batch of ``EVAL_BATCH`` images (a short one padded): torch's CPU convolutions
    choose their kernels by batch size and memory layout, and on some CPUs (measured: a Xeon with AVX-512 and
    AMX) a batch of 1-8, or a strided one, gives logits ~1e-6 off those of the same image in a contiguous batch
    of 16. So an image's logits do not depend on which shard or batch it fell in, and merged shards record
    exactly what one run records (tests/e2e/test_sharded_verify.py)."""

    def run(pixels: np.ndarray) -> np.ndarray:
        count = len(pixels)
        if count < EVAL_BATCH:
            pixels = np.concatenate([pixels, np.zeros((EVAL_BATCH - count, *pixels.shape[1:]), pixels.dtype)])
        pixels = np.ascontiguousarray(pixels)  # a strided view (NHWC decoded, NCHW viewed) took other kernels
        with torch.no_grad():
            out = module(torch.from_numpy(pixels))
        logits: np.ndarray = (out.logits if hasattr(out, "logits") else out).numpy()
        return logits[:count]

    return run


def reference_outputs(model: BitPreTrainedModel, images: ImageSet, processor: BitImageProcessor) -> Outputs:
    """The unfolded float reference on normalized pixels: what every artifact is compared with."""
    return evaluate(torch_runner(model), images, processor, raw_pixels=False, desc="float reference")


def simulated_outputs(
    simulated: nn.Module, images: ImageSet, processor: BitImageProcessor, *, raw_pixels: bool
) -> Outputs:
    """The simulated-quantized model, on the input its deploy graph takes: what int8 artifacts must match."""
    return evaluate(torch_runner(simulated), images, processor, raw_pixels=raw_pixels, desc="simulated int8")


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


@dataclass(frozen=True)
class Evidence:
    """What a parity report is made from: each comparison's per-image numbers, the images, and the first
    images' logits (for the report's plots). Shards' evidence joins by concatenation into the whole set's."""

    comparisons: dict[str, PerImage]  # in report order, ARTIFACT_VS_FLOAT first
    labels: np.ndarray | None
    files: list[Path]
    skipped: list[str]
    heads: dict[str, np.ndarray]  # "reference" and "artifact": logits of the first MAX_STORED_LOGITS images

    @classmethod
    def join(cls, parts: list[Evidence]) -> Evidence:
        """The evidence of consecutive slices of one image set (same comparisons), as one."""
        first = parts[0]
        labels = [p.labels for p in parts if p.labels is not None]
        return cls(
            {name: PerImage.join([p.comparisons[name] for p in parts]) for name in first.comparisons},
            np.concatenate(labels) if labels and len(labels) == len(parts) else None,
            [f for p in parts for f in p.files],
            [s for p in parts for s in p.skipped],
            {name: np.concatenate([p.heads[name] for p in parts])[:MAX_STORED_LOGITS] for name in first.heads},
        )


def gather(
    reference: Outputs, artifact: Outputs, *, simulated: Outputs | None = None, others: dict[str, Outputs] | None = None
) -> Evidence:
    """Compare the artifact (and the simulated model, and informational runs) with the reference, reading
    their logits back a chunk of images at a time."""
    from tqdm import tqdm

    pairs = [(ARTIFACT_VS_FLOAT, reference, artifact)]
    if simulated is not None:
        pairs += [(ARTIFACT_VS_SIMULATED, simulated, artifact), (SIMULATED_VS_FLOAT, reference, simulated)]
    pairs += [(f"artifact run with {name} vs float", reference, other) for name, other in (others or {}).items()]
    for _, _, outputs in pairs:
        if outputs.files != reference.files:  # the same images must have been read, in the same order
            raise BadInputError("the evaluation images changed while being read; run again")
    stores = {id(o): o.logits for _, a, b in pairs for o in (a, b)}
    parts: dict[str, list[PerImage]] = {name: [] for name, _, _ in pairs}
    for start in tqdm(range(0, len(reference.logits), CHUNK_ROWS), desc="comparing", unit="chunk", leave=False):
        chunk = {key: store.read(start, start + CHUNK_ROWS) for key, store in stores.items()}
        for name, a, b in pairs:
            parts[name].append(PerImage.of(chunk[id(a)], chunk[id(b)]))
    heads = {name: o.logits.head(MAX_STORED_LOGITS) for name, o in zip(HEADS, (reference, artifact), strict=True)}
    comparisons = {name: PerImage.join(chunks) for name, chunks in parts.items()}
    return Evidence(comparisons, reference.labels, reference.files, artifact.skipped, heads)


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
    evidence = gather(reference, artifact, simulated=simulated, others=others)
    return parity_report(evidence, manifest, budget=budget, notes=list(notes or []) + runner_notes,
                         images_note=images.note)  # fmt: skip


def parity_report(
    evidence: Evidence, manifest: Manifest, *, budget: Budget, notes: list[str] | None = None, images_note: str = ""
) -> ParityReport:
    """The parity report: each comparison's metrics held to its budget (the artifact against the simulated
    model to conversion fidelity's; comparisons besides these two are shown, not gated)."""
    labels = evidence.labels
    comparisons = []
    for name, per_image in evidence.comparisons.items():
        if name == ARTIFACT_VS_SIMULATED:  # no accuracy: neither side is the float reference
            comparisons.append(Comparison.of(name, per_image.metrics(), INT8_VS_SIMULATED))
        else:
            comparisons.append(Comparison.of(name, per_image.metrics(labels), budget, gated=name == ARTIFACT_VS_FLOAT))
    all_notes = list(notes or [])
    if evidence.skipped:
        all_notes.append(f"skipped {len(evidence.skipped)} images that could not be used, e.g. {evidence.skipped[0]}")
    if images_note:
        all_notes.append(images_note)
    report = ParityReport(manifest.target, manifest.precision, comparisons, all_notes)
    main = evidence.comparisons[ARTIFACT_VS_FLOAT]
    report.outputs = {
        "reference": evidence.heads["reference"],
        "artifact": evidence.heads["artifact"],
        "reference_top1": main.reference_top1,
        "artifact_top1": main.other_top1,
        "labels": labels if labels is not None else np.zeros(0, np.int64),
        "files": np.asarray([str(p) for p in evidence.files]),
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
