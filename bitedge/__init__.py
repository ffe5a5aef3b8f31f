"""bitedge: take a BiT (Big Transfer) classifier from its PyTorch checkpoint to edge runtimes, with proof.

Convert and verify (the library API behind the ``bitedge`` command)::

    import bitedge

    results = bitedge.convert("path/to/google-bit-50", "artifacts", targets=["onnx"], precisions=["int8"],
                              eval_images="val/", calibration="calib/")
    for result in results:
        print(result.directory, result.passed, result.report.comparisons[0].metrics.top1_agreement)
    bitedge.verify("artifacts/onnx-int8").passed

The float reference, with transformers' names::

    model = bitedge.load_model("path/to/google-bit-50")  # transformers dir | timm file | original .npz | preset
    pixel_values = bitedge.BitImageProcessor.from_pretrained("path/to/google-bit-50")(images, return_tensors="pt")[
        "pixel_values"
    ]
    logits = model(pixel_values).logits  # (N, num_labels)

Errors are exceptions of the ``BitEdgeError`` family (``BadInputError`` for bad input), never ``SystemExit``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names resolve on first use, so ``bitedge --help`` and ``import bitedge`` do not pay for importing torch.
_EXPORTS = {
    "convert": "bitedge.api",
    "verify": "bitedge.api",
    "merge": "bitedge.api",
    "calibrate": "bitedge.api",
    "build_on_device": "bitedge.api",
    "sensitivity": "bitedge.api",
    "diagnose": "bitedge.api",
    "Conversion": "bitedge.api",
    "Result": "bitedge.pipeline.result",
    "BitEdgeError": "bitedge.errors",
    "BadInputError": "bitedge.errors",
    "MissingRuntimeError": "bitedge.errors",
    "ArtifactRefusedError": "bitedge.errors",
    "Manifest": "bitedge.artifacts.manifest",
    "Precision": "bitedge.precisions",
    "BitBackbone": "bitedge.model.modeling",
    "BitConfig": "bitedge.model.config",
    "BitForImageClassification": "bitedge.model.modeling",
    "BitImageProcessor": "bitedge.model.image_processor",
    "BitModel": "bitedge.model.modeling",
    "BitPreTrainedModel": "bitedge.model.modeling",
    "CheckpointSource": "bitedge.model.checkpoints",
    "PRESETS": "bitedge.model.presets",
    "load_model": "bitedge.model.loading",
}

if TYPE_CHECKING:
    from bitedge.api import Conversion, build_on_device, calibrate, convert, diagnose, merge, sensitivity, verify
    from bitedge.artifacts.manifest import Manifest
    from bitedge.errors import ArtifactRefusedError, BadInputError, BitEdgeError, MissingRuntimeError
    from bitedge.model.checkpoints import CheckpointSource
    from bitedge.model.config import BitConfig
    from bitedge.model.image_processor import BitImageProcessor
    from bitedge.model.loading import load_model
    from bitedge.model.modeling import BitBackbone, BitForImageClassification, BitModel, BitPreTrainedModel
    from bitedge.model.presets import PRESETS
    from bitedge.pipeline.result import Result
    from bitedge.precisions import Precision


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bitedge' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "ArtifactRefusedError",
    "BadInputError",
    "BitBackbone",
    "BitConfig",
    "BitEdgeError",
    "BitForImageClassification",
    "BitImageProcessor",
    "BitModel",
    "BitPreTrainedModel",
    "CheckpointSource",
    "Conversion",
    "Manifest",
    "MissingRuntimeError",
    "Precision",
    "Result",
    "__version__",
    "build_on_device",
    "calibrate",
    "convert",
    "diagnose",
    "load_model",
    "merge",
    "sensitivity",
    "verify",
]
