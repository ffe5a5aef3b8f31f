"""Targets and precisions: strings from the command line are parsed once, here, into enums."""

from __future__ import annotations

from enum import StrEnum

from bitedge.errors import UnknownTargetError

# GroupNorm forms of the onnx target, the default first: an InstanceNormalization chain (opset 6, which
# onnxruntime's CPU provider has a kernel for) or the native GroupNormalization-21, which it expands.
ONNX_GROUP_NORMS = ("instance", "native")


class Target(StrEnum):
    ONNX = "onnx"
    TENSORRT = "tensorrt"
    OPENVINO = "openvino"
    COREML = "coreml"


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # int8 weights and activations (W8A8)
    W8 = "w8"  # int8 weights, float activations (Core ML weight compression)


def parse_target(text: str) -> Target:
    try:
        return Target(text.lower())
    except ValueError:
        raise UnknownTargetError(f"unknown target {text!r}; choose from {', '.join(t.value for t in Target)}") from None


def parse_precision(text: str) -> Precision:
    try:
        return Precision(text.lower())
    except ValueError:
        choices = ", ".join(p.value for p in Precision)
        raise UnknownTargetError(f"unknown precision {text!r}; choose from {choices}") from None
