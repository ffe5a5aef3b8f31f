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
(:mod:`bitedge.converters.coreml_emulator`), fp16 rounding as the program types it; the gated logits are the
values the program's softmax takes. On macOS, ``MLModel.predict`` is run as well (not gated).
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import shutil
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bitedge import __version__
from bitedge.calibration.simulate import explicit_qdq
from bitedge.converters.base import ConvertedFiles, Converter, ExportSpec, Runner, fixed_batch
from bitedge.converters.coreml_check import check_package
from bitedge.converters.coreml_emulator import Emulator
from bitedge.converters.coreml_package import MLPackage
from bitedge.converters.coreml_usage import usage_markdown
from bitedge.errors import ConfigError, MissingRuntimeError, UnknownTargetError
from bitedge.fold import DeployModel, scale_stem_input
from bitedge.manifest import InputRecord, Manifest, OutputRecord
from bitedge.targets import Precision, Target

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
# Ops of GroupNorm's statistics, computed in fp32 inside fp16 programs (plus the "+ eps" add that follows)
FP32_STATISTICS_OPS = frozenset({"reduce_mean", "sub", "square", "sqrt", "real_div"})


class Classifier(nn.Module):
    """The deploy graph followed by softmax: what the Core ML classifier output reports as probabilities."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network  # not "graph": a traced module's .graph is TorchScript's IR

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)


class CoreMLConverter(Converter):
    target = Target.COREML
    precisions = (Precision.FP32, Precision.FP16, Precision.W8, Precision.INT8)
    extra = "coreml"
    modules = ("coremltools",)

    def io_records(self, spec: ExportSpec, num_labels: int) -> tuple[InputRecord, OutputRecord]:
        batch = spec.batch or 1
        output = OutputRecord("classLabel_probs", [batch, num_labels],
                              kind="classifier: classLabel (string) and a probability per label")  # fmt: skip
        if spec.tensor_input:
            tensor, _ = super().io_records(spec, num_labels)
            return replace(tensor, shape=[batch, 3, *spec.input_size]), output
        normalization = "stem" if spec.raw_pixel_input else "runtime"
        image = InputRecord(IMAGE_INPUT, [batch, 3, *spec.input_size], "image (8-bit RGB)",
                            layout="Core ML ImageType, RGB", raw_pixels=True, normalization=normalization)  # fmt: skip
        return image, output

    def validate(self, precision: Precision, spec: ExportSpec) -> None:
        deployment_target(spec.coreml_target, precision)
        image_input = not (spec.tensor_input or spec.raw_pixel_input)
        if precision == Precision.INT8 and image_input and _per_channel_std(spec):
            raise ConfigError(
                "Core ML int8 with an image input needs one std for all channels (this model has per-channel "
                "std, which would change the stem's calibrated input range); use --raw-pixel-input or --tensor-input"
            )

    def convert(self, deploy: nn.Module, directory: Path, *, precision: Precision, spec: ExportSpec) -> ConvertedFiles:
        import coremltools as ct

        self.validate(precision, spec)  # the pipeline checked before any work; a direct caller may not have
        deployment = deployment_target(spec.coreml_target, precision)
        graph, scale, bias = self._graph_and_normalization(deploy, precision, spec)
        batch, (height, width) = spec.batch or 1, spec.input_size
        shape = (batch, 3, height, width)
        if spec.tensor_input:
            inputs: list[Any] = [ct.TensorType(name=TENSOR_INPUT, shape=shape)]
        else:
            inputs = [ct.ImageType(name=IMAGE_INPUT, shape=shape, scale=scale, bias=bias,
                                   color_layout=ct.colorlayout.RGB)]  # fmt: skip
        labels = list(spec.labels) or [str(i) for i in range(_num_outputs(graph, shape))]
        with _quiet():  # tracer warnings and coremltools' progress bars; the parity gate checks the result
            traced = torch.jit.trace(  # type: ignore[no-untyped-call]
                Classifier(graph).eval(), torch.zeros(shape), check_trace=False
            )
            mlmodel = ct.convert(
                traced, inputs=inputs, classifier_config=ct.ClassifierConfig(labels), convert_to="mlprogram",
                compute_precision=_compute_precision(precision), minimum_deployment_target=deployment,
            )  # fmt: skip
            del traced  # it shares the deploy graph's weights
            spec.source_released()  # coremltools holds the weights now
            try:
                if precision == Precision.W8:
                    unquantized, mlmodel = mlmodel, _quantize_weights(mlmodel)
                    _remove_temp_package(unquantized)
                _describe(mlmodel, spec, precision, labels)
                mlmodel.save(str(directory / PACKAGE))
            finally:
                _remove_temp_package(mlmodel)
        (directory / USAGE).write_text(usage_markdown(spec, precision, deployment.name))
        package = MLPackage(directory / PACKAGE)
        try:
            make_deterministic(package)
            check = check_package(package, labels=labels)
            files = [*package.files(), USAGE]
        finally:
            package.close()
        notes = [check.summary()]
        if precision in (Precision.FP16, Precision.W8):
            notes.append("fp16 program: GroupNorm statistics computed in fp32 (fp16 overflow safety)")
        return ConvertedFiles(
            files, notes=notes, quantizer="bitedge" if precision == Precision.INT8 else None,
            simulated_reference=precision == Precision.INT8,
        )  # fmt: skip

    def _graph_and_normalization(
        self, deploy: nn.Module, precision: Precision, spec: ExportSpec
    ) -> tuple[nn.Module, float, list[float]]:
        """The graph to trace and the image input's scale and per-channel bias."""
        graph = deploy
        if precision == Precision.INT8:
            if spec.simulated is None:
                raise ConfigError("Core ML int8 needs bitedge's calibration table (the simulated-quantized model)")
            graph = explicit_qdq(spec.simulated)
        if spec.tensor_input or spec.raw_pixel_input:
            return graph, 1.0, [0.0, 0.0, 0.0]
        if spec.processor is None:
            raise ConfigError("a Core ML image input needs the model's preprocessing")
        processor = spec.processor
        rescale = processor.rescale_factor if processor.do_rescale else 1.0
        mean = list(processor.image_mean) if processor.do_normalize else [0.0] * 3
        std = list(processor.image_std) if processor.do_normalize else [1.0] * 3
        if not _per_channel_std(spec):  # one scale for all channels: exact in the image type itself
            return graph, rescale / std[0], [-m / std[0] for m in mean]
        if not isinstance(graph, DeployModel):
            raise ConfigError("per-channel std folding needs bitedge's deploy graph")
        return scale_stem_input(graph, [1.0 / s for s in std]), rescale, [-m for m in mean]

    def load_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        return EmulatedRunner(directory / PACKAGE, batch=manifest.input.batch or 1)

    def bench_runner(
        self, directory: Path, manifest: Manifest, *, threads: int | None
    ) -> tuple[Runner, dict[str, Any]]:
        if platform.system() != "Darwin":
            raise MissingRuntimeError(
                "timing a Core ML artifact needs a Mac: MLModel.predict runs only on macOS (the emulator "
                "verifies numbers here but says nothing about device speed)"
            )
        runner = _mlmodel_runner(directory, manifest, "ALL")
        return runner, {"runtime": "Core ML (MLModel.predict, all compute units)"}

    def informational_runners(self, directory: Path, manifest: Manifest) -> dict[str, Runner]:
        if platform.system() != "Darwin":
            return {}
        return {f"MLModel.predict ({units}, log-probabilities)": _mlmodel_runner(directory, manifest, units)
                for units in ("CPU_ONLY", "ALL")}  # fmt: skip


