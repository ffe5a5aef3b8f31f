"""Precisions: strings from the command line and the library API are parsed once, here, into an enum.

(Targets are not an enum: each is a name a converter module registers, see ``bitedge.converters.registry``.)
"""

from __future__ import annotations

from enum import StrEnum

from bitedge.errors import BadInputError


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # int8 weights and activations (W8A8)
    W8 = "w8"  # int8 weights, float activations (Core ML weight compression)


def parse_precision(text: str) -> Precision:
    try:
        return Precision(text.lower())
    except ValueError:
        choices = ", ".join(p.value for p in Precision)
        raise BadInputError(f"unknown precision {text!r}; choose from {choices}") from None
