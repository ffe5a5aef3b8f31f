"""The converter contract every target implements (docs/design.md): one small abstract base.

A converter turns a folded deploy graph into files in a directory, loads those files back as a *runner*
in the target's real runtime (``batch (N, 3, H, W) float32 -> logits (N, K) float32``), and names its
parity budgets. It declares its own options as a frozen dataclass (``Options``), whose fields become its
command-line flags. Runtime imports (and torch) happen inside methods, so importing a target module is cheap:
``bitedge --help`` imports every target, and a missing runtime is reported as "install bitedge[<extra>]".

What a target promises (``bitedge.testing.contract`` checks each, for built-in and outside targets alike):

- ``convert`` never changes ``deploy``: one deploy graph feeds every artifact of a run, so ``deploy.half()``
  or an in-place edit for fp16 would spoil the fp32 artifact after it. Work on a copy
  (``copy.deepcopy(deploy)``) or on an exported graph. The pipeline checks: a target that changed the graph it
  was given fails (an outside target is given its own copy, so it cannot spoil a built-in one).
- A runner takes any number of images: an artifact with a fixed batch size (``spec.batch``, recorded as
  ``manifest.input.batch``) wraps its runner in ``fixed_batch`` (pads to whole batches, then slices).
- Failing is allowed, crashing bitedge is not: an exception out of ``convert``, ``load_runner`` or a runner
  is reported as this target's failure, naming it (``target_code``); the run's other artifacts still build.
  Raise a ``BitEdgeError`` (``ExportError``, ``BadInputError``...) with a message saying what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from bitedge.artifacts.manifest import InputRecord, Manifest, OutputRecord
from bitedge.calibration.placement import SYMMETRIC_INT8, Placement
from bitedge.cpu import Cpu
from bitedge.errors import BadInputError, BitEdgeError, MissingRuntimeError, TargetError
from bitedge.model.image_processor import BitImageProcessor
from bitedge.parity.metrics import BUDGETS, Budget, Runner
from bitedge.precisions import Precision

if TYPE_CHECKING:
    from torch import nn


def option(help: str, *, choices: tuple[str, ...] | None = None, aliases: tuple[str, ...] = ()) -> dict[str, Any]:
    """Metadata of a target option's field: its help text, allowed values and extra flag spellings. The flag
    itself is ``--<target>-<field-name>``."""
    return {"help": help, "choices": choices, "aliases": aliases}


@dataclass(frozen=True)
class TargetOptions:
    """Base of every target's options: a frozen dataclass of str, int or bool fields with defaults."""


@dataclass(frozen=True)
class ExportSpec:
    """What the artifact's input looks like, what to embed in it and, for int8, how to quantize."""

    input_size: tuple[int, int]  # (H, W)
    batch: int | None  # None: dynamic batch dimension
    raw_pixel_input: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    simulated: nn.Module | None = None  # int8: the deploy graph with bitedge's Q/DQ, in the target's placement
    placement: Placement | None = None  # int8: that placement (``int8_placement(cpu)``; None: ``placement``)
    calibration: Callable[[], Iterable[np.ndarray]] | None = None  # int8: calibration batches, for own quantizers
    quantizer: str | None = None  # int8: "bitedge" (the table) or a target's own, e.g. "nncf"; None: default
    processor: BitImageProcessor | None = None  # the preprocessing, for runtimes that take images (Core ML)
    labels: tuple[str, ...] = ()  # class names, for runtimes with a classifier output (Core ML)
    options: TargetOptions = TargetOptions()  # the target's own options (its ``Options`` dataclass)


Taps = Callable[[np.ndarray], dict[str, np.ndarray]]  # pixels (N, 3, H, W) -> {layer: its output (N, ...)}


@dataclass(frozen=True)
class TapSource:
    """What ``bitedge diagnose`` rebuilt from the artifact's source, for a target that cannot tap the artifact's
    own file and builds a tapped twin of it instead (the same lowering, with the layers' outputs as outputs)."""

    deploy: nn.Module  # the float deploy graph the artifact was built from
    spec: ExportSpec  # as at conversion: input size, batch, options, and for int8 the simulated model
    layers: list[str]  # the tap points (``bitedge.model.taps``), in graph order


