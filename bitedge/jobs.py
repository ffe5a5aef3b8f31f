"""Which artifacts one ``bitedge convert`` builds, and where.

Targets and precisions the user names are required: an unknown or unavailable one is an error. Left
unnamed, they default to every target whose runtime is installed and usable here, each at every precision
it supports; the rest are reported as skipped, with the reason. One artifact goes straight into ``--out``;
several go into ``--out/<target>-<precision>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitedge.converters import get_converter
from bitedge.errors import BitEdgeError
from bitedge.targets import Precision, Target


@dataclass(frozen=True)
class Job:
    target: Target
    precision: Precision
    directory: Path


@dataclass(frozen=True)
class Skipped:
    target: Target
    reason: str


def plan_jobs(
    targets: list[Target] | None, precisions: list[Precision] | None, out: Path
) -> tuple[list[Job], list[Skipped]]:
    """The (target, precision) artifacts to build and the targets left out with their reasons."""
    pairs: list[tuple[Target, Precision]] = []
    skipped: list[Skipped] = []
    for target in targets or list(Target):
        try:
            converter = get_converter(target)
            converter.check_runtime()
        except BitEdgeError as exc:
            if targets:  # asked for by name: the user must hear why it cannot be done
                raise
            skipped.append(Skipped(target, str(exc)))
            continue
        reason = None if targets else converter.default_skip_reason()
        if reason is not None:
            skipped.append(Skipped(target, f"{reason} (name it with --target to build a bundle anyway)"))
            continue
        for precision in precisions or list(converter.precisions):
            if precision in converter.precisions:
                pairs.append((target, precision))
            elif targets:
                converter.check_precision(precision)  # raises with the supported list
            else:
                skipped.append(Skipped(target, f"{precision} is not supported by {target}"))
    if not pairs:
        reasons = "; ".join(f"{s.target}: {s.reason}" for s in skipped)
        raise BitEdgeError(f"nothing to convert: {reasons}")
    if len(pairs) == 1:
        return [Job(pairs[0][0], pairs[0][1], out)], skipped
    return [Job(t, p, out / f"{t}-{p}") for t, p in pairs], skipped
