"""Core ML target: an app-ready ``.mlpackage`` (ML program) in fp32, fp16, w8 and int8 (W8A8), built on Linux.

- ``fp32``: float32 compute. ``fp16``: float16 compute, with GroupNorm's statistics (the subtraction of the
  mean, the square, the means, the square root and the division) kept in float32, because the variance of
  activations past ~256 overflows fp16 (DESIGN.md).
- ``w8``: the fp16 program with int8 per-channel symmetric weights (``linear_quantize_weights``) on
  convolutions and the head.
- ``int8``: W8A8 from bitedge's calibration table. The simulated-quantized model is traced with explicit
  torch quantize/dequantize ops, which coremltools turns into MIL ``quantize``/``dequantize`` (activations)
  and ``constexpr_affine_dequantize`` (int8 weights); needs iOS17 or later. Its float parts are typed fp32,
  so the package computes the simulated-quantized model's numbers (typed fp16, rounding moved 3 of 400 demo
  images across a quantization step: 99.25 % top-1 agreement with the simulated model, under the 99.5 %
  fidelity budget). The Neural Engine computes float parts in fp16 whatever the typing.

By default the model takes an image (``ImageType``, RGB, the model's input size) and applies BiT's
normalization itself: with one std for all channels as ``scale = rescale / std`` and ``bias = -mean / std``
(exact for mean = std = 0.5); with per-channel std the image type computes ``x * rescale - mean`` and
``1 / std`` is folded into the stem. The output is a classifier (``ClassifierConfig``) with the model's
labels: the predicted label and a probability per label (softmax of the logits). ``tensor_input`` gives a
plain multi-array input of normalized pixels instead.

Core ML runs only on macOS, so verification executes the saved package with bitedge's emulator
(:mod:`bitedge.converters._coreml_emulator`), fp16 rounding as the program types it; the gated logits are the
values the program's softmax takes. On macOS, ``MLModel.predict`` is run as well (not gated). For ``bitedge
diagnose``, the package's user-defined metadata records which MIL variable holds each layer's output
(``bitedge.taps``, :mod:`bitedge.converters._coreml_taps`), and the emulator keeps those as it runs.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bitedge.artifacts.manifest import InputRecord, Manifest, OutputRecord
from bitedge.converters.base import (
    ConvertedFiles,
    Converter,
    DeviceBundle,
    ExportSpec,
    Taps,
    TapSource,
    TargetOptions,
    keep_weights,
    option,
)
from bitedge.converters.registry import register
from bitedge.errors import BadInputError, ConfigError, MissingRuntimeError
from bitedge.parity.metrics import Runner
from bitedge.precisions import Precision

if TYPE_CHECKING:
    from torch import nn

PACKAGE = "model.mlpackage"
USAGE = "USAGE.md"
IMAGE_INPUT = "image"
TENSOR_INPUT = "pixel_values"
# The lowest deployment target whose ops each precision needs: ML programs (iOS15), constexpr int8
# weights (iOS16), quantize/dequantize of activations (iOS17).
MINIMUM_TARGET = {Precision.FP32: "iOS15", Precision.FP16: "iOS15", Precision.W8: "iOS16", Precision.INT8: "iOS17"}
WHY_MINIMUM = {
    Precision.FP32: "ML programs", Precision.FP16: "ML programs",
    Precision.W8: "int8 weight constants (constexpr ops)", Precision.INT8: "activation quantize/dequantize ops",
}  # fmt: skip


@dataclass(frozen=True)
class CoreMLOptions(TargetOptions):
    target: str | None = field(
        default=None,
        metadata=option(
            "minimum deployment target, e.g. iOS16, iOS17, macOS14 (default: the lowest each precision allows: "
            "iOS15 fp32/fp16, iOS16 w8, iOS17 int8)"
        ),
    )
    tensor_input: bool = field(
        default=False,
        metadata=option(
            "a multi-array input of normalized pixels instead of an image input", aliases=("--tensor-input",)
        ),
    )


def _options(spec: ExportSpec) -> CoreMLOptions:
    return spec.options if isinstance(spec.options, CoreMLOptions) else CoreMLOptions()


@register
class CoreMLConverter(Converter):
    name = "coreml"
    description = "an app-ready model.mlpackage (ML program), verified by bitedge's emulator of its program"
    precisions = (Precision.FP32, Precision.FP16, Precision.W8, Precision.INT8)
    extra = "coreml"
    modules = ("coremltools",)
    Options = CoreMLOptions

    def io_records(self, spec: ExportSpec, num_labels: int) -> tuple[InputRecord, OutputRecord]:
        batch = spec.batch or 1
        output = OutputRecord("classLabel_probs", [batch, num_labels],
                              kind="classifier: classLabel (string) and a probability per label")  # fmt: skip
        if _options(spec).tensor_input:
            tensor, _ = super().io_records(spec, num_labels)
            return replace(tensor, shape=[batch, 3, *spec.input_size]), output
        normalization = "stem" if spec.raw_pixel_input else "runtime"
        image = InputRecord(IMAGE_INPUT, [batch, 3, *spec.input_size], "image (8-bit RGB)",
                            layout="Core ML ImageType, RGB", raw_pixels=True, normalization=normalization)  # fmt: skip
        return image, output

    def validate(self, precision: Precision, spec: ExportSpec) -> None:
        deployment_target(_options(spec).target, precision)
        image_input = not (_options(spec).tensor_input or spec.raw_pixel_input)
        if precision == Precision.INT8 and image_input and per_channel_std(spec):
            raise ConfigError(
                "Core ML int8 with an image input needs one std for all channels (this model has per-channel "
                "std, which would change the stem's calibrated input range); use --raw-pixel-input or --tensor-input"
            )

    def convert(
        self,
        deploy: nn.Module,
        directory: Path,
        *,
        precision: Precision,
        spec: ExportSpec,
        release_weights: Callable[[], None] = keep_weights,
    ) -> ConvertedFiles:
        from bitedge.converters._coreml_build import build_package

        self.validate(precision, spec)  # the pipeline checked before any work; a direct caller may not have
        files, notes = build_package(
            deploy, directory, precision=precision, spec=spec, options=_options(spec), release_weights=release_weights
        )
        int8 = precision == Precision.INT8
        return ConvertedFiles(files, notes=notes, quantizer="bitedge" if int8 else None, simulated_reference=int8)

    def load_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        from bitedge.converters import _coreml_runner

        return _coreml_runner.EmulatedRunner(directory / PACKAGE, batch=manifest.input.batch or 1)

    def tap_runner(self, directory: Path, manifest: Manifest, *, source: TapSource, threads: int | None = None) -> Taps:
        from bitedge.converters._coreml_taps import coreml_taps

        return coreml_taps(directory / PACKAGE, batch=manifest.input.batch or 1)  # as load_runner runs it

    def device_bundle(self, directory: Path, manifest: Manifest) -> DeviceBundle:
        """run.py predicts with coremltools on macOS; Bench.swift times it on an iPhone, iPad or Mac. Both compare
        log-probabilities (the package's output is its softmax)."""
        from bitedge.converters._coreml_bench import SWIFT

        notes = ["Core ML: run.py needs macOS (coremltools predicts there only); on iOS use Bench.swift "
                 "(latency only), untested here: this machine has no Swift toolchain"]  # fmt: skip
        swift = {"Bench.swift": SWIFT} if manifest.input.name == IMAGE_INPUT else {}
        return DeviceBundle("coreml", PACKAGE, [PACKAGE], output=manifest.output.name, notes=notes,
                            outputs_are="log_probabilities", extra_files=swift)  # fmt: skip

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None, runs: str | None = None
    ) -> tuple[Runner, dict[str, Any]]:
        if platform.system() != "Darwin":
            raise MissingRuntimeError(
                "timing a Core ML artifact needs a Mac: MLModel.predict runs only on macOS (the emulator "
                "verifies numbers here but says nothing about device speed)"
            )
        from bitedge.converters import _coreml_runner

        runner = _coreml_runner.mlmodel_runner(directory, manifest, "ALL")
        return runner, {"runtime": "Core ML (MLModel.predict, all compute units)"}

    def informational_runners(self, directory: Path, manifest: Manifest) -> dict[str, Runner]:
        if platform.system() != "Darwin":
            return {}
        from bitedge.converters import _coreml_runner

        run = _coreml_runner.mlmodel_runner
        return {f"MLModel.predict ({units}, log-probabilities)": run(directory, manifest, units)
                for units in ("CPU_ONLY", "ALL")}  # fmt: skip


def deployment_target(name: str | None, precision: Precision) -> Any:
    """coremltools' target for ``name`` (default: the lowest ``precision`` allows); refuses too-old targets."""
    import coremltools as ct

    minimum = MINIMUM_TARGET[precision]
    chosen = name or minimum
    target = getattr(ct.target, chosen, None)
    if target is None:
        known = ", ".join(t.name for t in ct.target)
        raise BadInputError(f"unknown Core ML deployment target {chosen!r}; choose from {known} (or macOS12…)")
    if target.value < getattr(ct.target, minimum).value:
        raise BadInputError(
            f"Core ML {precision} needs {minimum} or later ({WHY_MINIMUM[precision]}), not {chosen}; "
            f"pass --coreml-target {minimum} (or later), or choose another precision"
        )
    return target


def per_channel_std(spec: ExportSpec) -> bool:
    processor = spec.processor
    if processor is None or not processor.do_normalize:
        return False
    return max(processor.image_std) - min(processor.image_std) > 1e-12