@dataclass(frozen=True)
class DeviceBundle:
    """How an artifact runs on a device without bitedge (``bitedge bench --bundle``): which runtime the bundle's
    ``run.py`` loads it with (``None``: only the native tool can), the files to copy, and the runtime's own
    benchmark command (``{batch}``, ``{height}``, ``{width}``, ``{threads}``, ``{runs}``, ``{seconds}``,
    ``{input_bin}`` are filled in)."""

    runtime: str | None  # "onnxruntime" | "openvino" | "executorch" | "coreml" (run.py's loaders)
    model: str  # the file (or package folder) the runtime loads
    files: list[str]  # what the bundle copies from the artifact
    native: dict[str, str] = field(default_factory=dict)  # tool -> its command, run in the bundle's folder
    uint8_nhwc: bool = False  # the model takes uint8 NHWC (OpenVINO raw-pixel IRs)
    output: str = "logits"  # the output holding the logits (or the probabilities)
    outputs_are: str = "logits"  # or "log_probabilities": a runtime that gives softmax outputs (Core ML)
    notes: list[str] = field(default_factory=list)  # what a user running it must know
    extra_files: dict[str, str] = field(default_factory=dict)  # name -> text written into the bundle


@dataclass(frozen=True)
class ConvertedFiles:
    files: list[str]  # relative to the artifact directory
    notes: list[str] = field(default_factory=list)
    quantizer: str | None = None  # int8: which quantizer made the artifact
    # int8: True when the artifact carries bitedge's Q/DQ, so the simulated model is its fidelity reference
    simulated_reference: bool = False


def keep_weights() -> None:
    """The default ``release_weights``: the caller still needs the deploy graph's weights."""


class Converter(ABC):
    """One deployment target. Subclasses register with ``@register`` (``bitedge.converters.registry``)."""

    name: ClassVar[str]  # the target's name on the command line and in manifests
    description: ClassVar[str]  # one line: what the artifact is and what runs it
    precisions: ClassVar[tuple[Precision, ...]]
    extra: ClassVar[str]  # pip extra that installs the runtime: bitedge[<extra>]
    install: ClassVar[str | None] = None  # the install command, when not "pip install 'bitedge[<extra>]'"
    modules: ClassVar[tuple[str, ...]]  # Python modules the runtime needs
    quantizers: ClassVar[tuple[str, ...]] = ("bitedge",)  # int8 quantizers it offers, the default first
    placement: ClassVar[Placement] = SYMMETRIC_INT8  # where bitedge's int8 Q/DQ go for this runtime (--cpu avx2)
    Options: ClassVar[type[TargetOptions]] = TargetOptions  # its own options (fields become CLI flags)
    budgets: ClassVar[Mapping[Precision, Budget]] = BUDGETS  # parity budget per precision (artifact vs float)

    def int8_placement(self, cpu: Cpu) -> Placement:
        """Where bitedge's int8 Q/DQ go for this runtime on ``cpu`` (``--cpu``): ``placement``, with 8-bit weights
        where it has fewer and the CPU has VNNI. Override where the runtime wants another pattern on some CPU."""
        return self.placement.for_cpu(cpu)

    def int8_placements(self) -> dict[str, Placement]:
        """Every placement this target builds on some CPU, by name (to read back what a manifest records)."""
        return {p.name: p for p in (self.int8_placement(cpu) for cpu in Cpu)}

    def check_runtime(self) -> None:
        """Raise MissingRuntimeError unless the runtime imports."""
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                install = self.install or f"pip install 'bitedge[{self.extra}]'"
                raise MissingRuntimeError(
                    f"target {self.name} needs {module} ({exc}); install it with: {install}"
                ) from None

    def default_skip_reason(self) -> str | None:
        """Why a convert that names no target should leave this one out here (None: include it)."""
        return None

    def check_precision(self, precision: Precision) -> None:
        if precision not in self.precisions:
            supported = ", ".join(p.value for p in self.precisions)
            raise BadInputError(f"target {self.name} does not support {precision}; it supports {supported}")

    @classmethod
    def parse_options(cls, values: Mapping[str, Any]) -> TargetOptions:
        """The target's ``Options`` from user values (unknown names, wrong types and choices are errors)."""
        known = {f.name: f for f in dataclasses.fields(cls.Options)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            choices = ", ".join(known) or "none"
            raise BadInputError(f"target {cls.name} has no option {', '.join(unknown)}; its options: {choices}")
        for name, value in values.items():
            default = known[name].default
            if value is not None and default is not None and not isinstance(value, type(default)):
                raise BadInputError(f"{cls.name} option {name}: expected {type(default).__name__}, got {value!r}")
            allowed: tuple[str, ...] | None = known[name].metadata.get("choices")
            if allowed and value not in allowed:
                raise BadInputError(f"{cls.name} option {name}: {value!r} is not one of {', '.join(allowed)}")
        return cls.Options(**values)

    def validate(self, precision: Precision, spec: ExportSpec) -> None:  # noqa: B027 - optional hook
        """Raise a BitEdgeError for an option combination the target cannot build (checked before any work)."""

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
        return self.budgets[precision]

    @abstractmethod
    def convert(
        self,
        deploy: nn.Module,
        directory: Path,
        *,
        precision: Precision,
        spec: ExportSpec,
        release_weights: Callable[[], None] = keep_weights,
    ) -> ConvertedFiles:
        """Write the runtime's files for ``deploy`` into ``directory``.

        ``deploy`` is shared by every artifact of the run: never change it (work on a copy). Call
        ``release_weights()`` as soon as the runtime holds its own copy of the weights: the caller frees
        ``deploy``'s (and the simulated model's) weights there when nothing later needs them, so a large model
        never sits in memory three times. ``deploy`` must not be used after the call.
        """

    @abstractmethod
    def load_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        """The artifact, loaded in its real runtime, as ``batch -> logits`` (the verified configuration); for
        any number of images (``fixed_batch`` adapts an artifact with a fixed batch size)."""

    def open_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        """``load_runner`` as bitedge calls it: for any number of images, and an exception of the target's own
        code (loading or running) reported as this target's failure (``target_code``)."""
        with target_code(self.name, "load the artifact in its runtime"):
            run = self.load_runner(directory, manifest, threads=threads)
        return TargetRunner(self.name, run, batch=manifest.input.batch)

    def bench_precisions(self, manifest: Manifest) -> tuple[str, ...]:
        """The precisions this artifact actually runs in here, as a deployment may run it: one bench row each.
        Most runtimes run what the artifact holds; OpenVINO's CPU plugin runs f32 or, by default where the CPU
        has it, bf16."""
        return (manifest.precision,)

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None, runs: str | None = None
    ) -> tuple[Runner, dict[str, Any]]:
        """The artifact configured as a deployment runs it (in precision ``runs``, one of ``bench_precisions``),
        for timing; and that configuration, recorded."""
        return self.load_runner(directory, manifest, threads=threads), {"runtime": self.name}

    def informational_runners(self, directory: Path, manifest: Manifest) -> dict[str, Runner]:
        """Other ways users may run the artifact (e.g. a runtime's default precision), shown, not gated."""
        return {}

    def tap_runner(
        self, directory: Path, manifest: Manifest, *, source: TapSource, threads: int | None = None
    ) -> Taps | None:
        """For ``bitedge diagnose``: the artifact in its runtime with the outputs of its layers tapped, as
        ``pixels -> {layer: output}`` (float32, layers named by their path in bitedge's model, any subset of
        ``source.layers`` the runtime can observe). None: this target has no taps."""
        return None

    def device_bundle(self, directory: Path, manifest: Manifest) -> DeviceBundle | None:
        """How this artifact runs on a device without bitedge (``bitedge bench --bundle``); None: it cannot."""
        return None

    def build_on_device(self, directory: Path) -> list[str]:
        """Build what the artifact needs on the device that will run it (``bitedge build-engine``); returns the
        new files. Most targets need nothing there."""
        raise BadInputError(f"{directory}: a {self.name} artifact has nothing to build on the device")


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


