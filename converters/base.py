"""The converter contract every target implements (DESIGN.md): one small abstract base.

A converter turns a folded deploy graph into files in a directory, loads those files back as a *runner*
in the target's real runtime (``batch (N, 3, H, W) float32 -> logits (N, K) float32``), and names its
parity budgets. Runtime imports happen inside methods, so importing bitedge never needs the runtime and a
missing one is reported as "install bitedge[<extra>]".
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import nn

from bitedge.errors import MissingRuntimeError, UnknownTargetError
from bitedge.image_processor import BitImageProcessor
from bitedge.manifest import InputRecord, Manifest, OutputRecord
from bitedge.parity import BUDGETS, Budget
from bitedge.targets import ONNX_GROUP_NORMS, Precision, Target

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExportSpec:
    """What the artifact's input looks like, what to embed in it and, for int8, how to quantize."""

    input_size: tuple[int, int]  # (H, W)
    batch: int | None  # None: dynamic batch dimension
    raw_pixel_input: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    simulated: nn.Module | None = None  # int8: the deploy graph with bitedge's Q/DQ (calibration table)
    calibration: Callable[[], Iterable[np.ndarray]] | None = None  # int8: calibration batches, for own quantizers
    quantizer: str | None = None  # int8: "bitedge" (the table) or a target's own, e.g. "nncf"; None: default
    onnx_group_norm: str = ONNX_GROUP_NORMS[0]  # the onnx target's GroupNorm form, one of ONNX_GROUP_NORMS
    processor: BitImageProcessor | None = None  # the preprocessing, for runtimes that take images (Core ML)
    labels: tuple[str, ...] = ()  # class names, for runtimes with a classifier output (Core ML)
    coreml_target: str | None = None  # Core ML minimum deployment target, e.g. "iOS17"; None: the lowest possible
    tensor_input: bool = False  # Core ML: a plain multi-array input instead of an image
    # Called by a converter as soon as its runtime holds its own copy of the weights: the pipeline frees the
    # folded weights there when no later artifact needs them, so the two never pile up with the runtime's.
    release_source: Callable[[], None] | None = None

    def source_released(self) -> None:
        if self.release_source is not None:
            self.release_source()


@dataclass(frozen=True)
class ConvertedFiles:
    files: list[str]  # relative to the artifact directory
    notes: list[str] = field(default_factory=list)
    quantizer: str | None = None  # int8: which quantizer made the artifact
    # int8: True when the artifact carries bitedge's Q/DQ, so the simulated model is its fidelity reference
    simulated_reference: bool = False


class Converter(ABC):
    """One deployment target."""

    target: ClassVar[Target]
    precisions: ClassVar[tuple[Precision, ...]]
    extra: ClassVar[str]  # pip extra that installs the runtime: bitedge[<extra>]
    modules: ClassVar[tuple[str, ...]]  # Python modules the runtime needs
    quantizers: ClassVar[tuple[str, ...]] = ("bitedge",)  # int8 quantizers it offers, the default first

    def check_runtime(self) -> None:
        """Raise MissingRuntimeError unless the runtime imports."""
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise MissingRuntimeError(
                    f"target {self.target} needs {module} ({exc}); install it with: pip install 'bitedge[{self.extra}]'"
                ) from None

    def validate(self, precision: Precision, spec: ExportSpec) -> None:  # noqa: B027 - optional hook
        """Raise a BitEdgeError for an option combination the target cannot build (checked before any work)."""

    def default_skip_reason(self) -> str | None:
        """Why a convert that names no target should leave this one out here (None: include it)."""
        return None

    def check_precision(self, precision: Precision) -> None:
        if precision not in self.precisions:
            supported = ", ".join(p.value for p in self.precisions)
            raise UnknownTargetError(f"target {self.target} does not support {precision}; it supports {supported}")

    def tool_versions(self) -> dict[str, str]:
        versions = {}
        for module in self.modules:
            versions[module] = str(getattr(importlib.import_module(module), "__version__", "unknown"))
        return versions

    def io_records(self, spec: ExportSpec, num_labels: int) -> tuple[InputRecord, OutputRecord]:
        """The manifest's description of the artifact's input and output; the gate feeds the input accordingly
        (``InputRecord.normalization`` says where the input normalization happens)."""
        batch: int | str = spec.batch if spec.batch is not None else "batch"
        raw = spec.raw_pixel_input
        tensor = InputRecord("pixel_values", [batch, 3, *spec.input_size], "float32", raw_pixels=raw,
                             normalization="stem" if raw else "caller")  # fmt: skip
        return tensor, OutputRecord("logits", [batch, num_labels])

    def budget(self, precision: Precision) -> Budget:
        return BUDGETS[precision]

    @abstractmethod
    def convert(self, deploy: nn.Module, directory: Path, *, precision: Precision, spec: ExportSpec) -> ConvertedFiles:
        """Write the runtime's files for ``deploy`` into ``directory``."""

    @abstractmethod
    def load_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        """The artifact, loaded in its real runtime, as ``batch -> logits`` (the verified configuration)."""

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None
    ) -> tuple[Runner, dict[str, Any]]:
        """The artifact configured as a deployment runs it, for timing; and that configuration, recorded."""
        return self.load_runner(directory, manifest, threads=threads), {"runtime": self.target.value}

    def informational_runners(self, directory: Path, manifest: Manifest) -> dict[str, Runner]:
        """Other ways users may run the artifact (e.g. a runtime's default precision), shown, not gated."""
        return {}


def fixed_batch(run: Runner, batch: int | None) -> Runner:
    """Adapt a runner whose artifact has a fixed batch size to any number of samples (pad, then slice)."""
    if batch is None:
        return run

    def chunked(pixels: np.ndarray) -> np.ndarray:
        outputs = []
        for start in range(0, len(pixels), batch):
            chunk = pixels[start : start + batch]
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            outputs.append(run(padded)[: len(chunk)])
        return np.concatenate(outputs)

    return chunked
