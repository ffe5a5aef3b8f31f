"""Structural checks of a saved .mlpackage: what must hold before its numbers are worth checking.

Specification version and opset, input and output descriptions, the classifier's labels, an op histogram
within what the emulator (and bitedge's converter) knows, and every weight blob decoding with the dtype and
size the program declares. A package that fails any check is broken: conversion and verification stop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bitedge.converters._coreml_emulator import SUPPORTED_OPS
from bitedge.converters._coreml_package import MLPackage, PackageError

MIN_SPEC_VERSION = 6  # ML programs start at specification version 6 (iOS15)
OPSETS = ("CoreML5", "CoreML6", "CoreML7", "CoreML8", "CoreML9")


@dataclass
class PackageCheck:
    spec_version: int
    opset: str
    ops: Counter[str]
    blobs: int  # weight blobs decoded
    blob_bytes: int
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        compute = {k: v for k, v in sorted(self.ops.items()) if k != "const"}
        return (
            f"Core ML package: specification {self.spec_version}, opset {self.opset}, "
            f"{sum(compute.values())} ops {dict(compute)}, {self.blobs} weight blobs "
            f"({self.blob_bytes / 2**20:.2f} MiB) decoded"
        )


def check_package(package: MLPackage, *, labels: list[str]) -> PackageCheck:
    """Check ``package``; raises PackageError listing every problem found."""
    spec = package.spec
    check = PackageCheck(int(spec.specificationVersion), package.opset, package.op_histogram(), 0, 0)
    problems = check.problems
    if check.spec_version < MIN_SPEC_VERSION:
        problems.append(f"specification version {check.spec_version} is older than ML programs ({MIN_SPEC_VERSION})")
    if check.opset not in OPSETS:
        problems.append(f"unknown opset {check.opset!r}")
    description = spec.description
    for feature in [*description.input, *description.output]:
        if not feature.shortDescription:
            problems.append(f"feature {feature.name!r} has no description")
    if not description.metadata.shortDescription:
        problems.append("the model has no description")
    stored = _class_labels(package)
    if stored != labels:
        problems.append(f"classifier labels {stored[:5]}… differ from the model's {labels[:5]}…")
    unknown = sorted(set(check.ops) - SUPPORTED_OPS)
    if unknown:
        problems.append(f"ops outside the allowlist: {', '.join(unknown)}")
    for name, value in package.blob_values():
        try:
            array = package.decode(value)
        except PackageError as exc:
            problems.append(f"{name}: {exc}")
            continue
        check.blobs += 1
        check.blob_bytes += array.nbytes
    if problems:
        raise PackageError(f"{package.root}: broken Core ML package: " + "; ".join(problems))
    return check


def _class_labels(package: MLPackage) -> list[str]:
    """The labels of the program's classify op (what the app's classLabel output draws from)."""
    for op in package.block.operations:
        if op.type == "classify":
            (binding,) = op.inputs["classes"].arguments
            classes = package.decode(binding.value)
            return [str(c) for c in (classes if isinstance(classes, list) else [classes])]
    return []
