"""What a conversion is asked to do, every option parsed and checked once, at the boundary
(``bitedge.api``): the request the pipeline runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bitedge.calibration import DEFAULT_METHOD
from bitedge.converters import get_converter
from bitedge.converters.base import TargetOptions
from bitedge.cpu import AUTO, CpuTarget, parse_cpu
from bitedge.errors import BadInputError
from bitedge.parity.metrics import BudgetOverride
from bitedge.precisions import Precision


class Fallback(StrEnum):
    """What int8 does when the simulated model misses its budget: nothing (the artifact fails), or keep the
    fewest, most sensitive layers in float until it meets the budget (``calibration/fallback.py``)."""

    NONE = "none"
    AUTO = "auto"


def parse_fallback(text: str) -> Fallback:
    try:
        return Fallback(text.lower())
    except ValueError:
        choices = ", ".join(f.value for f in Fallback)
        raise BadInputError(f"unknown --fallback {text!r}; choose from {choices}") from None


@dataclass(frozen=True)
class CalibrationOptions:
    """Where an int8 conversion's calibration table comes from: computed from ``images``, or ``table`` reused
    (``images`` then only feed a target's own quantizer, e.g. NNCF)."""

    images: Path | None = None  # folder, .txt list or .npy/.npz
    table: Path | None = None  # reuse this table instead of calibrating
    method: str = DEFAULT_METHOD
    size: int | None = 512  # seeded sample of this many images; None: all
    seed: int = 0
    exclude: tuple[str, ...] = ()
    strict_images: bool = False


@dataclass(frozen=True)
class ConvertRequest:
    """A conversion, every option parsed and checked (``bitedge.api.convert`` builds it)."""

    model: str  # a checkpoint path or preset name
    out: Path
    eval_images: Path
    targets: tuple[str, ...] | None = None  # None: every target usable here
    precisions: tuple[Precision, ...] | None = None  # None: all each target supports
    calibration: CalibrationOptions | None = None  # int8 only: where the table comes from
    quantizer: str | None = None  # int8: "bitedge" or a target's own ("nncf"); None: each target's default
    image_size: int | None = None  # overrides the checkpoint's resize/crop size
    batch: int | None = None  # None: dynamic batch dimension
    raw_pixel_input: bool = False
    overwrite: bool = False
    threads: int | None = None  # runtime threads during verification
    seed: int = 0  # weight seed, for presets
    target_options: Mapping[str, TargetOptions] = field(default_factory=dict)  # per target name
    budget: BudgetOverride = field(default_factory=BudgetOverride)  # limits over each precision's default budget
    fallback: Fallback = Fallback.NONE  # int8: keep the most sensitive layers float until the budget holds
    cpu: CpuTarget = field(default_factory=lambda: parse_cpu(AUTO))  # int8: the CPU x86 placements are made for

    def options_for(self, target: str) -> TargetOptions:
        """The target's own options: as given, or its defaults."""
        given = self.target_options.get(target)
        return given if given is not None else get_converter(target).Options()
