"""Lint an INT8 ONNX graph against its placement's rules (``calibration/placement.py``).

Every placement: zero points are constants of the right type, scales positive and finite, per-channel
weight scales on axis 0 (output channels) with zero points 0. ``SYMMETRIC_INT8`` is the rule set TensorRT's
explicit-quantization path enforces: activations int8 with zero point 0, and GroupNorm kept unquantized (its
input must not come straight from a DequantizeLinear). ``X86_UINT8``: uint8 activations with any zero point
or int8 ones with zero point 0 (signed inputs), and an int32 bias with zero point 0. Int8 weights keep within
the placement's ``weight_bits`` (+-63 for x86 without VNNI, where a wider weight saturates). Each violation is
one sentence naming the node; an empty list means the graph passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bitedge.calibration.placement import IntType, Placement

QDQ = ("QuantizeLinear", "DequantizeLinear")
# GroupNorm as the native op or as the InstanceNormalization chain (--onnx-group-norm)
NORMALIZATIONS = ("GroupNormalization", "InstanceNormalization")


def lint_int8(model: Any, placement: Placement) -> list[str]:
    from onnx import numpy_helper

    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    problems: list[str] = []
    for node in graph.node:
        if node.op_type in QDQ:
            problems += _check_qdq(node, constants, placement)
        elif node.op_type in NORMALIZATIONS and placement.conv_outputs is None:
            source = producers.get(node.input[0])
            while source is not None and source.op_type == "Reshape":  # the instance form's (N, G, -1) view
                source = producers.get(source.input[0])
            if source is not None and source.op_type == "DequantizeLinear":
                problems.append(f"{node.name}: {node.op_type} reads a dequantized tensor; keep GroupNorm in float")
        elif node.op_type in ("Conv", "Gemm"):
            weight = producers.get(node.input[1])
            if weight is not None and weight.op_type == "DequantizeLinear":
                axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
                scale = constants.get(weight.input[1])
                if scale is not None and scale.ndim == 1 and scale.size > 1 and axis != 0:
                    problems.append(f"{weight.name}: per-channel weight scales must be on axis 0, not {axis}")
    if not any(node.op_type in QDQ for node in graph.node):
        problems.append("the graph has no QuantizeLinear/DequantizeLinear: it is not an INT8 graph")
    return problems


def allowed_types(placement: Placement) -> set[np.dtype[Any]]:
    """Activation types a placement uses: int8 always (symmetric), uint8 where it places it."""
    used = {IntType.INT8, placement.nonnegative_inputs, placement.conv_outputs or IntType.INT8}
    return {np.dtype(t.value) for t in used}


def _check_qdq(node: Any, constants: dict[str, np.ndarray], placement: Placement) -> list[str]:
    if len(node.input) < 3 or node.input[2] not in constants:
        return [f"{node.name}: {node.op_type} without a constant zero point (runtimes need it explicit)"]
    zero, scale = constants[node.input[2]], constants.get(node.input[1])
    problems = []
    activation = node.input[0] not in constants  # a weight or bias DequantizeLinear reads a constant
    if not activation:
        allowed = {np.dtype(np.int8), np.dtype(np.int32)}
        if zero.dtype not in allowed or np.any(zero != 0):
            problems.append(f"{node.name}: weights and biases need int8/int32 zero points of 0, got {zero.dtype}")
        values, limit = constants[node.input[0]], placement.weight_max
        if values.dtype == np.int8 and values.size and int(np.abs(values.astype(np.int16)).max()) > limit:
            problems.append(f"{node.name}: int8 weights beyond +-{limit} ({placement.weight_bits}-bit weights in "
                            f"{placement.name})")  # fmt: skip
    elif zero.dtype not in allowed_types(placement):
        types = " or ".join(str(t) for t in allowed_types(placement))
        problems.append(f"{node.name}: zero point type {zero.dtype} is not {types} ({placement.name})")
    elif zero.dtype == np.dtype(np.int8) and np.any(zero != 0):
        problems.append(f"{node.name}: non-zero int8 zero point (int8 activations are symmetric)")
    if scale is None:
        problems.append(f"{node.name}: scale is not a constant")
    elif not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        problems.append(f"{node.name}: scales must be positive and finite")
    return problems