def fixed_batch_taps(run: Taps, batch: int | None) -> Taps:
    """``fixed_batch`` for tapped runners: any number of images through an artifact of a fixed batch size."""
    if batch is None:
        return run

    def chunked(pixels: np.ndarray) -> dict[str, np.ndarray]:
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, len(pixels), batch):
            chunk = pixels[start : start + batch]
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            parts.append({layer: out[: len(chunk)] for layer, out in run(padded).items()})
        return {layer: np.concatenate([p[layer] for p in parts]) for layer in parts[0]}

    return chunked


class TargetRunner:
    """A target's runner whose exceptions are that target's failure (``target_code``), for any number of images
    when its artifact has a fixed ``batch``; what the runner noted (``notes``) stays readable."""

    def __init__(self, name: str, run: Runner, *, batch: int | None = None) -> None:
        self.name, self.run, self.batched = name, run, fixed_batch(run, batch)

    @property
    def notes(self) -> list[str]:
        return list(getattr(self.run, "notes", []))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with target_code(self.name, "run the artifact"):
            return self.batched(pixels)


@contextlib.contextmanager
def target_code(name: str, what: str) -> Iterator[None]:
    """Run a target's own code (``what`` it does, e.g. "convert the model"): an exception it raises becomes a
    ``TargetError`` naming the target, never "a bug in bitedge". bitedge's own errors, a memory or disk
    failure and Ctrl-C pass through unchanged."""
    from bitedge.memory import is_out_of_memory

    try:
        yield
    except (BitEdgeError, KeyboardInterrupt, GeneratorExit, OSError):
        raise
    except BaseException as exc:  # a target's bug, even sys.exit(): its failure, not bitedge's
        if is_out_of_memory(exc):
            raise
        said = "sys.exit()" if isinstance(exc, SystemExit) else type(exc).__name__
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise TargetError(f"the {name} target failed to {what} ({said}{': ' + first if first else ''})") from exc
