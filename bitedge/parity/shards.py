"""Sharded verification: shard I of N of an evaluation set, its partial result, and merging partials back.

``bitedge verify DIR --eval E --shard I/N --partial-out FILE`` runs the gate's models on shard I (counted from
0): a contiguous slice of the sorted image list, the same on every machine. The partial holds every model's
per-image logits for the slice, with what identifies it: the artifact (its files' sha256), the image set
(every image's path relative to the set's folder and its size), the shard and the budget. ``--merge FILE...``
checks that the partials belong to this artifact and one image set, with the same budget, and that they are
shards 0..N-1 exactly once; it concatenates them in image order, so the report, the failing images and the
exit status are those of the unsharded run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bitedge.artifacts.manifest import Manifest
from bitedge.artifacts.records import parse_record
from bitedge.errors import BadInputError
from bitedge.fileio import write_atomic
from bitedge.parity.gate import Outputs
from bitedge.parity.images import ImageSet
from bitedge.parity.metrics import Budget

FORMAT = "bitedge-parity-partial-1"


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
class Partial:
    """One shard's result: identifying fields, then the outputs of each model (``reference``, ``artifact``,
    optionally ``simulated`` and informational runners) on the shard's images."""

    artifact: str  # artifact_digest(manifest)
    images: str  # image_set_digest(full set)
    root: str  # the evaluation folder, as the shard saw it
    listed: int  # images in the whole set
    index: int
    count: int
    budget: dict[str, Any]
    notes: list[str]
    images_note: str
    outputs: dict[str, Outputs]


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
    reference = partial.outputs["reference"]
    header = {k: v for k, v in asdict(partial).items() if k != "outputs"}
    arrays: dict[str, np.ndarray] = {
        "header": np.asarray(json.dumps({"format": FORMAT, **header})),
        "files": np.asarray([os.fsdecode(p.relative_to(partial.root)) for p in reference.files], dtype=str),
        "skipped": np.asarray(reference.skipped, dtype=str),
        "labels": reference.labels if reference.labels is not None else np.zeros(0, np.int64),
    }
    for name, outputs in partial.outputs.items():
        arrays[f"logits/{name}"] = outputs.logits
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return write_atomic(path, buffer.getvalue())


def read_partial(path: Path) -> Partial:
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            files, skipped, labels = data["files"].tolist(), data["skipped"].tolist(), data["labels"]
            logits = {key.removeprefix("logits/"): data[key] for key in data.files if key.startswith("logits/")}
    except FileNotFoundError:
        raise BadInputError(f"{path}: no such partial result") from None
    except (OSError, ValueError, KeyError) as exc:
        raise BadInputError(f"{path}: not a bitedge partial result ({exc}); write it with verify --shard") from None
    if not isinstance(header, dict) or header.pop("format", None) != FORMAT or "reference" not in logits:
        raise BadInputError(f"{path}: not a partial result of this bitedge ({FORMAT}); run the shard again")
    paths = [Path(header.get("root", ".")) / name for name in files]
    outputs = {name: Outputs(values, labels if labels.size else None, paths, skipped) for name, values in
               logits.items()}  # fmt: skip
    partial: Partial = parse_record(Partial, {**header, "outputs": {}}, str(path))
    if any(len(o.logits) != len(paths) for o in outputs.values()):
        raise BadInputError(f"{path}: its logits and its image list differ in length; run the shard again")
    return replace(partial, outputs=outputs)


def merge(partials: list[tuple[Path, Partial]], manifest: Manifest) -> Partial:
    """The partials of one artifact and image set, as one unsharded result (refused, naming the problem,
    unless they are shards 0..N-1 of the same run exactly once)."""
    (first_path, first), *_ = partials
    for path, partial in partials:
        if partial.artifact != artifact_digest(manifest):
            raise BadInputError(f"{path}: a partial result of another artifact (its files' sha256 differ)")
        for field, what in (("images", "image set"), ("count", "shard count"), ("budget", "budget")):
            if getattr(partial, field) != getattr(first, field):
                raise BadInputError(f"{path} and {first_path}: partial results of different {what}s; nothing merged")
    seen: dict[int, Path] = {}
    for path, partial in partials:
        if partial.index in seen:
            raise BadInputError(f"{path} and {seen[partial.index]} are both shard {partial.index}/{first.count}")
        seen[partial.index] = path
    missing = sorted(set(range(first.count)) - set(seen))
    if missing:
        shards = ", ".join(f"{i}/{first.count}" for i in missing)
        raise BadInputError(f"missing shard(s) {shards}: run them with --shard, then merge all {first.count}")
    ordered = [partial for _, partial in sorted(partials, key=lambda item: item[1].index)]
    names = list(first.outputs)
    if any(list(p.outputs) != names for p in ordered):
        raise BadInputError("the partial results ran different models (e.g. one without the simulated model)")
    outputs = {name: _concatenate([p.outputs[name] for p in ordered]) for name in names}
    notes = list(dict.fromkeys(note for p in ordered for note in p.notes))
    return replace(first, index=0, count=1, notes=notes, outputs=outputs)


def _concatenate(parts: list[Outputs]) -> Outputs:
    labels = [p.labels for p in parts if p.labels is not None]
    return Outputs(
        np.concatenate([p.logits for p in parts]),
        np.concatenate(labels) if len(labels) == len(parts) else None,
        [f for p in parts for f in p.files],
        [s for p in parts for s in p.skipped],
    )


def budget_of(partial: Partial) -> Budget:
    budget: Budget = parse_record(Budget, partial.budget, "partial result: budget")
    return budget
