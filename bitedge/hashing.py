"""File digests: checkpoints, calibration images and artifact files are identified by their sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, *, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks (checkpoints can be several GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
