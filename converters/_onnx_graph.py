"""Emit an ONNX graph (opset 21) from a folded BiT deploy graph.

The deploy model is traced with ``torch.fx`` and each node becomes the ONNX op a runtime fuses best: Conv,
GroupNorm in the form the target's runtime runs fastest (``group_norm``: the native ``GroupNormalization``
for TensorRT, an InstanceNormalization chain for onnxruntime, per-channel statistics for OpenVINO), Pad,
MaxPool, Add, GlobalAveragePool, Gemm. Shapes come from one shape-propagation pass at the artifact's input
size, which also fixes TF "SAME" pads (they depend on the image size, not the batch). Everything the graph
computes is in this one table of node handlers, so what TensorRT and OpenVINO receive is known exactly.

fp16: weights and activations are float16 while inputs and outputs stay float32 (Casts at both ends), and
every GroupNorm runs in float32 (Casts around it): its variance overflows fp16 beyond ~256.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F

from bitedge.calibration.placement import QParams
from bitedge.calibration.simulate import QuantizedConv2d, QuantizedLinear
from bitedge.converters._onnx_group_norm import as_instance_norm, from_channel_stats
from bitedge.errors import ExportError
from bitedge.model.blocks import check_pixel_values
from bitedge.model.layers import DynamicPad2d

OPSET = 21
EXTERNAL_DATA_BYTES = 1_800_000_000  # weights past this go to external data: protobuf's hard limit is 2 GiB
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay in the graph even then
EXTERNAL_ALIGNMENT = 4096
INPUT_NAME, OUTPUT_NAME = "pixel_values", "logits"
TAPS_KEY = "bitedge.taps"  # metadata: JSON {layer path: the ONNX value holding its output} (bitedge diagnose)
RELU_SUFFIX = "|relu"  # a tap "<path>|relu": the value a module's final ReLU reads
# GroupNorm forms, see _group_norm: an InstanceNormalization chain (onnxruntime's CPU provider has a kernel
# for it), the native GroupNormalization-21 (TensorRT's; onnxruntime expands it), per-channel statistics
# averaged per group (OpenVINO's CPU plugin runs it in its blocked layout)
GROUP_NORM_FORMS = ("instance", "native", "channel-stats")


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, DynamicPad2d | QuantizedConv2d | QuantizedLinear) or super().is_leaf_module(m, qualname)


@dataclass
class _Emitter:
    """Accumulates ONNX nodes and initializers while walking the fx graph."""

    root: nn.Module
    fp16: bool
    # "native" GroupNormalization-21; "instance": InstanceNormalization chain (faster in onnxruntime's CPU
    # provider); "channel-stats": per-channel statistics averaged per group (faster in OpenVINO's CPU plugin)
    group_norm: str = "native"
    nodes: list[Any] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # fx node name -> ONNX value name
    quantized: dict[tuple[str, QParams], str] = field(default_factory=dict)  # (value, its Q/DQ) -> the DQ output

    @property
    def act_type(self) -> Any:
        return np.float16 if self.fp16 else np.float32

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def const(self, name: str, value: np.ndarray | torch.Tensor, *, keep_fp32: bool = False) -> str:
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(np.float32 if keep_fp32 else self.act_type, copy=False)  # fp32: a view, no copy
        self.initializers[name] = array
        return name

    def cast(self, value: str, to_fp16: bool) -> str:
        from onnx import TensorProto

        target = TensorProto.FLOAT16 if to_fp16 else TensorProto.FLOAT
        return self.node("Cast", [value], f"{value}/cast_{'fp16' if to_fp16 else 'fp32'}", to=target)

    def value(self, arg: Any) -> str:
        return self.names[arg.name]


def _conv(e: _Emitter, n: torch.fx.Node, m: nn.Conv2d) -> str:
    if isinstance(m.padding, str):
        raise ExportError(f"{n.target}: string padding {m.padding!r} is not supported")
    inputs = [e.value(n.args[0]), e.const(f"{n.target}.weight", m.weight)]
    if m.bias is not None:
        inputs.append(e.const(f"{n.target}.bias", m.bias))
    pad_h, pad_w = m.padding
    return e.node(
        "Conv", inputs, n.name, kernel_shape=list(m.kernel_size), strides=list(m.stride),
        pads=[pad_h, pad_w, pad_h, pad_w], dilations=list(m.dilation), group=m.groups,
    )  # fmt: skip


def _pad(e: _Emitter, n: torch.fx.Node, left: int, right: int, top: int, bottom: int, value: float) -> str:
    if (left, right, top, bottom) == (0, 0, 0, 0):
        return e.value(n.args[0])
    pads = e.const(f"{n.name}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64))
    fill = e.const(f"{n.name}.value", np.array(value, dtype=np.float32))
    return e.node("Pad", [e.value(n.args[0]), pads, fill], n.name, mode="constant")


def _qdq(e: _Emitter, value: str, name: str, q: QParams) -> str:
    """QuantizeLinear -> DequantizeLinear of an activation, per tensor, with the placement's type and zero point.

    Layers that read the same tensor with the same quantization share one pair (a stage's first block: its
    first convolution and its projection shortcut). One pair is exactly what two equal ones compute, and
    onnxruntime drops a ReLU before QuantizeLinear only when the Q is its single consumer: with two, it kept
    the ReLU, a second Q and a second transpose into its NHWC convolution (1.3-2.8% of BiT-R50x1's int8 latency,
    docs/int8.md).
    """
    key = (value, q)
    if key not in e.quantized:
        s = e.const(f"{name}_scale", np.array(q.scale, np.float32), keep_fp32=True)
        z = e.const(f"{name}_zero_point", np.array(q.zero_point, np.dtype(q.dtype.value)))
        quantized = e.node("QuantizeLinear", [value, s, z], f"{name}/q")
        e.quantized[key] = e.node("DequantizeLinear", [quantized, s, z], f"{name}/dq")
    return e.quantized[key]


def _dq_weight(e: _Emitter, n: torch.fx.Node, m: QuantizedConv2d | QuantizedLinear) -> str:
    """An int8 weight initializer behind a per-output-channel (axis 0) DequantizeLinear."""
    w = e.const(f"{n.target}.weight_int8", m.weight_int8)
    s = e.const(f"{n.target}.weight_scale", m.weight_scale, keep_fp32=True)
    z = e.const(f"{n.target}.weight_zero_point", np.zeros(len(m.weight_scale), np.int8))
    return e.node("DequantizeLinear", [w, s, z], f"{n.name}/weight", axis=0)


def _bias(e: _Emitter, n: torch.fx.Node, m: QuantizedConv2d | QuantizedLinear) -> list[str]:
    """The float bias, or (integer-bias placements) an int32 bias behind DequantizeLinear, as QLinearConv has."""
    bias = m.layer.bias
    if bias is None:
        return []
    if not m.integer_bias:
        return [e.const(f"{n.target}.bias", bias, keep_fp32=True)]
    scale = m.bias_scale()
    values = torch.round(bias.detach() / scale).to(torch.int32)
    b = e.const(f"{n.target}.bias_int32", values)
    s = e.const(f"{n.target}.bias_scale", scale, keep_fp32=True)
    z = e.const(f"{n.target}.bias_zero_point", np.zeros(len(scale), np.int32))
    return [e.node("DequantizeLinear", [b, s, z], f"{n.name}/bias", axis=0)]


def _quantized(e: _Emitter, n: torch.fx.Node, m: QuantizedConv2d | QuantizedLinear) -> str:
    """Q/DQ on the input (one pair for the layers that quantize it alike), DQ on the weight (and bias), Q/DQ on
    the output if placed."""
    x, w = _qdq(e, e.value(n.args[0]), f"{n.target}.input", m.input_q), _dq_weight(e, n, m)
    layer = m.layer
    if isinstance(layer, nn.Linear):
        return e.node("Gemm", [x, w, *_bias(e, n, m)], n.name, transB=1)
    pad_h, pad_w = cast(tuple[int, int], layer.padding)
    name = f"{n.name}/conv" if m.output_q is not None else n.name
    y = e.node(
        "Conv", [x, w, *_bias(e, n, m)], name, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
        pads=[pad_h, pad_w, pad_h, pad_w], dilations=list(layer.dilation), group=layer.groups,
    )  # fmt: skip
    return y if m.output_q is None else _qdq(e, y, f"{n.target}.output", m.output_q)


def _module(e: _Emitter, n: torch.fx.Node) -> str:
    m = e.root.get_submodule(str(n.target))
    x = e.value(n.args[0])
    if isinstance(m, QuantizedConv2d | QuantizedLinear):
        return _quantized(e, n, m)
    if isinstance(m, nn.Conv2d):
        return _conv(e, n, m)
    if isinstance(m, nn.Linear):
        weight, bias = e.const(f"{n.target}.weight", m.weight), e.const(f"{n.target}.bias", m.bias)
        return e.node("Gemm", [x, weight, bias], n.name, transB=1)
    if isinstance(m, nn.ReLU):
        return e.node("Relu", [x], n.name)
    if isinstance(m, nn.GELU):
        return e.node("Gelu", [x], n.name, approximate=m.approximate)
    if isinstance(m, nn.SiLU):
        return e.node("Mul", [x, e.node("Sigmoid", [x], f"{n.name}/sigmoid")], n.name)
    if isinstance(m, nn.ConstantPad2d):
        left, right, top, bottom = m.padding
        return _pad(e, n, left, right, top, bottom, m.value)
    if isinstance(m, DynamicPad2d):
        height, width = n.args[0].meta["tensor_meta"].shape[-2:]  # type: ignore[union-attr]
        ph, pw = m._amount(height), m._amount(width)
        return _pad(e, n, pw // 2, pw - pw // 2, ph // 2, ph - ph // 2, m.value)
    if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
        return e.node("GlobalAveragePool", [x], n.name)
    if isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
        return e.node("Flatten", [x], n.name, axis=1)
    if isinstance(m, nn.Identity):
        return x
    raise ExportError(f"no ONNX mapping for module {n.target} ({type(m).__name__})")


def _group_norm(e: _Emitter, n: torch.fx.Node) -> str:
    x, groups, weight, bias, eps = _bind(n, ("input", "num_groups", "weight", "bias", "eps"), {"eps": 1e-5})
    if weight is None or bias is None:
        raise ExportError(f"{n.name}: GroupNorm without affine parameters is not BiT")
    gamma, beta = _attr(e.root, weight), _attr(e.root, bias)
    value = e.cast(e.value(x), to_fp16=False) if e.fp16 else e.value(x)
    if e.group_norm == "instance":
        out = as_instance_norm(e, n, value, int(groups), float(eps), gamma, beta)
    elif e.group_norm == "channel-stats":
        out = from_channel_stats(e, n, value, int(groups), float(eps), gamma, beta)
    else:
        scale = e.const(f"{n.name}.scale", gamma, keep_fp32=True)
        shift = e.const(f"{n.name}.bias", beta, keep_fp32=True)
        out = e.node("GroupNormalization", [value, scale, shift], n.name, num_groups=int(groups), epsilon=float(eps))
    return e.cast(out, to_fp16=True) if e.fp16 else out


def _function(e: _Emitter, n: torch.fx.Node) -> str:
    target = n.target
    if target is check_pixel_values:
        return e.value(n.args[0])
    if target is F.group_norm:
        return _group_norm(e, n)
    if target is F.max_pool2d:
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
        x, kernel, stride, padding, dilation, ceil = _bind(
            n, names, {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
        )
        if padding not in (0, (0, 0)) or dilation not in (1, (1, 1)) or ceil:
            raise ExportError(f"{n.name}: only unpadded, undilated, floor-mode max-pooling is supported")
        k = np.broadcast_to(kernel, 2).tolist()
        s = np.broadcast_to(stride if stride is not None else kernel, 2).tolist()
        return e.node("MaxPool", [e.value(x)], n.name, kernel_shape=k, strides=s, pads=[0, 0, 0, 0])
    if target in (operator.add, torch.add, operator.sub, torch.sub):
        op = "Add" if target in (operator.add, torch.add) else "Sub"
        return e.node(op, [_operand(e, a) for a in n.args[:2]], n.name)
    raise ExportError(f"no ONNX mapping for function {getattr(target, '__name__', target)}")


def _bind(n: torch.fx.Node, names: tuple[str, ...], defaults: dict[str, Any]) -> list[Any]:
    """A call's arguments in signature order, from positional args, keywords and defaults."""
    values = dict(zip(names, n.args, strict=False)) | dict(n.kwargs)
    missing = [name for name in names if name not in values and name not in defaults]
    if missing:
        raise ExportError(f"{n.name}: call without {', '.join(missing)}")
    return [values.get(name, defaults.get(name)) for name in names]