class EmulatedRunner:
    """The saved package run by the emulator: ``(N, 3, H, W) -> logits (N, K)``, one program batch at a time.

    ``notes`` collects every op that overflowed fp16, for the parity report.
    """

    def __init__(self, path: Path, *, batch: int, fp16: bool = True) -> None:
        self.package = MLPackage(path)
        self.emulator = Emulator(self.package, fp16=fp16)
        (self.input_name,) = self.emulator.inputs
        self.logits_name = logits_variable(self.package)
        self.batch = batch
        self.notes: list[str] = []

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return fixed_batch(self._run, self.batch)(pixels)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        execution = self.emulator.run({self.input_name: pixels}, keep={self.logits_name})
        for overflow in execution.overflows:
            note = f"fp16 overflow (inf/NaN from finite inputs) in {overflow}"
            if note not in self.notes:
                self.notes.append(note)
        logits: np.ndarray = execution.values[self.logits_name]
        return logits.reshape(len(pixels), -1).astype(np.float32)


def make_deterministic(package: MLPackage) -> None:
    """Rewrite what keeps two saves of the same model from being byte-identical; the content is unchanged.

    coremltools draws a fresh UUID per item of Manifest.json on every save (opaque keys: Core ML only needs
    them unique; here they derive from the item paths), and serializes protobuf maps (op inputs and
    attributes) in an order that varies between processes (re-serialized here in protobuf's deterministic
    order). The conversion date in the model's metadata remains: byte-identical on the same day.
    """
    package.model_path.write_bytes(package.spec.SerializeToString(deterministic=True))
    path = package.root / "Manifest.json"
    manifest = json.loads(path.read_text())
    renamed = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"bitedge:{item['path']}"))
               for old, item in manifest["itemInfoEntries"].items()}  # fmt: skip
    manifest["itemInfoEntries"] = {renamed[old]: item for old, item in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


def logits_variable(package: MLPackage) -> str:
    """The variable the classifier's softmax reads: the program's logits."""
    producers = {out.name: op for op in package.block.operations for out in op.outputs}
    for op in package.block.operations:
        if op.type == "classify":
            name = op.inputs["probabilities"].arguments[0].name
            while producers[name].type == "cast":  # fp16 programs cast back to fp32 before classify
                name = producers[name].inputs["x"].arguments[0].name
            if producers[name].type == "softmax":
                return str(producers[name].inputs["x"].arguments[0].name)
            return str(name)
    return str(package.block.outputs[0])


def deployment_target(name: str | None, precision: Precision) -> Any:
    """coremltools' target for ``name`` (default: the lowest ``precision`` allows); refuses too-old targets."""
    import coremltools as ct

    minimum = MINIMUM_TARGET[precision]
    chosen = name or minimum
    target = getattr(ct.target, chosen, None)
    if target is None:
        known = ", ".join(t.name for t in ct.target)
        raise UnknownTargetError(f"unknown Core ML deployment target {chosen!r}; choose from {known} (or macOS12…)")
    if target.value < getattr(ct.target, minimum).value:
        raise UnknownTargetError(
            f"Core ML {precision} needs {minimum} or later ({WHY_MINIMUM[precision]}), not {chosen}; "
            f"pass --coreml-target {minimum} (or later), or choose another precision"
        )
    return target


def _compute_precision(precision: Precision) -> Any:
    import coremltools as ct

    if precision in (Precision.FP32, Precision.INT8):
        return ct.precision.FLOAT32
    return ct.transform.FP16ComputePrecision(op_selector=_runs_in_fp16)


def _runs_in_fp16(op: Any) -> bool:
    """coremltools' op selector: False keeps an op in fp32 (GroupNorm statistics and their "+ eps")."""
    if op.op_type in FP32_STATISTICS_OPS:
        return False
    producers = [getattr(getattr(var, "op", None), "op_type", None) for var in op.inputs.values()]
    return not (op.op_type == "add" and "reduce_mean" in producers)


def _remove_temp_package(mlmodel: Any) -> None:
    """Delete the copy coremltools keeps in the temp directory. It would only go at interpreter exit, which
    the ``bitedge`` command skips (see ``cli.run``), and a long-lived process would pile them up."""
    if getattr(mlmodel, "is_temp_package", False):
        shutil.rmtree(mlmodel.package_path, ignore_errors=True)


def _quantize_weights(mlmodel: Any) -> Any:
    """int8 per-output-channel symmetric weights on every convolution and the head (``linear``)."""
    import coremltools.optimize.coreml as cto

    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=0)  # fmt: skip
    return cto.linear_quantize_weights(
        mlmodel, cto.OptimizationConfig(op_type_configs={"conv": config, "linear": config})
    )


