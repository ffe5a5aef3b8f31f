"""Which artifacts a conversion request builds, and where (``plan``).

Targets and precisions the user names are required: an unknown or unavailable one is an error. Left
unnamed, they default to every target whose runtime is installed and usable here, each at every precision
it supports; the rest are reported as skipped, with the reason. One artifact goes straight into ``out``;
several go into ``out/<target>-<precision>/``. A request whose options no planned artifact uses is an error
before any work: an ignored option is a mistake the user should hear about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitedge.converters import converter_classes, get_converter, target_names
from bitedge.errors import BadInputError, BitEdgeError
from bitedge.pipeline.options import ConvertRequest
from bitedge.precisions import Precision


@dataclass(frozen=True)
class Job:
    target: str
    precision: Precision
    directory: Path


@dataclass(frozen=True)
class Skipped:
    target: str
    reason: str


def plan(request: ConvertRequest) -> tuple[list[Job], list[Skipped]]:
    """The (target, precision) artifacts to build and the targets left out with their reasons; refuses
    options that no planned artifact would use."""
    jobs, skipped = plan_jobs(request.targets, request.precisions, request.out)
    _check_options_apply(request, jobs)
    return jobs, skipped


def plan_jobs(
    targets: tuple[str, ...] | None, precisions: tuple[Precision, ...] | None, out: Path
) -> tuple[list[Job], list[Skipped]]:
    pairs: list[tuple[str, Precision]] = []
    skipped: list[Skipped] = []
    for target in targets or target_names():
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
        raise BadInputError(f"nothing to convert: {reasons}")
    if len(pairs) == 1:
        return [Job(pairs[0][0], pairs[0][1], out)], skipped
    return [Job(t, p, out / f"{t}-{p}") for t, p in pairs], skipped


def _check_options_apply(request: ConvertRequest, jobs: list[Job]) -> None:
    planned = ", ".join(f"{job.target} {job.precision}" for job in jobs)
    int8 = [job for job in jobs if job.precision == Precision.INT8]
    if not int8 and (request.calibration is not None or request.quantizer is not None):
        raise BadInputError(
            f"calibration and quantizer options only apply to int8, and none of the planned artifacts is int8 "
            f"({planned}): add --precision int8 or drop them"
        )
    for target in request.target_options:
        if not any(job.target == target for job in jobs):
            raise BadInputError(
                f"options of the {target} target were given, but no {target} artifact is planned ({planned}): "
                f"add --target {target} or drop them"
            )
    if request.quantizer is not None:
        refusing = sorted({j.target for j in int8 if request.quantizer not in get_converter(j.target).quantizers})
        if refusing:
            offering = [c.name for c in converter_classes() if request.quantizer in c.quantizers]
            raise BadInputError(
                f"--quantizer {request.quantizer} is not available for {', '.join(refusing)}; name the targets "
                f"that offer it with --target ({', '.join(offering) or 'none'})"
            )
