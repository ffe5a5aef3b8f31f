"""Lint an INT8 ONNX graph against the rules TensorRT's explicit-quantization path enforces.

TensorRT (10 and 11, strongly typed) accepts only symmetric int8 Q/DQ: zero points present, int8 and 0;
positive finite scales; per-channel weight scales on axis 0 (output channels). bitedge also keeps
GroupNorm unquantized (its input must not come straight from a DequantizeLinear). Each violation
is one sentence naming the node; an empty list means the graph passes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

QDQ = ("QuantizeLinear", "DequantizeLinear")
# GroupNorm as the native op or as the InstanceNormalization chain (--onnx-group-norm)
NORMALIZATIONS = ("GroupNormalization", "InstanceNormalization")


def lint_int8(model: Any) -> list[str]:
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    problems: list[str] = []
    for node in graph.node:
        if node.op_type in QDQ:
            problems += _check_qdq(node, constants, numpy_helper, TensorProto.INT8)
        elif node.op_type in NORMALIZATIONS:
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
                if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1 and axis != 0:
                    problems.append(f"{weight.name}: per-channel weight scales must be on axis 0, not {axis}")
    if not any(node.op_type in QDQ for node in graph.node):
        problems.append("the graph has no QuantizeLinear/DequantizeLinear: it is not an INT8 graph")
    return problems


def _check_qdq(node: Any, constants: dict[str, Any], numpy_helper: Any, int8: int) -> list[str]:
    if len(node.input) < 3 or node.input[2] not in constants:
        return [f"{node.name}: {node.op_type} without a constant zero point (TensorRT needs an explicit 0)"]
    zero, scale = constants[node.input[2]], constants.get(node.input[1])
    problems = []
    if zero.data_type != int8:
        problems.append(f"{node.name}: zero point type {zero.data_type} is not int8 (symmetric int8 only)")
    if np.any(numpy_helper.to_array(zero) != 0):
        problems.append(f"{node.name}: non-zero zero point (asymmetric quantization is not accepted)")
    if scale is None:
        problems.append(f"{node.name}: scale is not a constant")
    else:
        values = numpy_helper.to_array(scale)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            problems.append(f"{node.name}: scales must be positive and finite")
    return problems
