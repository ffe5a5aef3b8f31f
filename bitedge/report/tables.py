"""The report's tables beyond the artifacts' rows: the layers ``--fallback auto`` kept in float (and what each
bought), a layer sensitivity ranking (``bitedge sensitivity --out`` into the report's directory), and per-class
accuracy (a heat map in HTML), read back from the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitedge.artifacts.manifest import Manifest
from bitedge.errors import BadInputError
from bitedge.fileio import read_json_file

SENSITIVITY_FILE = "sensitivity.json"
SHOWN_LAYERS = 15  # of the sensitivity ranking


@dataclass(frozen=True)
class Table:
    title: str
    note: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]

    def markdown(self) -> list[str]:
        lines = [f"## {self.title}", "", self.note, "", "| " + " | ".join(self.header) + " |",
                 "|" + "---|" * len(self.header)]  # fmt: skip
        return lines + ["| " + " | ".join(row) + " |" for row in self.rows]


def int8_tables(root: Path, manifests: list[Manifest]) -> list[Table]:
    """The fallback searches recorded in ``manifests`` (one table per distinct search) and the ranking in
    ``root/sensitivity.json`` when there is one."""
    tables: list[Table] = []
    seen: list[dict[str, Any]] = []
    for manifest in manifests:
        record = manifest.calibration.fallback if manifest.calibration else None
        if record is None or record in seen:
            continue
        seen.append(record)
        users = [f"{m.target} {m.precision}" for m in manifests if m.calibration and m.calibration.fallback == record]
        tables.append(_fallback_table(record, users))
    if (root / SENSITIVITY_FILE).is_file():
        tables.append(_sensitivity_table(root / SENSITIVITY_FILE))
    return tables


def _fallback_table(record: dict[str, Any], users: list[str]) -> Table:
    try:
        rows: list[tuple[str, ...]] = []
        previous = None
        for step in record["steps"]:
            bought = "-" if previous is None else f"{step['cosine'] - previous['cosine']:+.6f}"
            drop = "-" if step["accuracy_drop"] is None else f"{step['accuracy_drop']:.2f}"
            rows.append((step["layer"] or "(all int8)", f"{step['top1_agreement']:.2%}", f"{step['cosine']:.6f}",
                         bought, drop, "yes" if step["meets"] else "no"))  # fmt: skip
            previous = step
        note = (f"--fallback auto, for {', '.join(users)}: layers moved to float in order of harm until the "
                f"simulated model met the budget with a {record['margin']:.0%} margin on {record['images']} "
                f"images; {len(record['float_layers'])} layers stay float.")  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{', '.join(users)}: the manifest's calibration.fallback is malformed ({exc}); "
                            "convert again") from None  # fmt: skip
    header = ("moved to float", "top-1 agreement", "cosine", "cosine bought", "accuracy drop", "meets budget")
    return Table("INT8 layers kept in float", note, header, rows)


def _sensitivity_table(path: Path) -> Table:
    data = read_json_file(path, "sensitivity results")
    try:
        if not isinstance(data, dict) or data.get("kind") != "bitedge sensitivity":
            raise ValueError("not written by bitedge sensitivity")
        return sensitivity_table(data, SHOWN_LAYERS)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{path}: not bitedge sensitivity results ({exc}); remove it or run bitedge "
                            "sensitivity again") from None  # fmt: skip


def sensitivity_table(data: dict[str, Any], limit: int) -> Table:
    """The ``limit`` most harmful layers of a ``bitedge sensitivity`` ranking (its JSON)."""
    rows = [(str(i), str(r["layer"]), f"{r['top1_agreement']:.2%}", f"{r['cosine']:.6f}", f"{r['snr_db']:.1f}")
            for i, r in enumerate(data["ranking"][:limit], 1)]  # fmt: skip
    note = (f"Each layer quantized alone, the rest float, against float on {data['images']} images "
            f"({', '.join(data['placements'])}; worst shown); the {len(rows)} most harmful of "
            f"{len(data['ranking'])}.")  # fmt: skip
    return Table("Layer sensitivity", note, ("rank", "layer", "top-1 agreement", "cosine", "SNR dB"), rows)


MAX_CLASSES = 30  # per-class rows shown; past it, the classes with the largest drop


@dataclass(frozen=True)
class ClassAccuracy:
    """Per-class accuracy (%) of float and of each artifact, for the heat-map table."""

    columns: list[str]  # "float", then each artifact
    rows: list[tuple[str, int, list[float]]]  # (class, images, accuracy per column)
    note: str


def per_class(entries: list[Any]) -> ClassAccuracy | None:
    """From the stored top-1s and labels (every evaluated image); None without labels."""
    labeled = [e for e in entries if e.outputs is not None and len(e.outputs["labels"])]
    if not labeled:
        return None
    names = labeled[0].manifest.labels
    labels = labeled[0].outputs["labels"]
    columns = ["float", *(e.name for e in labeled)]
    tops = [labeled[0].outputs["reference_top1"], *(e.outputs["artifact_top1"] for e in labeled)]
    rows = []
    for c, name in enumerate(names):
        mask = labels == c
        if mask.any():
            rows.append((name, int(mask.sum()), [float((top[mask] == c).mean() * 100) for top in tops]))
    note = f"{len(rows)} classes, accuracy % on their evaluation images."
    if len(rows) > MAX_CLASSES:
        rows.sort(key=lambda row: row[2][0] - min(row[2][1:]), reverse=True)
        rows = sorted(rows[:MAX_CLASSES], key=lambda row: names.index(row[0]))
        note = f"The {MAX_CLASSES} of {len(names)} classes where an artifact loses most against float."
    return ClassAccuracy(columns, rows, note + " Colour: each artifact against float, green as good or better, "
                         "red worse (fully red at 10 points lost).")  # fmt: skip
