"""Converters, one module per target, installed as ``bitedge.converters``.

Each target implements :class:`bitedge.converters.base.Converter` and registers in ``CONVERTERS``. Heavy
runtime imports happen inside methods, so importing this package stays cheap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bitedge.errors import UnknownTargetError
from bitedge.targets import Target

# coremltools logs at import that its macOS-only runtime did not load: expected off macOS, and noise to users
logging.getLogger("coremltools").setLevel(logging.ERROR)

if TYPE_CHECKING:
    from bitedge.converters.base import Converter


def get_converter(target: Target) -> Converter:
    """The converter registered for ``target``; an UnknownTargetError names the ones that exist."""
    from bitedge.converters.coreml import CoreMLConverter
    from bitedge.converters.onnx import OnnxConverter
    from bitedge.converters.openvino import OpenVinoConverter
    from bitedge.converters.tensorrt import TensorRTConverter

    converters: dict[Target, Converter] = {
        Target.ONNX: OnnxConverter(),
        Target.OPENVINO: OpenVinoConverter(),
        Target.TENSORRT: TensorRTConverter(),
        Target.COREML: CoreMLConverter(),
    }
    if target not in converters:
        available = ", ".join(t.value for t in converters)
        raise UnknownTargetError(f"target {target} is not implemented yet; available: {available}")
    return converters[target]
