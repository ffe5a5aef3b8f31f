"""bitedge: take a BiT (Big Transfer) classifier from its PyTorch checkpoint to edge runtimes, with proof.

The public API mirrors transformers' names::

    from bitedge import BitConfig, BitForImageClassification, BitImageProcessor, load_model

    model = load_model("path/to/google-bit-50")  # transformers dir | timm file | original .npz | preset
    pixel_values = BitImageProcessor.from_pretrained("path/to/google-bit-50")(images, return_tensors="pt")[
        "pixel_values"
    ]
    logits = model(pixel_values).logits  # (N, num_labels)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Names resolve on first use, so ``bitedge --help`` and ``import bitedge`` do not pay for importing torch.
_EXPORTS = {
    "BitBackbone": "bitedge.modeling",
    "BitConfig": "bitedge.config",
    "BitEdgeError": "bitedge.errors",
    "BitForImageClassification": "bitedge.modeling",
    "BitImageProcessor": "bitedge.image_processor",
    "BitModel": "bitedge.modeling",
    "BitPreTrainedModel": "bitedge.modeling",
    "CheckpointSource": "bitedge.checkpoints",
    "PRESETS": "bitedge.presets",
    "load_model": "bitedge.loading",
}

if TYPE_CHECKING:
    from bitedge.checkpoints import CheckpointSource
    from bitedge.config import BitConfig
    from bitedge.errors import BitEdgeError
    from bitedge.image_processor import BitImageProcessor
    from bitedge.loading import load_model
    from bitedge.modeling import BitBackbone, BitForImageClassification, BitModel, BitPreTrainedModel
    from bitedge.presets import PRESETS


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bitedge' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "BitBackbone",
    "BitConfig",
    "BitEdgeError",
    "BitForImageClassification",
    "BitImageProcessor",
    "BitModel",
    "BitPreTrainedModel",
    "CheckpointSource",
    "__version__",
    "load_model",
]
