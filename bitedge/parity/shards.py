"""Sharded verification: shard I of N of an evaluation set, its partial result, and merging partials back.

``bitedge verify DIR --eval E --shard I/N --partial-out FILE`` runs the gate's models on shard I (counted from
0): a contiguous slice of the sorted image list, the same on every machine. The partial holds the slice's
evidence (each comparison's per-image numbers, the first images' logits), with what identifies it: the
artifact (its files' sha256), the image set (every image's path relative to the set's folder and its size),
the shard and the budget. ``--merge FILE...`` checks that the partials belong to this artifact and one image
set, with the same budget, and that they are shards 0..N-1 exactly once; it joins their evidence in image
order, so the report, the failing images and the exit status are those of the unsharded run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
import zlib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from bitedge.artifacts.manifest import Manifest
from bitedge.artifacts.records import parse_record
from bitedge.errors import BadInputError
from bitedge.fileio import write_atomic
from bitedge.parity.gate import HEADS, Evidence
from bitedge.parity.images import ImageSet
from bitedge.parity.metrics import Budget, PerImage

FORMAT = "bitedge-parity-partial-2"


@dataclass(frozen=True)
class ShardSpec:
    index: int  # from 0
    count: int

    @classmethod
    def parse(cls, text: str) -> ShardSpec:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise BadInputError(f"--shard {text}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)")
        index, count = int(match[1]), int(match[2])
        if count < 1 or index >= count:
            raise BadInputError(f"--shard {text}: shard I of N needs 0 <= I < N (shards are counted from 0)")
        return cls(index, count)

    def select(self, images: ImageSet) -> ImageSet:
        """This shard's slice of ``images`` (sorted already), with its labels."""
        total = len(images.files)
        start, stop = self.index * total // self.count, (self.index + 1) * total // self.count
        labels = images.labels[start:stop] if images.labels is not None else None
        return replace(images, files=images.files[start:stop], labels=labels)


@dataclass(frozen=True)
class ShardHeader:
    """What identifies a shard's result."""

    artifact: str  # artifact_digest(manifest)
    images: str  # image_set_digest(full set)
    root: str  # the evaluation folder, as the shard saw it
    listed: int  # images in the whole set
    index: int
    count: int
    budget: dict[str, Any]
    notes: list[str]
    images_note: str


@dataclass(frozen=True)
class Partial:
    """One shard's result: what identifies it, and the evidence of the shard's images."""

    header: ShardHeader
    evidence: Evidence


def artifact_digest(manifest: Manifest) -> str:
    record = {"target": manifest.target, "precision": manifest.precision, "files": manifest.file_sha256}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def image_set_digest(images: ImageSet) -> str:
    digest = hashlib.sha256()
    for path in images.files:
        size = path.stat().st_size if path.exists() else -1
        digest.update(f"{os.fsdecode(path.relative_to(images.root))}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def write_partial(path: Path, partial: Partial) -> Path:
    evidence = partial.evidence
    header = {"format": FORMAT, **asdict(partial.header), "comparisons": list(evidence.comparisons)}
    arrays: dict[str, np.ndarray] = {
        "header": np.asarray(json.dumps(header)),
        "files": np.asarray([os.fsdecode(p.relative_to(partial.header.root)) for p in evidence.files], dtype=str),
        "skipped": np.asarray(evidence.skipped, dtype=str),
        "labels": evidence.labels if evidence.labels is not None else np.zeros(0, np.int64),
    }
    arrays.update({f"head/{name}": logits for name, logits in evidence.heads.items()})
    for i, per_image in enumerate(evidence.comparisons.values()):
        arrays.update({f"comparison/{i}/{f.name}": getattr(per_image, f.name) for f in fields(PerImage)})
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return write_atomic(path, buffer.getvalue())


def read_partial(path: Path) -> Partial:
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            if not isinstance(header, dict) or header.pop("format", None) != FORMAT:
                raise BadInputError(f"{path}: not a partial result of this bitedge ({FORMAT}); run the shard again")
            names = [str(name) for name in header.pop("comparisons", [])]
            files, skipped, labels = data["files"].tolist(), data["skipped"].tolist(), data["labels"]
            heads = {key.removeprefix("head/"): data[key] for key in data.files if key.startswith("head/")}
            comparisons = {name: PerImage(**{f.name: data[f"comparison/{i}/{f.name}"] for f in fields(PerImage)})
                           for i, name in enumerate(names)}  # fmt: skip
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such partial result") from None
    except BadInputError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise BadInputError(f"{path}: not a bitedge partial result, or a damaged one ({type(exc).__name__}: {exc}); "
                            "run that shard again with verify --shard") from None  # fmt: skip
    shard: ShardHeader = parse_record(ShardHeader, header, str(path))
    paths = [Path(shard.root) / name for name in files]
    if not comparisons or any(len(c) != len(paths) for c in comparisons.values()) or set(heads) != set(HEADS):
        raise BadInputError(f"{path}: its comparisons and its image list differ; run the shard again")
    return Partial(shard, Evidence(comparisons, labels if labels.size else None, paths, skipped, heads))


def merge(partials: list[tuple[Path, Partial]], manifest: Manifest) -> Partial:
    """The partials of one artifact and image set, as one unsharded result (refused, naming the problem,
    unless they are shards 0..N-1 of the same run exactly once)."""
    (first_path, first), *_ = partials
    for path, partial in partials:
        if partial.header.artifact != artifact_digest(manifest):
            raise BadInputError(f"{path}: a partial result of another artifact (its files' sha256 differ)")
        for field, what in (("images", "image set"), ("count", "shard count"), ("budget", "budget")):
            if getattr(partial.header, field) != getattr(first.header, field):
                raise BadInputError(f"{path} and {first_path}: partial results of different {what}s; nothing merged")
    count, seen = first.header.count, dict[int, Path]()
    for path, partial in partials:
        index = partial.header.index
        if index in seen:
            raise BadInputError(f"{path} and {seen[index]} are both shard {index}/{count}")
        seen[index] = path
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        shards = ", ".join(f"{i}/{count}" for i in missing)
        raise BadInputError(f"missing shard(s) {shards}: run them with --shard, then merge all {count}")
    ordered = [partial for _, partial in sorted(partials, key=lambda item: item[1].header.index)]
    names = list(first.evidence.comparisons)
    if any(list(p.evidence.comparisons) != names for p in ordered):
        raise BadInputError("the partial results ran different models (e.g. one without the simulated model)")
    notes = list(dict.fromkeys(note for p in ordered for note in p.header.notes))
    header = replace(first.header, index=0, count=1, notes=notes)
    return Partial(header, Evidence.join([p.evidence for p in ordered]))


def budget_of(partial: Partial) -> Budget:
    budget: Budget = parse_record(Budget, partial.header.budget, "partial result: budget")
    return budget
