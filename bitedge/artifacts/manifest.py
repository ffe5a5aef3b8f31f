"""``bitedge.json``: what an artifact records about itself, as typed records with a schema version.

Read once, at the boundary (:meth:`Manifest.read`): a file that is not JSON, misses a field, holds a value
of the wrong type, lists a file outside its directory, or was written by a newer schema is a
``BadInputError`` naming the problem, never a traceback later.

Sealed: bitedge writes the sha256 of everything else in the file as ``seal`` (``Manifest.write``), so a
field edited by hand (labels, preprocessing, status, ...) shows, like a changed model file
(``integrity.changed_files``; ``seal_state`` tells).

Schema history: 1 (bitedge 0.1: the same fields, the calibration record without a schema of its own) reads
as 2; 2 adds nothing a reader of 1 needs, it makes the records typed; 3 adds the seal (a manifest of 2 reads,
unsealed, until ``bitedge verify`` checks and seals it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from bitedge.artifacts.ownership import MANIFEST_NAME
from bitedge.artifacts.records import parse_record
from bitedge.errors import BadInputError
from bitedge.fileio import write_json_atomic
from bitedge.hashing import sha256_file

SCHEMA_VERSION = 3
SEAL = "seal"  # the manifest's field holding the sha256 of the rest
STATUSES = ("passed", "failed", "unverified")
NORMALIZATIONS = ("caller", "stem", "runtime")


@dataclass(frozen=True)
class InputRecord:
    """The artifact's input tensor, and where the input normalization happens (``NORMALIZATIONS``):
    ``caller`` (normalized pixels in), ``stem`` (folded into the network: raw 0..255 pixels in) or
    ``runtime`` (the artifact's own preprocessing: raw pixels in)."""

    name: str
    shape: list[int | str]  # (batch or "batch", 3, H, W)
    dtype: str
    layout: str = "NCHW, RGB"
    raw_pixels: bool = False
    normalization: str = "caller"

    @property
    def batch(self) -> int | None:
        """The fixed batch size, or None for a dynamic batch dimension."""
        first = self.shape[0] if self.shape else None
        return first if isinstance(first, int) else None

    @property
    def folded(self) -> bool:
        """Whether the deploy graph has the input normalization folded into its stem."""
        return self.normalization == "stem"


@dataclass(frozen=True)
class OutputRecord:
    name: str
    shape: list[int | str]  # (batch or "batch", num_labels)
    kind: str | None = None  # what the output holds, when it is not plain logits (Core ML's classifier)


@dataclass(frozen=True)
class SourceRecord:
    """Where the float reference came from: enough for ``bitedge verify`` to load it again."""

    path: str
    format: str  # "transformers" | "timm" | "npz" | "state-dict" | "preset"
    sha256: str | None  # of the weight file(s); None for presets
    seed: int | None = None  # weight seed, for presets


@dataclass(frozen=True)
class CalibrationRecord:
    """The calibration behind an int8 artifact (the table itself is a file of the artifact)."""

    method: str
    table: str  # file name of the table inside the artifact
    quantizer: str | None = None  # "bitedge" (the table) or a target's own (e.g. "nncf")
    placement: str | None = None  # bitedge's quantizer: where its Q/DQ went (calibration/placement.py)
    cpu: str | None = None  # where the placement depends on it: the CPU made for, "avx2" | "vnni" (bitedge/cpu.py)
    cpu_detected: bool = False  # cpu was read off the converting machine (--cpu auto)
    excluded: list[str] = field(default_factory=list)  # layers kept in float
    manifest_sha256: str | None = None  # hash of the calibration data's manifest
    source: str | None = None
    kind: str | None = None  # "images" | "array"
    seed: int | None = None
    requested: int | None = None
    used: int | None = None
    skipped: int = 0
    fallback: dict[str, Any] | None = None  # --fallback auto: budgets, float layers, each step's scores

    def cpu_note(self) -> str | None:
        """Which CPUs the int8 graph is made for, where its placement depends on it (None: any CPU)."""
        from bitedge.cpu import describe

        return None if self.cpu is None else describe(self.cpu, self.cpu_detected, f"placement {self.placement}")


@dataclass
class Manifest:
    """What ``bitedge.json`` records about one artifact (DESIGN.md's artifact contract)."""

    target: str
    precision: str
    files: list[str]
    input: InputRecord
    output: OutputRecord
    source: SourceRecord
    model_config: dict[str, Any]
    preprocessing: dict[str, Any]
    labels: list[str]
    tool_versions: dict[str, str]
    calibration: CalibrationRecord | None = None
    file_sha256: dict[str, str] = field(default_factory=dict)  # every file in ``files``, hashed when written
    conversion: dict[str, Any] = field(default_factory=dict)  # the options that shaped the artifact
    parity: dict[str, Any] = field(default_factory=dict)  # summary; full report in parity.json
    status: str = "unverified"  # one of STATUSES
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    format_version: int = SCHEMA_VERSION
    seal: str | None = None  # sha256 of every other field as written (None: an older bitedge wrote it)

    def hash_files(self, directory: Path) -> None:
        """Record the sha256 of every artifact file (they are complete: the converter has returned)."""
        self.file_sha256 = {name: sha256_file(directory / name) for name in self.files}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, directory: Path) -> Path:
        """Write ``bitedge.json``, sealed."""
        self.format_version = SCHEMA_VERSION
        self.seal = seal_of(self.to_dict())
        return write_json_atomic(directory / MANIFEST_NAME, self.to_dict())

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        directory = Path(directory)
        file = directory / MANIFEST_NAME
        if not file.is_file():
            raise BadInputError(f"{directory}: not a bitedge artifact (no {MANIFEST_NAME}); run bitedge convert first")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BadInputError(f"{file}: corrupt manifest ({exc}); convert the model again") from None
        version = data.get("format_version", 1) if isinstance(data, dict) else None
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise BadInputError(
                f"{file}: written by a newer bitedge (schema {version}; this one reads up to {SCHEMA_VERSION}); "
                "upgrade bitedge"
            )
        try:
            manifest = parse_record(cls, data, str(file))
        except BadInputError as exc:
            raise BadInputError(f"{exc}; this is not a manifest bitedge wrote: convert the model again") from None
        manifest.format_version = SCHEMA_VERSION
        manifest._check(file, directory)
        return manifest

    def _check(self, file: Path, directory: Path) -> None:
        """What the types alone cannot say."""
        if self.status not in STATUSES:
            raise BadInputError(f"{file}: status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.input.normalization not in NORMALIZATIONS:
            raise BadInputError(
                f"{file}: input.normalization {self.input.normalization!r} is not one of {', '.join(NORMALIZATIONS)}"
            )
        outside = [name for name in self.files if not _inside(name)]
        if outside:
            raise BadInputError(f"{file}: lists files outside the artifact directory: {', '.join(outside[:3])}")
        missing = [name for name in self.files if not (directory / name).is_file()]
        if missing:
            raise BadInputError(f"{directory}: artifact files missing: {', '.join(missing)}; convert again")


def seal_of(data: dict[str, Any]) -> str:
    """The sha256 of a manifest's fields but its seal, as JSON reads them back (sorted keys, no spaces)."""
    content = {k: v for k, v in json.loads(json.dumps(data, default=str)).items() if k != SEAL}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def seal_state(directory: Path) -> str:
    """``"holds"``, ``"broken"`` (a field changed since bitedge wrote it) or ``"missing"`` (an older bitedge's
    manifest, or one whose seal was removed) for the ``bitedge.json`` in ``directory``, as it is on disk."""
    try:
        data = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "broken"
    recorded = data.get(SEAL) if isinstance(data, dict) else None
    if not isinstance(recorded, str):
        return "missing"
    return "holds" if recorded == seal_of(data) else "broken"


def _inside(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "\\" not in name
