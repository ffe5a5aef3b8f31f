"""Calibration data: a folder of images, a text file listing image paths, or an .npy/.npz array.

Images are chosen deterministically (sorted; a seeded sample when ``size`` is smaller than the set),
content-hashed into a manifest whose hash travels into every artifact's bitedge.json, and streamed in
batches through the model's preprocessing, so memory does not grow with the number of images. Unreadable
images are skipped and counted (fatal with ``strict``); an empty or all-bad set is an error, and a set
smaller than asked for is reported, never silent.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bitedge.errors import BadInputError, ImageError
from bitedge.hashing import sha256_file
from bitedge.model.image_processor import IMAGE_SUFFIXES, BitImageProcessor, error_at, to_rgb_array

ARRAY_KEY = "pixel_values"  # the array inside an .npz; an .npz with a single array may use any name


@dataclass
class CalibrationManifest:
    """Which data calibrated a table: enough to tell whether two tables saw the same images."""

    source: str
    kind: str  # "images" | "array"
    seed: int
    requested: int | None
    files: list[dict[str, str]] = field(default_factory=list)  # {"path", "sha256"}
    array_sha256: str | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    used: int = 0
    skipped: list[str] = field(default_factory=list)

    def digest(self) -> str:
        """sha256 of what determines the calibration (files and their hashes, array, preprocessing, seed)."""
        core = {k: v for k, v in asdict(self).items() if k not in ("used", "skipped", "source")}
        return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


@dataclass
class CalibrationData:
    """A calibration set ready to stream: ``for batch in data.batches(processor): ...`` (N, 3, H, W)."""

    manifest: CalibrationManifest
    paths: list[Path]
    array_path: Path | None = None
    strict: bool = False

    def batches(self, processor: BitImageProcessor, *, raw_pixels: bool, batch_size: int = 16) -> Iterator[np.ndarray]:
        """Preprocessed float32 batches; skipped images are recorded in the manifest."""
        self.manifest.preprocessing = processor.to_dict() | {"raw_pixels": raw_pixels}
        if self.array_path is not None:
            yield from self._array_batches(self.array_path, batch_size, processor.input_size)
            return
        if raw_pixels:
            processor = replace(processor, do_rescale=False, do_normalize=False)
        self.manifest.used, self.manifest.skipped = 0, []
        batch: list[np.ndarray] = []
        for path in self.paths:
            try:
                batch.append(processor.preprocess_one(to_rgb_array(path)).astype(np.float32))
            except ImageError as exc:
                if self.strict:
                    raise ImageError(f"{error_at(path, exc)} (--strict-images makes it fatal)") from None
                self.manifest.skipped.append(error_at(path, exc))
                continue
            self.manifest.used += 1
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
        if batch:
            yield np.stack(batch)
        if self.manifest.used == 0:  # the user's data, not bitedge's doing: bad input
            first = f", e.g. {self.manifest.skipped[0]}" if self.manifest.skipped else ""
            raise BadInputError(
                f"{self.manifest.source}: none of the {len(self.paths)} calibration images is usable{first}; give "
                "readable images (--strict-images stops at the first bad one)"
            )

    def _array_batches(self, array_path: Path, batch_size: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
        array = _open_array(array_path, size)
        indices = _sample(list(range(len(array))), self.manifest.requested, self.manifest.seed)
        self.manifest.used = len(indices)
        for start in range(0, len(indices), batch_size):
            yield np.asarray(array[indices[start : start + batch_size]], dtype=np.float32)


def open_calibration(
    source: str | Path,
    *,
    size: int | None = None,
    seed: int = 0,
    strict: bool = False,
    input_size: tuple[int, int] | None = None,
) -> CalibrationData:
    """Resolve a calibration source (folder, list file, .npy/.npz) into a deterministic, hashed selection.

    ``input_size`` (H, W), when known, is checked against a pixel array's now, before any model work."""
    path = Path(source)
    if size is not None and size <= 0:
        raise BadInputError(f"calibration size must be positive, got {size}")
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        _open_array(path, input_size)  # validate now, before any model work
        manifest = CalibrationManifest(str(path), "array", seed, size, array_sha256=sha256_file(path))
        return CalibrationData(manifest, [], path, strict)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    elif path.is_file():
        files = _read_list(path)
    else:
        raise BadInputError(f"{path}: no such calibration source; give a folder of images, a .txt list or .npy/.npz")
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise BadInputError(f"{path}: no calibration images found ({suffixes}); give a folder of images, a .txt list "
                            "or a .npy/.npz of preprocessed pixels")  # fmt: skip
    chosen = _sample(files, size, seed)
    manifest = CalibrationManifest(
        str(path), "images", seed, size, files=[{"path": str(p), "sha256": sha256_file(p)} for p in chosen]
    )
    return CalibrationData(manifest, chosen, None, strict)


def _sample(items: list[Any], size: int | None, seed: int) -> list[Any]:
    if size is None or size >= len(items):
        return list(items)
    return sorted(random.Random(seed).sample(items, size))


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read the image list ({exc})") from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    files = [(path.parent / e) if not Path(e).is_absolute() else Path(e) for e in entries]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BadInputError(f"{path}: listed images do not exist: {', '.join(missing[:3])}")
    return files


def _open_array(path: Path, input_size: tuple[int, int] | None = None) -> np.ndarray:
    array: np.ndarray
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as data:
                keys = data.files
                key = ARRAY_KEY if ARRAY_KEY in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise BadInputError(f"{path}: holds {keys}; name the array '{ARRAY_KEY}'")
                array = data[key]
    except (ValueError, OSError, EOFError) as exc:
        raise BadInputError(f"{path}: not a readable array file ({exc})") from None
    if array.ndim != 4 or array.shape[1] != 3 or len(array) == 0 or not np.issubdtype(array.dtype, np.floating):
        raise BadInputError(
            f"{path}: expected preprocessed float pixel values (N, 3, H, W), got {array.dtype} {array.shape}"
        )
    for start in range(0, len(array), 64):  # chunks: an .npy is memory-mapped and may be larger than memory
        chunk = np.asarray(array[start : start + 64])
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1))[0])
            raise BadInputError(f"{path}: sample {bad} holds NaN or inf; calibration needs finite pixel values")
    if input_size is not None and tuple(array.shape[2:]) != tuple(input_size):
        raise BadInputError(
            f"{path}: pixels are {array.shape[2]}x{array.shape[3]}, but the model takes {input_size[0]}x"
            f"{input_size[1]}; preprocess the calibration array at the model's input size (or pass --image-size)"
        )
    return array