def _describe(mlmodel: Any, spec: ExportSpec, precision: Precision, labels: list[str]) -> None:
    """Xcode-visible metadata and bitedge's provenance (user-defined metadata)."""
    mlmodel.short_description = (
        f"BiT (Big Transfer) image classifier, {len(labels)} classes, {precision}; converted by bitedge {__version__}"
    )
    mlmodel.author = f"bitedge {__version__} (conversion); see the source checkpoint for the model's authors"
    mlmodel.license = "as the source checkpoint's license (recorded in bitedge.source)"
    mlmodel.version = __version__
    height, width = spec.input_size
    name = TENSOR_INPUT if spec.tensor_input else IMAGE_INPUT
    mlmodel.input_description[name] = (
        f"normalized RGB pixels (1, 3, {height}, {width})" if spec.tensor_input
        else f"RGB image, {width}x{height}: resize the shortest edge, then center-crop (see USAGE.md)"
    )  # fmt: skip
    mlmodel.output_description["classLabel"] = "most likely label"
    mlmodel.output_description["classLabel_probs"] = "probability of every label (softmax of the logits)"
    mlmodel.user_defined_metadata.update({**spec.metadata, "bitedge.precision": str(precision)})


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _per_channel_std(spec: ExportSpec) -> bool:
    processor = spec.processor
    if processor is None or not processor.do_normalize:
        return False
    return max(processor.image_std) - min(processor.image_std) > 1e-12


def _num_outputs(graph: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(graph(torch.zeros(shape)).shape[1])


def _mlmodel_runner(directory: Path, manifest: Manifest, units: str) -> Runner:
    """macOS only: the package run by Core ML itself; returns log-probabilities (the program's output)."""
    try:
        import coremltools as ct
        from PIL import Image
    except ImportError as exc:
        raise MissingRuntimeError(f"Core ML prediction needs coremltools ({exc})") from None
    model = ct.models.MLModel(str(directory / PACKAGE), compute_units=getattr(ct.ComputeUnit, units))
    name, labels = manifest.input.name, manifest.labels
    image = manifest.input.normalization != "caller"

    def run(pixels: np.ndarray) -> np.ndarray:
        rows = []
        for sample in pixels:
            value: Any = sample[None]
            if image:
                value = Image.fromarray(sample.transpose(1, 2, 0).round().clip(0, 255).astype(np.uint8))
            probs = model.predict({name: value})["classLabel_probs"]
            rows.append(np.log(np.maximum([probs[label] for label in labels], 1e-30)))
        return np.asarray(rows, dtype=np.float32)

    return run