def _operand(e: _Emitter, arg: Any) -> str:
    if isinstance(arg, torch.fx.Node) and arg.op == "get_attr":
        return e.const(str(arg.target), _attr(e.root, arg))
    return e.value(arg)


def _attr(root: nn.Module, node: Any) -> torch.Tensor:
    """The tensor behind a ``get_attr`` node (GroupNorm affine params, buffers)."""
    module_path, _, name = str(node.target).rpartition(".")
    tensor = getattr(root.get_submodule(module_path) if module_path else root, name)
    if not isinstance(tensor, torch.Tensor):
        raise ExportError(f"{node.target} is a {type(tensor).__name__}, not a tensor")
    return tensor


_HANDLERS: dict[str, Callable[[_Emitter, torch.fx.Node], str]] = {"call_module": _module, "call_function": _function}


def build_onnx(
    deploy: nn.Module,
    *,
    input_size: tuple[int, int],
    batch: int | None,
    fp16: bool = False,
    group_norm: str = "native",
    metadata: dict[str, str] | None = None,
    producer_version: str = "",
    external_data: Path | None = None,
) -> Any:
    """An ``onnx.ModelProto`` computing ``deploy`` for (batch or dynamic, 3, H, W) float32 input.

    With ``external_data`` and weights past ``EXTERNAL_DATA_BYTES`` (protobuf's 2 GiB limit), every weight is
    streamed into that file as it is serialized and the model references it (save the model beside it): the
    weights are never copied into the protobuf, so export holds no second copy of them.
    """
    from onnx import TensorProto, helper

    graph_module = torch.fx.GraphModule(deploy, _Tracer().trace(deploy))
    height, width = input_size
    with torch.no_grad():
        ShapeProp(graph_module).propagate(torch.zeros(1, 3, height, width))
    if group_norm not in GROUP_NORM_FORMS:
        raise ExportError(f"unknown GroupNorm form {group_norm!r}")
    emitter = _Emitter(graph_module, fp16, group_norm)
    for n in graph_module.graph.nodes:
        if n.op == "placeholder":
            emitter.names[n.name] = emitter.cast(INPUT_NAME, to_fp16=True) if fp16 else INPUT_NAME
        elif n.op == "get_attr":
            continue  # materialized by the node that reads it
        elif n.op == "output":
            result = emitter.value(n.args[0])
            cast = {"to": TensorProto.FLOAT} if fp16 else {}
            emitter.node("Cast" if fp16 else "Identity", [result], OUTPUT_NAME, **cast)
        elif n.op in _HANDLERS:
            emitter.names[n.name] = _HANDLERS[n.op](emitter, n)
        else:
            raise ExportError(f"unsupported graph node {n.op} {n.target}")
    from bitedge.converters._onnx_taps import tap_values

    result = emitter.value(graph_module.graph.output_node().args[0])
    taps = tap_values(deploy, graph_module, emitter.names, result, OUTPUT_NAME)
    batch_dim: int | str = batch if batch is not None else "batch"
    num_labels = int(graph_module.graph.output_node().args[0].meta["tensor_meta"].shape[-1])  # type: ignore[union-attr]
    graph = helper.make_graph(
        emitter.nodes,
        "bitedge_bit",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch_dim, 3, height, width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch_dim, num_labels])],
        _initializers(emitter.initializers, external_data),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bitedge")
    model.producer_version = producer_version
    model.ir_version = 10
    helper.set_model_props(model, {**(metadata or {}), TAPS_KEY: json.dumps(taps)})
    return model


def _initializers(arrays: dict[str, np.ndarray], external_data: Path | None) -> list[Any]:
    """TensorProtos of the weights: inline, or (large models) streamed to ``external_data`` one by one."""
    from onnx import TensorProto, helper, numpy_helper

    if external_data is None or sum(a.nbytes for a in arrays.values()) < EXTERNAL_DATA_BYTES:
        return [numpy_helper.from_array(array, name) for name, array in arrays.items()]
    tensors = []
    with external_data.open("wb") as handle:
        for name, array in arrays.items():
            if array.nbytes < EXTERNAL_MIN_BYTES:  # scales, zero points, biases stay readable in the graph
                tensors.append(numpy_helper.from_array(array, name))
                continue
            handle.write(b"\0" * (-handle.tell() % EXTERNAL_ALIGNMENT))  # page-aligned, so runtimes can mmap
            offset = handle.tell()
            np.ascontiguousarray(array).tofile(handle)  # straight from the weight's memory, no bytes copy
            tensor = TensorProto(name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", external_data.name), ("offset", offset), ("length", array.nbytes)):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, str(value)
            tensors.append(tensor)
    return tensors
