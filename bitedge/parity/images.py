"""Evaluation images: an ImageNet-style folder (class subfolders give labels) streamed in batches.

Files are listed in a deterministic (sorted) order and decoded one batch at a time, so memory does not
grow with the size of the set. Unreadable images are skipped and counted, never silently: the count ends
up in the parity report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bitedge.errors import BadInputError, ImageError
from bitedge.model.image_processor import IMAGE_SUFFIXES, BitImageProcessor, error_at, to_rgb_array


@dataclass(frozen=True)
class ImageSet:
    """Image files and, when the folder names are the model's labels, their label indices."""

    root: Path
    files: list[Path]
    labels: list[int] | None  # None when the folders do not name the model's classes
    note: str = ""  # why there are no labels, when there are none


def spread(images: ImageSet, count: int) -> ImageSet:
    """``count`` images evenly spread over the sorted set (all of them if it has fewer)."""
    step = max(1, len(images.files) // count)
    picked = list(range(0, len(images.files), step))[:count]
    labels = [images.labels[i] for i in picked] if images.labels is not None else None
    return replace(images, files=[images.files[i] for i in picked], labels=labels)


def scan_images(root: str | Path, label_names: list[str]) -> ImageSet:
    """List the images under ``root`` (recursively); label them by class folder when possible."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a directory of images; give a folder (class subfolders = labels)")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise BadInputError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    folders = {f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}
    flat = any(len(f.relative_to(root).parts) == 1 for f in files)
    index = {name: i for i, name in enumerate(label_names)}
    if folders and not flat and folders <= index.keys():
        return ImageSet(root, files, [index[f.relative_to(root).parts[0]] for f in files])
    if not folders:
        note = "images are not in class folders: accuracy is not measured"
    else:
        unknown = sorted(folders - index.keys())[:3]
        note = f"folder names ({', '.join(unknown)}, ...) are not the model's labels: accuracy is not measured"
    return ImageSet(root, files, None, note)


@dataclass
class Batches:
    """Preprocessed batches of an `ImageSet`; ``skipped`` lists the files that could not be read."""

    images: ImageSet
    processor: BitImageProcessor
    batch_size: int = 16
    raw_pixels: bool = False  # 0..255 float32 after resize and crop, for raw-pixel-input artifacts
    skipped: list[str] = field(default_factory=list)
    used: list[Path] = field(default_factory=list)  # the files that made it into a batch, in order

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Yields ``(normalized (N,3,H,W), raw (N,3,H,W) or None, labels (N,) or None)``."""
        raw_processor = replace(self.processor, do_rescale=False, do_normalize=False)
        for start in range(0, len(self.images.files), self.batch_size):
            normalized, raw, labels = [], [], []
            for i in range(start, min(start + self.batch_size, len(self.images.files))):
                path = self.images.files[i]
                try:
                    rgb = to_rgb_array(path)  # decode once, for both outputs
                    sample = self.processor.preprocess_one(rgb)
                    raw_sample = raw_processor.preprocess_one(rgb).astype(np.float32) if self.raw_pixels else None
                except ImageError as exc:
                    self.skipped.append(error_at(path, exc))
                    continue
                normalized.append(sample)
                self.used.append(path)
                if raw_sample is not None:
                    raw.append(raw_sample)
                if self.images.labels is not None:
                    labels.append(self.images.labels[i])
            if normalized:
                yield (
                    np.stack(normalized),
                    np.stack(raw) if self.raw_pixels else None,
                    np.asarray(labels) if self.images.labels is not None else None,
                )
