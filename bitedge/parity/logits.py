"""Logits on disk: an (N, K) float32 matrix written one batch at a time and read back in row ranges.

Each model the gate runs takes its own pass over the evaluation images, and the comparisons pair them up
afterwards. Holding every model's logits in memory would grow with the set (50,000 ImageNet images x 1000
classes is 200 MB per model), so each pass appends its batches to a `LogitStore` and the comparisons read
them back a chunk at a time: memory stays one batch, however many images. A store is an unnamed temporary
file (gone when the store is), or a file of the reference cache opened read-only; reads copy into a batch
array rather than map the file, so what was read does not stay in the process's memory.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

ROW_DTYPE = np.dtype("<f4")
CHUNK_ROWS = 256  # rows per read: 1 MB per model at 1000 classes


class LogitStore:
    """Rows of ``classes`` float32 logits in a file; ``rows`` of them so far."""

    def __init__(self, file: IO[bytes], classes: int | None = None, rows: int = 0) -> None:
        self._file = file  # kept open: a cache entry deleted meanwhile stays readable through it
        self.classes = classes
        self.rows = rows

    @classmethod
    def temporary(cls) -> LogitStore:
        """An empty store in an unnamed temporary file (``$TMPDIR``)."""
        return cls(tempfile.TemporaryFile(prefix="bitedge-logits-"))

    @classmethod
    def open(cls, path: Path, classes: int) -> LogitStore:
        """The store written to ``path`` by `copy_to`; ValueError if its size is not whole rows."""
        file = path.open("rb")
        size = os.fstat(file.fileno()).st_size
        if classes < 1 or size % (classes * ROW_DTYPE.itemsize):
            file.close()
            raise ValueError(f"{path}: {size} bytes are not rows of {classes} float32 logits")
        return cls(file, classes, size // (classes * ROW_DTYPE.itemsize))

    @classmethod
    def of(cls, logits: np.ndarray) -> LogitStore:
        """A temporary store holding ``logits`` (N, K)."""
        store = cls.temporary()
        store.append(logits)
        return store

    def __len__(self) -> int:
        return self.rows

    def append(self, batch: np.ndarray) -> None:
        if batch.ndim != 2 or (self.classes is not None and batch.shape[1] != self.classes):
            raise ValueError(f"logits of shape {batch.shape} after rows of {self.classes} classes")
        self.classes = batch.shape[1]
        try:
            self._file.seek(self.rows * self._row_bytes)
            self._file.write(np.ascontiguousarray(batch, dtype=ROW_DTYPE).tobytes())
            self._file.flush()  # a full disk shows here, not later
        except OSError as exc:  # an unnamed file: say where it was and how to put it elsewhere
            written = self.rows * self._row_bytes / 2**20
            raise OSError(exc.errno, f"{exc.strerror or exc} while keeping the evaluation's logits ({written:.0f} MiB "
                          "so far, 4 bytes per class and image) in a temporary file; set TMPDIR to a folder with "
                          "room", tempfile.gettempdir()) from exc  # fmt: skip
        self.rows += len(batch)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (clipped to the store), as a new (n, K) float32 array."""
        start, stop = max(0, start), min(stop, self.rows)
        if self.classes is None or stop <= start:
            return np.zeros((0, self.classes or 0), ROW_DTYPE)
        out = np.empty((stop - start, self.classes), ROW_DTYPE)
        self._file.seek(start * self._row_bytes)
        if self._file.readinto(out.data.cast("B")) != out.nbytes:  # type: ignore[attr-defined]
            raise OSError(f"logits file ended before row {stop}")
        return out

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        for start in range(0, self.rows, rows):
            yield self.read(start, start + rows)

    def head(self, rows: int) -> np.ndarray:
        """The first ``rows`` rows (fewer if the store is shorter)."""
        return self.read(0, rows)

    def to_array(self) -> np.ndarray:
        """All rows in memory: for small sets and tests."""
        return self.read(0, self.rows)

    def copy_to(self, file: IO[bytes]) -> None:
        """Write every row to ``file`` (open for writing), a chunk at a time."""
        for chunk in self.chunks():
            file.write(chunk.tobytes())

    @property
    def _row_bytes(self) -> int:
        return (self.classes or 0) * ROW_DTYPE.itemsize
