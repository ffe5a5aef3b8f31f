"""What an artifact records about itself: the bitedge.json manifest and the metadata embedded in the file."""

from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from bitedge import __version__
from bitedge.converters.base import Converter, ExportSpec
from bitedge.errors import BadInputError
from bitedge.image_processor import BitImageProcessor
from bitedge.manifest import CalibrationRecord, Manifest, SourceRecord
from bitedge.modeling import BitPreTrainedModel
from bitedge.targets import Precision, Target


def source_record(model: BitPreTrainedModel, seed: int) -> SourceRecord:
    """Where the float reference came from; enough for ``bitedge verify`` to load it again."""
    if model.source is None:
        raise BadInputError(
            "the model has no recorded source; load it with bitedge.load_model so artifacts can cite it"
        )
    preset = model.source.format == "preset"
    return SourceRecord(model.source.path, model.source.format, model.source.sha256, seed if preset else None)


def build_manifest(
    model: BitPreTrainedModel,
    processor: BitImageProcessor,
    converter: Converter,
    *,
    target: Target,
    precision: Precision,
    spec: ExportSpec,
    files: list[str],
    seed: int,
    calibration: CalibrationRecord | None = None,
) -> Manifest:
    input_record, output_record = converter.io_records(spec, model.config.num_labels)
    return Manifest(
        target=target.value,
        precision=precision.value,
        files=files,
        input=input_record,
        output=output_record,
        source=source_record(model, seed),
        model_config=model.config.to_dict(),
        preprocessing=processor.to_dict(),
        labels=model.config.labels,
        tool_versions={
            "bitedge": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            **converter.tool_versions(),
        },
        calibration=calibration,
        conversion=conversion_record(spec, target),
    )


def conversion_record(spec: ExportSpec, target: Target) -> dict[str, Any]:
    """Every export option that changes the artifact (with the source and calibration: enough to rebuild it).

    Target-specific options are None for the other targets (other targets write GroupNorm their own way)."""
    return {
        "input_size": list(spec.input_size),
        "batch": spec.batch,
        "raw_pixel_input": spec.raw_pixel_input,
        "quantizer": spec.quantizer,
        "onnx_group_norm": spec.onnx_group_norm if target == Target.ONNX else None,
        "coreml_target": spec.coreml_target,
        "tensor_input": spec.tensor_input,
    }


def file_metadata(model: BitPreTrainedModel, processor: BitImageProcessor) -> dict[str, str]:
    """Key/value strings embedded in the runtime file itself (ONNX metadata_props, OpenVINO rt_info, ...)."""
    source = asdict(source_record(model, seed=0)) if model.source is not None else {}
    return {
        "bitedge.version": __version__,
        "bitedge.labels": json.dumps(model.config.labels),
        "bitedge.preprocessing": json.dumps(processor.to_dict()),
        "bitedge.source": json.dumps(source),
        "bitedge.python": sys.version.split()[0],
    }
