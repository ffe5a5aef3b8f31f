"""`CalibrationTable`: the int8 ranges of one deploy graph, computed once and shared by every target.

JSON, so it can be read, diffed and reused (``bitedge calibrate`` writes it; ``bitedge convert
--calibration-table`` reuses it). It records the method, each quantized layer's input range, the recipe
(which layers stay float), the calibration manifest's hash and the model it belongs to; reusing it on
another model or input size is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bitedge.errors import BadInputError
from bitedge.fileio import write_json_atomic

TABLE_VERSION = 1


@dataclass
class CalibrationTable:
    method: str
    amax: dict[str, float]  # quantized layer name -> symmetric range of its input
    excluded: list[str]  # layers kept in float
    model_sha256: str | None
    input: dict[str, Any]  # {"size": [H, W], "raw_pixels": bool}
    calibration: dict[str, Any] = field(default_factory=dict)  # manifest digest, source, used, seed, skipped
    version: int = TABLE_VERSION

    def scale(self, layer: str) -> float:
        """int8 scale of a layer's input: ``amax / 127``."""
        return max(self.amax[layer], 1e-12) / 127.0

    def save(self, path: str | Path) -> Path:
        return write_json_atomic(Path(path), asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> CalibrationTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            table = cls(**data)
        except FileNotFoundError:
            raise BadInputError(f"{path}: no such calibration table; write one with bitedge calibrate") from None
        except (OSError, ValueError, TypeError) as exc:
            raise BadInputError(f"{path}: not a bitedge calibration table ({exc})") from None
        if table.version != TABLE_VERSION:
            raise BadInputError(f"{path}: table format {table.version}, this bitedge reads {TABLE_VERSION}")
        bad = [k for k, v in table.amax.items() if not isinstance(v, int | float) or not math.isfinite(v) or v < 0]
        if bad:
            raise BadInputError(f"{path}: invalid ranges for {', '.join(bad[:3])}")
        return table

    def check_matches(self, *, model_sha256: str | None, size: list[int], raw_pixels: bool, layers: list[str]) -> None:
        """Refuse a table made for another model, input or recipe."""
        if self.model_sha256 != model_sha256:
            raise BadInputError("the calibration table was made for another checkpoint (sha256 differs)")
        if self.input != {"size": list(size), "raw_pixels": raw_pixels}:
            raise BadInputError(
                f"the calibration table was made for input {self.input}, not size {size} raw_pixels {raw_pixels}"
            )
        missing = sorted(set(layers) - set(self.amax))
        if missing:
            raise BadInputError(f"the calibration table has no range for {', '.join(missing[:3])}")
