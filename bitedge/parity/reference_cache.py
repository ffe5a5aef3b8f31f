"""The float reference's outputs on an evaluation set, cached on disk so it runs once per model and image set.

Converting to four targets, re-verifying an artifact or verifying several artifacts of one model on the same
images all compare with the same float reference; without the cache each ``bitedge`` command runs it again
(on a 50,000-image set that is most of a verify). An entry is keyed by the sha256 of:

- the checkpoint's sha256 (a changed model invalidates it),
- the preprocessing (size, crop, mean, std: what the reference is fed),
- every image's path relative to the set's folder and the sha256 of its bytes, in the sorted order the gate
  reads them (a changed, added, removed or renamed image invalidates it; moving the whole folder does not).
  The key an unchanged listing gave is remembered, so images are hashed again only when a file changed.

An entry is a folder ``<cache>/reference/<key>/`` (``$BITEDGE_CACHE_DIR``, default ``~/.cache/bitedge``):
``logits.f32``, the reference's logits as rows of float32 (read back a chunk at a time, never whole), and
``index.npz``, the images read (relative paths), their labels, the skipped ones, the class count and a
*seal*: the sha256 of the entry's key, its logits and its index. It is written under a temporary name and
renamed into place, so a reader sees a whole entry or none.

An entry is trusted only if its seal holds: one corrupted in place (same size), one whose files were
swapped with another model's entry, or one edited by hand is recomputed, with a note, and replaced. A bad
cache can cost a reference pass, never a good artifact's verdict.

The cache is best effort: a model without a checkpoint digest (a preset's seeded random weights) is not
cached, an unreadable or damaged entry is recomputed, and an unwritable cache only costs the next run a
reference pass. The least recently used entries are dropped past ``MAX_CACHE_BYTES``.
``rm -r ~/.cache/bitedge/reference`` empties it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bitedge.artifacts.integrity import cache_dir
from bitedge.fileio import write_atomic
from bitedge.hashing import sha256_file
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.modeling import BitPreTrainedModel
from bitedge.parity.gate import Outputs, reference_outputs
from bitedge.parity.images import ImageSet
from bitedge.parity.logits import LogitStore

FORMAT = 3  # 3: entries carry their seal
LOGITS, INDEX = "logits.f32", "index.npz"  # an entry's two files
KEY = re.compile("[0-9a-f]{64}")  # an entry's name: its key, a sha256
MAX_CACHE_BYTES = 4 << 30  # ImageNet val with 1000 classes is 200 MB of logits per entry
LISTINGS, MAX_LISTINGS = "listings", 1000  # image listings seen, each naming the key its contents gave


def cached_reference_outputs(
    model: BitPreTrainedModel, images: ImageSet, processor: BitImageProcessor, *, log: Callable[[str], None]
) -> Outputs:
    """``reference_outputs(model, images, processor)``, from the cache when this model has already been run on
    exactly these images with this preprocessing."""
    key = reference_key(model, images, processor)
    path = cache_dir() / "reference" / key if key is not None else None
    if path is not None and path.exists():
        cached = _load(path, images)
        if isinstance(cached, Outputs):
            log(f"float reference: reusing its outputs on these {len(images.files)} images ({path})")
            return cached
        log(f"float reference: the cached outputs in {path} are not usable ({cached}); running it again")
    outputs = reference_outputs(model, images, processor)
    if path is not None:
        _store(path, outputs, images)
    return outputs


def reference_key(model: BitPreTrainedModel, images: ImageSet, processor: BitImageProcessor) -> str | None:
    """The cache key of ``model``'s reference pass over ``images``; None when it cannot be identified.

    Hashing every image's bytes on every run would read the whole set again (6 GB for ImageNet val), so the
    key found for a listing (each image's absolute path, size, times and inode) is remembered: a listing
    seen before, unchanged, gives its key without reading an image; any change hashes the contents again."""
    checkpoint = model.source.sha256 if model.source is not None else None
    if checkpoint is None:
        return None
    settings = json.dumps({"format": FORMAT, "checkpoint": checkpoint, "preprocessing": processor.to_dict()},
                          sort_keys=True)  # fmt: skip
    try:
        listing = _listing_digest(settings, images)
    except OSError:
        return None  # a vanished or unreadable image: the pass will skip it; its outputs are not worth keeping
    remembered = cache_dir() / "reference" / LISTINGS / listing
    with contextlib.suppress(OSError, UnicodeDecodeError):
        key = remembered.read_text(encoding="ascii")
        if KEY.fullmatch(key):
            return key
    from tqdm import tqdm

    digest = hashlib.sha256(settings.encode())
    try:
        for path in tqdm(images.files, desc="hashing images", unit="image", leave=False):
            digest.update(f"{_relative(path, images)}\0{sha256_file(path)}\n".encode("utf-8", "surrogateescape"))
    except OSError:
        return None
    key = digest.hexdigest()
    with contextlib.suppress(OSError):
        remembered.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(remembered, key.encode("ascii"))
        _forget_old_listings(remembered.parent)
    return key


def _listing_digest(settings: str, images: ImageSet) -> str:
    digest = hashlib.sha256(settings.encode())
    for path in images.files:
        stat = path.stat()
        name = os.fsdecode(path.absolute())
        line = f"{name}\0{stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns} {stat.st_ino}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _forget_old_listings(folder: Path) -> None:
    """Keep the ``MAX_LISTINGS`` most recent listings (64 bytes each)."""
    listings = sorted((p for p in folder.iterdir() if KEY.fullmatch(p.name)), key=lambda p: p.stat().st_mtime_ns)
    for old in listings[:-MAX_LISTINGS]:
        old.unlink(missing_ok=True)


def _relative(path: Path, images: ImageSet) -> str:
    return os.fsdecode(path.relative_to(images.root))


def _seal(key: str, logits: LogitStore, files: np.ndarray, labels: np.ndarray, skipped: np.ndarray) -> str:
    """sha256 of everything an entry says: its key, its logits (read a chunk at a time) and its index."""
    digest = hashlib.sha256(f"{FORMAT}\0{key}\0{logits.classes}\0".encode())
    for chunk in logits.chunks():
        digest.update(chunk.tobytes())
    index = json.dumps([files.tolist(), labels.tolist(), skipped.tolist()], ensure_ascii=True)
    digest.update(index.encode())
    return digest.hexdigest()


def _load(entry: Path, images: ImageSet) -> Outputs | str:
    """The entry's outputs, or why they cannot be trusted."""
    try:
        with np.load(entry / INDEX, allow_pickle=False) as data:
            labels, classes, seal = data["labels"], int(data["classes"]), str(data["seal"])
            files, skipped = data["files"], data["skipped"]
        logits = LogitStore.open(entry / LOGITS, classes)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        return f"unreadable: {type(exc).__name__}"  # damaged or from another bitedge
    if len(logits) != len(files) or _seal(entry.name, logits, files, labels, skipped) != seal:
        return "they changed since they were written: damaged, edited, or another entry's"
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used
    paths = [images.root / name for name in files.tolist()]
    return Outputs(logits, labels if labels.size else None, paths, [str(reason) for reason in skipped.tolist()])


def _store(entry: Path, outputs: Outputs, images: ImageSet) -> None:
    """Best effort: a failure to write only costs the next run a reference pass."""
    labels = outputs.labels if outputs.labels is not None else np.zeros(0, np.int64)
    files = np.asarray([_relative(p, images) for p in outputs.files])
    skipped = np.asarray(outputs.skipped, str)
    seal = _seal(entry.name, outputs.logits, files, labels, skipped)
    with contextlib.suppress(OSError):
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=entry.parent, prefix=".partial-") as scratch:
            staging = Path(scratch) / "entry"
            staging.mkdir()
            with (staging / LOGITS).open("wb") as file:
                outputs.logits.copy_to(file)
            np.savez(staging / INDEX, labels=labels, files=files, skipped=skipped,
                     classes=np.asarray(outputs.logits.classes), seal=np.asarray(seal))  # fmt: skip
            if entry.exists():  # a stale or damaged entry of the same key
                _remove(entry)
            staging.rename(entry)  # fails, keeping what is there, if that was not an entry
        _evict(entry.parent)


def _evict(folder: Path) -> None:
    """Drop the least recently used entries past ``MAX_CACHE_BYTES``."""
    entries = sorted((p for p in folder.iterdir() if _is_entry(p)), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    total = 0
    for entry in entries:
        total += sum(f.stat().st_size for f in entry.iterdir())
        if total > MAX_CACHE_BYTES:
            _remove(entry)


def _is_entry(path: Path) -> bool:
    """A folder bitedge wrote: named by a key, holding nothing but an entry's files."""
    return (KEY.fullmatch(path.name) is not None and path.is_dir() and not path.is_symlink()
            and {f.name for f in path.iterdir()} <= {LOGITS, INDEX})  # fmt: skip


def _remove(entry: Path) -> None:
    """Delete an entry's files, then its folder: never anything else (best effort)."""
    if _is_entry(entry):
        with contextlib.suppress(OSError):
            for name in (LOGITS, INDEX):
                (entry / name).unlink(missing_ok=True)
            entry.rmdir()
