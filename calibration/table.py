"""`CalibrationTable`: the int8 ranges of one deploy graph, computed once and shared by every target.

JSON, so it can be read, diffed and reused (``bitedge calibrate`` writes it; ``bitedge convert
--calibration-table`` reuses it). For every quantizable layer it records the range of its input and of its
output (``Range``: the method's symmetric clip ``amax`` and the observed signed extremes), which is every
range any target's placement needs (``calibration/placement.py``). It also records the method, the layers
kept in float, the calibration manifest's hash and the model it belongs to; reusing it on another model,
input size or layer set is refused, and so is a table of format 1 (conv inputs only, one placement).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bitedge.artifacts.records import parse_record
from bitedge.calibration import METHODS
from bitedge.errors import BadInputError
from bitedge.fileio import write_json_atomic

TABLE_VERSION = 2
SITES = ("input", "output")


@dataclass(frozen=True)
class Range:
    """One tensor's calibrated range: the clip the method chose for |x|, and the observed min and max."""

    amax: float
    low: float
    high: float


@dataclass
class CalibrationTable:
    method: str
    layers: dict[str, dict[str, Range]]  # quantized layer -> {"input": Range, "output": Range}
    excluded: list[str]  # layers kept in float
    model_sha256: str | None
    input: dict[str, Any]  # {"size": [H, W], "raw_pixels": bool}
    calibration: dict[str, Any] = field(default_factory=dict)  # manifest digest, source, used, seed, skipped
    version: int = TABLE_VERSION

    def keep_float(self, names: list[str]) -> CalibrationTable:
        """This table with the layers ``names`` kept in float as well (their ranges dropped)."""
        layers = {name: sites for name, sites in self.layers.items() if name not in names}
        excluded = [*self.excluded, *(name for name in names if name not in self.excluded)]
        return replace(self, layers=layers, excluded=excluded, calibration=dict(self.calibration))

    def only(self, names: list[str]) -> CalibrationTable:
        """This table quantizing only the layers ``names`` (for measuring what each costs alone)."""
        return self.keep_float([name for name in self.layers if name not in names])

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> CalibrationTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BadInputError(f"{path}: no such calibration table; write one with bitedge calibrate") from None
        except (OSError, ValueError) as exc:
            raise BadInputError(f"{path}: not a bitedge calibration table ({exc})") from None
        if isinstance(data, dict) and ("amax" in data or data.get("version", TABLE_VERSION) != TABLE_VERSION):
            version = data.get("version", 1)
            older = "records only convolution-input ranges, and " if version == 1 else ""
            raise BadInputError(
                f"{path}: calibration table format {version!r} {older}is not the format this bitedge reads "
                f"({TABLE_VERSION}: ranges of every layer's input and output, placed per target): calibrate again "
                "with bitedge calibrate (or convert with --calibration IMAGES)"
            )
        table = parse_record(cls, data, str(path))
        if table.method not in METHODS:
            raise BadInputError(f"{path}: unknown calibration method {table.method!r} (bitedge's are "
                                f"{', '.join(METHODS)}): not a table bitedge wrote; calibrate again")  # fmt: skip
        for name, sites in table.layers.items():
            for site in SITES:
                r = sites.get(site)
                if r is None:
                    raise BadInputError(f"{path}: layers.{name}: missing the {site} range")
                if not all(math.isfinite(v) for v in (r.amax, r.low, r.high)) or r.amax < 0 or r.low > r.high:
                    raise BadInputError(f"{path}: layers.{name}.{site}: invalid range {r} (needs finite values, "
                                        "amax >= 0, low <= high)")  # fmt: skip
        return table

    def check_matches(self, *, model_sha256: str | None, size: list[int], raw_pixels: bool, layers: list[str]) -> None:
        """Refuse a table made for another model, input or layer set (``layers``: the quantized ones)."""
        if self.model_sha256 != model_sha256:
            raise BadInputError("the calibration table was made for another checkpoint (sha256 differs)")
        if self.input != {"size": list(size), "raw_pixels": raw_pixels}:
            raise BadInputError(
                f"the calibration table was made for input {self.input}, not size {size} raw_pixels {raw_pixels}"
            )
        missing = [name for name in layers if name not in self.layers]
        if missing:
            raise BadInputError(f"the calibration table has no range for {', '.join(missing[:3])}: make a new one")
        unknown = [name for name in self.layers if name not in layers] if layers else []
        if unknown:
            raise BadInputError(
                f"the calibration table has ranges for {', '.join(unknown[:3])}, which this model does not quantize "
                "(another model, or layers it keeps in float): make a new one with bitedge calibrate"
            )
