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
from bitedge.artifacts.manifest import CalibrationRecord, Manifest, SourceRecord
from bitedge.converters.base import Converter, ExportSpec
from bitedge.errors import BadInputError
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.modeling import BitPreTrainedModel
from bitedge.precisions import Precision


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
    precision: Precision,
    spec: ExportSpec,
    files: list[str],
    seed: int,
    calibration: CalibrationRecord | None = None,
) -> Manifest:
    input_record, output_record = converter.io_records(spec, model.config.num_labels)
    return Manifest(
        target=converter.name,
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
        conversion=conversion_record(spec),
    )


def conversion_record(spec: ExportSpec) -> dict[str, Any]:
    """Every export option that changes the artifact (with the source and calibration: enough to rebuild it),
    the target's own options included."""
    return {
        "input_size": list(spec.input_size),
        "batch": spec.batch,
        "raw_pixel_input": spec.raw_pixel_input,
        "quantizer": spec.quantizer,
        "target_options": asdict(spec.options),
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
