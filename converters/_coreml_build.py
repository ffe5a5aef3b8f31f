"""Building the Core ML package (helpers of ``coreml.py``): the traced classifier, coremltools' conversion
with GroupNorm statistics kept in fp32 in fp16 programs, int8 weights, Xcode metadata, a byte-reproducible
package, and its structural check.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bitedge import __version__
from bitedge.calibration.simulate import explicit_qdq
from bitedge.converters._coreml_check import check_package
from bitedge.converters._coreml_package import MLPackage
from bitedge.converters._coreml_taps import TAPS_KEY, record_taps, tap_metadata
from bitedge.converters._coreml_usage import usage_markdown
from bitedge.converters.base import ExportSpec
from bitedge.converters.coreml import (
    IMAGE_INPUT,
    PACKAGE,
    TENSOR_INPUT,
    USAGE,
    CoreMLOptions,
    deployment_target,
    per_channel_std,
)
from bitedge.errors import ConfigError
from bitedge.fold import DeployModel, scale_stem_input
from bitedge.precisions import Precision

# Ops of GroupNorm's statistics, computed in fp32 inside fp16 programs (plus the "+ eps" add that follows)
FP32_STATISTICS_OPS = frozenset({"reduce_mean", "sub", "square", "sqrt", "real_div"})
NETWORK = "network"  # the deploy graph's attribute in the traced Classifier: the prefix of its module paths


class Classifier(nn.Module):
    """The deploy graph followed by softmax: what the Core ML classifier output reports as probabilities."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network  # not "graph": a traced module's .graph is TorchScript's IR (name: NETWORK)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(x), dim=1)


def build_package(
    deploy: nn.Module,
    directory: Path,
    *,
    precision: Precision,
    spec: ExportSpec,
    options: CoreMLOptions,
    release_weights: Any,
) -> tuple[list[str], list[str]]:
    """Write ``model.mlpackage`` and ``USAGE.md`` into ``directory``; returns (files, notes)."""
    import coremltools as ct

    deployment = deployment_target(options.target, precision)
    graph, scale, bias = graph_and_normalization(deploy, precision, spec, options)
    batch, (height, width) = spec.batch or 1, spec.input_size
    shape = (batch, 3, height, width)
    if options.tensor_input:
        inputs: list[Any] = [ct.TensorType(name=TENSOR_INPUT, shape=shape)]
    else:
        inputs = [ct.ImageType(name=IMAGE_INPUT, shape=shape, scale=scale, bias=bias,
                               color_layout=ct.colorlayout.RGB)]  # fmt: skip
    labels = list(spec.labels) or [str(i) for i in range(_num_outputs(graph, shape))]
    classifier = Classifier(graph).eval()
    with _quiet():  # tracer warnings and coremltools' progress bars; the parity gate checks the result
        traced = torch.jit.trace(classifier, torch.zeros(shape), check_trace=False)  # type: ignore[no-untyped-call]
        mlmodel = ct.convert(
            traced, inputs=inputs, classifier_config=ct.ClassifierConfig(labels), convert_to="mlprogram",
            compute_precision=_compute_precision(precision), minimum_deployment_target=deployment,
        )  # fmt: skip
        del traced  # it shares the deploy graph's weights
        release_weights()  # coremltools holds the weights now
        try:
            # each layer's output variable, for diagnose; from this program: weight compression reloads it from
            # its protobuf, which drops the torch scopes the map is made from (the variables keep their names)
            taps = record_taps(mlmodel._mil_program, classifier, NETWORK)
            if precision == Precision.W8:
                unquantized, mlmodel = mlmodel, _quantize_weights(mlmodel)
                _remove_temp_package(unquantized)
            _describe(mlmodel, spec, precision, labels, options)
            mlmodel.user_defined_metadata[TAPS_KEY] = tap_metadata(taps, mlmodel._mil_program)
            mlmodel.save(str(directory / PACKAGE))
        finally:
            _remove_temp_package(mlmodel)
    (directory / USAGE).write_text(usage_markdown(spec, precision, deployment.name, tensor_input=options.tensor_input))
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
    return files, notes


def graph_and_normalization(
    deploy: nn.Module, precision: Precision, spec: ExportSpec, options: CoreMLOptions
) -> tuple[nn.Module, float, list[float]]:
    """The graph to trace and the image input's scale and per-channel bias."""
    graph = deploy
    if precision == Precision.INT8:
        if spec.simulated is None:
            raise ConfigError("Core ML int8 needs bitedge's calibration table (the simulated-quantized model)")
        graph = explicit_qdq(spec.simulated)
    if options.tensor_input or spec.raw_pixel_input:
        return graph, 1.0, [0.0, 0.0, 0.0]
    if spec.processor is None:
        raise ConfigError("a Core ML image input needs the model's preprocessing")
    processor = spec.processor
    rescale = processor.rescale_factor if processor.do_rescale else 1.0
    mean = list(processor.image_mean) if processor.do_normalize else [0.0] * 3
    std = list(processor.image_std) if processor.do_normalize else [1.0] * 3
    if not per_channel_std(spec):  # one scale for all channels: exact in the image type itself
        return graph, rescale / std[0], [-m / std[0] for m in mean]
    if not isinstance(graph, DeployModel):
        raise ConfigError("per-channel std folding needs bitedge's deploy graph")
    return scale_stem_input(graph, [1.0 / s for s in std]), rescale, [-m for m in mean]


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


def _describe(mlmodel: Any, spec: ExportSpec, precision: Precision, labels: list[str], options: CoreMLOptions) -> None:
    """Xcode-visible metadata and bitedge's provenance (user-defined metadata)."""
    mlmodel.short_description = (
        f"BiT (Big Transfer) image classifier, {len(labels)} classes, {precision}; converted by bitedge {__version__}"
    )
    mlmodel.author = f"bitedge {__version__} (conversion); see the source checkpoint for the model's authors"
    mlmodel.license = "as the source checkpoint's license (recorded in bitedge.source)"
    mlmodel.version = __version__
    height, width = spec.input_size
    name = TENSOR_INPUT if options.tensor_input else IMAGE_INPUT
    mlmodel.input_description[name] = (
        f"normalized RGB pixels (1, 3, {height}, {width})" if options.tensor_input
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


def _num_outputs(graph: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(graph(torch.zeros(shape)).shape[1])
