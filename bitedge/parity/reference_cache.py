"""The float reference's outputs on an evaluation set, cached on disk so it runs once per model and image set.

Converting to four targets, re-verifying an artifact or verifying several artifacts of one model on the same
images all compare with the same float reference; without the cache each ``bitedge`` command runs it again
(on a 50,000-image set that is most of a verify). An entry is keyed by the sha256 of:

- the checkpoint's sha256 (a changed model invalidates it),
- the preprocessing (size, crop, mean, std: what the reference is fed),
- every image's path relative to the set's folder and the sha256 of its bytes, in the sorted order the gate
  reads them (a changed, added, removed or renamed image invalidates it; moving the whole folder does not).

Entries live in ``<cache>/reference/<key>.npz`` (``$BITEDGE_CACHE_DIR``, default ``~/.cache/bitedge``): the
logits, labels, files and skipped images of one reference pass. The cache is best effort: a model without a
checkpoint digest (a preset's seeded random weights) is not cached, an unreadable or damaged entry is
recomputed, and an unwritable cache only costs the next run a reference pass. The least recently used
entries are dropped past ``MAX_CACHE_BYTES``. ``rm -r ~/.cache/bitedge/reference`` empties it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bitedge.artifacts.integrity import cache_dir, cached_sha256
from bitedge.fileio import write_atomic
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.modeling import BitPreTrainedModel
from bitedge.parity.gate import Outputs, reference_outputs
from bitedge.parity.images import ImageSet

FORMAT = 1
KEY = re.compile("[0-9a-f]{64}")  # an entry's file name: its key, a sha256
MAX_CACHE_BYTES = 4 << 30  # ImageNet val with 1000 classes is 200 MB of logits per entry


def cached_reference_outputs(
    model: BitPreTrainedModel, images: ImageSet, processor: BitImageProcessor, *, log: Callable[[str], None]
) -> Outputs:
    """``reference_outputs(model, images, processor)``, from the cache when this model has already been run on
    exactly these images with this preprocessing."""
    key = reference_key(model, images, processor)
    path = cache_dir() / "reference" / f"{key}.npz" if key is not None else None
    if path is not None:
        cached = _load(path, images)
        if cached is not None:
            log(f"float reference: reusing its outputs on these {len(images.files)} images ({path})")
            return cached
    outputs = reference_outputs(model, images, processor)
    if path is not None:
        _store(path, outputs, images)
    return outputs


def reference_key(model: BitPreTrainedModel, images: ImageSet, processor: BitImageProcessor) -> str | None:
    """The cache key of ``model``'s reference pass over ``images``; None when it cannot be identified."""
    checkpoint = model.source.sha256 if model.source is not None else None
    if checkpoint is None:
        return None
    digest = hashlib.sha256(json.dumps({"format": FORMAT, "checkpoint": checkpoint,
                                        "preprocessing": processor.to_dict()}, sort_keys=True).encode())  # fmt: skip
    try:
        contents = cached_sha256(images.files)  # hashed again only when a file's size, times or inode changed
    except OSError:
        return None  # an unreadable image: the pass will skip it, and its outputs are not worth keeping
    for path in images.files:
        content = contents[path]
        if content is None:
            return None  # a vanished image: the same
        digest.update(f"{_relative(path, images)}\0{content}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _relative(path: Path, images: ImageSet) -> str:
    return os.fsdecode(path.relative_to(images.root))


def _load(path: Path, images: ImageSet) -> Outputs | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            logits, labels = data["logits"], data["labels"]
            files = [images.root / name for name in data["files"].tolist()]
            skipped = [str(reason) for reason in data["skipped"].tolist()]
        os.utime(path)  # recently used
    except (OSError, ValueError, KeyError):
        return None  # damaged or from another bitedge: run the reference again
    if logits.ndim != 2 or len(logits) != len(files):
        return None
    return Outputs(logits, labels if labels.size else None, files, skipped)


def _store(path: Path, outputs: Outputs, images: ImageSet) -> None:
    """Best effort: a failure to write only costs the next run a reference pass."""
    buffer = io.BytesIO()
    labels = outputs.labels if outputs.labels is not None else np.zeros(0, np.int64)
    files = np.asarray([_relative(p, images) for p in outputs.files])
    np.savez(buffer, logits=outputs.logits, labels=labels, files=files, skipped=np.asarray(outputs.skipped, str))
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())
        _evict(path.parent)


def _evict(folder: Path) -> None:
    """Drop the least recently used entries past ``MAX_CACHE_BYTES``."""
    ours = [p for p in folder.glob("*.npz") if KEY.fullmatch(p.stem)]  # only entries bitedge named
    entries = sorted(ours, key=lambda p: p.stat().st_mtime_ns, reverse=True)
    total = 0
    for entry in entries:
        total += entry.stat().st_size
        if total > MAX_CACHE_BYTES:
            entry.unlink(missing_ok=True)
