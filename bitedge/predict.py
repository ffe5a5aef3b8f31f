"""`bitedge predict`: classify images with an artifact (in its runtime) or a model (float, PyTorch).

The same runner that verify and bench use, the artifact's own preprocessing and labels. Each image is
read on its own, so one corrupt file is reported and the others are still classified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bitedge.artifacts.integrity import STRICT, Allowances
from bitedge.errors import BadInputError, ImageError
from bitedge.model.image_processor import IMAGE_SUFFIXES, BitImageProcessor, to_rgb_array


@dataclass(frozen=True)
class Classifier:
    """``pixels (N, 3, H, W) -> logits`` plus what it needs to be fed and how to name its outputs."""

    run: Callable[[np.ndarray], np.ndarray]
    processor: BitImageProcessor
    raw_pixels: bool
    labels: list[str]
    description: str
    info: dict[str, Any]  # what runs it and how (runtime, precision, hints), for bench records
    fixed_batch: int | None = None  # artifacts exported with a fixed batch size
    warnings: tuple[str, ...] = ()  # what the user allowed explicitly (a failed or unchecked artifact)
    model_config: dict[str, Any] | None = None  # the BiT config it computes (what bench counts MACs from)

    def preprocess(self, image: str | Path | np.ndarray) -> np.ndarray:
        """(3, H, W) float32 as this classifier takes it (raw 0..255 for raw-pixel artifacts)."""
        processor = self.processor
        if self.raw_pixels:
            processor = replace(processor, do_rescale=False, do_normalize=False)
        return processor.preprocess_one(to_rgb_array(image)).astype(np.float32)


def open_classifier(
    spec: str | Path,
    *,
    threads: int | None = None,
    for_bench: bool = False,
    runs: str | None = None,
    allow: Allowances = STRICT,
) -> Classifier:
    """An artifact directory (with bitedge.json), or anything ``load_model`` reads.

    Artifacts run in their runtime: as verified (``load_runner``), or configured as a deployment runs them
    when ``for_bench`` (``bench_runner``, in precision ``runs`` where the runtime offers several); models run
    as the float PyTorch reference, eager. An artifact that failed its gate or changed since is refused unless
    ``allow`` says otherwise (``integrity``).
    """
    from bitedge.artifacts.manifest import Manifest
    from bitedge.artifacts.ownership import MANIFEST_NAME

    path = Path(spec)
    if (path / MANIFEST_NAME).is_file():
        from bitedge.artifacts.integrity import check_artifact
        from bitedge.converters import get_converter
        from bitedge.converters.base import target_code

        manifest = Manifest.read(path)
        warnings = check_artifact(path, manifest, allow)
        converter = get_converter(manifest.target)
        converter.check_runtime()
        info: dict[str, Any] = {"kind": "artifact", "target": manifest.target, "precision": manifest.precision}
        if for_bench:
            with target_code(manifest.target, "load the artifact in its runtime"):
                run, runtime = converter.bench_runner(path, manifest, threads=threads, runs=runs)
            info |= {**runtime, "runs": runs or manifest.precision}
        else:
            run = converter.open_runner(path, manifest, threads=threads)
        processor = BitImageProcessor.from_dict(manifest.preprocessing)
        raw = manifest.input.raw_pixels
        description = f"{manifest.target} {manifest.precision}"
        if warnings:
            info["warnings"] = warnings
        return Classifier(
            run, processor, raw, list(manifest.labels), description, info, manifest.input.batch, tuple(warnings),
            manifest.model_config,
        )  # fmt: skip
    import torch

    from bitedge.model.image_processor import resolve_processor
    from bitedge.model.loading import load_model

    model = load_model(spec)
    if threads:
        torch.set_num_threads(threads)

    def run_float(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = model(torch.from_numpy(pixels)).logits.numpy()
        return out

    processor = resolve_processor(model.image_processor, None)
    info = {"kind": "float model", "runtime": f"torch {torch.__version__} eager", "precision": "fp32", "runs": "fp32"}
    return Classifier(
        run_float, processor, False, model.config.labels, "float", info, model_config=model.config.to_dict()
    )


def expand_images(arguments: list[str]) -> list[Path]:
    """Files as given; directories replaced by their images (recursive, sorted)."""
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise BadInputError(f"{path}: no images in this directory")
            paths += found
        else:
            paths.append(path)
    return paths


def predict(classifier: Classifier, images: list[Path], *, top_k: int = 5) -> list[dict[str, Any]]:
    """One record per image: ``{"image", "predictions": [{"label", "score"}...]}`` or ``{"image", "error"}``."""
    records: list[dict[str, Any]] = []
    for path in images:
        try:
            pixels = classifier.preprocess(path)[None]
        except ImageError as exc:
            records.append({"image": str(path), "error": str(exc)})
            continue
        logits = classifier.run(pixels)[0].astype(np.float64)
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        best = np.argsort(-probabilities)[: min(top_k, len(probabilities))]
        records.append(
            {
                "image": str(path),
                "predictions": [{"label": classifier.labels[i], "score": float(probabilities[i])} for i in best],
            }
        )
    return records
