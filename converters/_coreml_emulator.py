"""A numerical emulator of Core ML ML programs, so a .mlpackage can be verified on Linux.

It executes the saved program's main function op by op, in program order, with the op semantics of the
MIL specification (coremltools' op definitions): every op type a BiT conversion produces, each listed in
``OPS``. An op it does not know stops execution with an error naming it; nothing is skipped.

Two modes:

- ``fp16=False``: every float tensor is computed and kept in float32 (the program's ideal result);
- ``fp16=True`` ("as typed"): each op is computed in float32 from its inputs and its output rounded to the
  dtype the program declares for it, so an fp16 program sees fp16 rounding after every op and fp16
  overflow (values past 65504 become inf) where a device would. Ops whose output turns non-finite from
  finite inputs are reported in :attr:`Execution.overflows`.

Heavy kernels (convolution, pooling) run in torch; the emulator decides padding, layout and types itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from bitedge.converters._coreml_package import MIL_DTYPES, MLPackage, PackageError, tensor_type

Args = dict[str, Any]
FLOAT_TYPES = ("FLOAT16", "FLOAT32", "FLOAT64")


class UnsupportedOpError(PackageError):
    """The program uses an op type the emulator does not implement."""


@dataclass
class Execution:
    """The variables kept after one run (all, or those asked for), the program's outputs, any fp16 overflows."""

    values: dict[str, Any]
    outputs: dict[str, Any]
    overflows: list[str] = field(default_factory=list)  # "op_type 'output name'" of each overflowing op


class Emulator:
    """Runs one package's main function on numpy inputs."""

    def __init__(self, package: MLPackage, *, fp16: bool = True) -> None:
        self.package = package
        self.fp16 = fp16
        self.constants: dict[str, Any] = {}  # const and constexpr outputs, decoded once
        unknown = sorted({op.type for op in package.block.operations} - SUPPORTED_OPS)
        if unknown:
            raise UnsupportedOpError(
                f"{package.root}: the emulator does not implement {', '.join(unknown)}; "
                "it cannot verify this program (bitedge's converter never emits these ops)"
            )
        self.inputs = {arg.name: tensor_type(arg.type) for arg in package.function.inputs}
        # the variables each op reads for the last time: activations are dropped after it, so a run holds
        # only the live ones (R152x4 at 480 px kept 14 GB of dead activations otherwise)
        last_use: dict[str, int] = {}
        for index, op in enumerate(package.block.operations):
            for binding in op.inputs.values():
                for arg in binding.arguments:
                    if arg.WhichOneof("binding") == "name":
                        last_use[arg.name] = index
        self.dead_after: list[list[str]] = [[] for _ in package.block.operations]
        for name, index in last_use.items():
            self.dead_after[index].append(name)

    def run(self, inputs: dict[str, np.ndarray], *, keep: set[str] | None = None) -> Execution:
        """Execute the program; ``keep`` names the variables to return besides the outputs (None: all)."""
        missing = set(self.inputs) - set(inputs)
        if missing:
            raise PackageError(f"the program needs inputs {sorted(missing)}")
        values: dict[str, Any] = dict(self.constants)
        for name, typ in self.inputs.items():
            value = np.asarray(inputs[name], dtype=np.float32)
            if typ.shape is not None and value.shape != typ.shape:
                raise PackageError(f"input {name!r} has shape {value.shape}; the program takes {typ.shape}")
            values[name] = self._as_typed(value, typ.dtype)
        overflows: list[str] = []
        retained = None if keep is None else set(keep) | set(self.package.block.outputs) | set(self.constants)
        for index, op in enumerate(self.package.block.operations):
            first = op.outputs[0].name
            if first in self.constants:
                continue
            if op.type == "const" or op.type in CONSTEXPR:
                self._evaluate_constant(op, values)
                continue
            args = {key: self._argument(binding, values) for key, binding in op.inputs.items()}
            results = OPS[op.type](args)
            results = results if isinstance(results, tuple) else (results,)
            for out, result in zip(op.outputs, results, strict=True):
                values[out.name] = self._as_typed(result, tensor_type(out.type).dtype)
            if _overflowed(args, values[first]):
                overflows.append(f"{op.type} '{first}'")
            if retained is not None:
                for name in self.dead_after[index]:
                    if name not in retained:
                        values.pop(name, None)
        outputs = {name: values[name] for name in self.package.block.outputs}
        return Execution(values, outputs, overflows)

    def _evaluate_constant(self, op: Any, values: dict[str, Any]) -> None:
        attrs = {key: self.package.decode(value) for key, value in op.attributes.items() if key != "name"}
        attrs |= {key: self._argument(binding, values) for key, binding in op.inputs.items()}  # iOS18 style
        out = op.outputs[0]
        result = attrs["val"] if op.type == "const" else CONSTEXPR[op.type](attrs)
        typed = self._as_typed(result, tensor_type(out.type).dtype)
        self.constants[out.name] = values[out.name] = typed

    def _argument(self, binding: Any, values: dict[str, Any]) -> Any:
        decoded = []
        for arg in binding.arguments:
            if arg.WhichOneof("binding") == "name":
                decoded.append(values[arg.name])
            else:
                decoded.append(self.package.decode(arg.value))
        return decoded[0] if len(decoded) == 1 else decoded

    def _as_typed(self, value: Any, dtype: str) -> Any:
        """Store floats as float32 (rounded through fp16 when the program types them fp16 and fp16=True)."""
        if not isinstance(value, np.ndarray):
            return value
        if dtype in FLOAT_TYPES:
            if dtype == "FLOAT16" and self.fp16:
                with np.errstate(over="ignore"):
                    return value.astype(np.float16).astype(np.float32)
            return value.astype(np.float32, copy=False)
        if dtype in MIL_DTYPES:
            return value.astype(MIL_DTYPES[dtype], copy=False)
        return value


def _overflowed(args: Args, output: Any) -> bool:
    if not isinstance(output, np.ndarray) or output.dtype.kind != "f" or np.isfinite(output).all():
        return False
    inputs = [v for v in args.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    return all(np.isfinite(v).all() for v in inputs)


# -- op semantics --------------------------------------------------------------------------------------
def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _ints(x: Any) -> list[int]:
    return [int(v) for v in np.asarray(x).reshape(-1)]


def _spatial_padding(
    args: Args, x: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int]
) -> list[int]:
    """[before, after] per spatial dim, for MIL's pad_type (valid, custom, same, same_lower)."""
    pad_type = args.get("pad_type", "valid")
    dims = len(kernel)
    if pad_type == "valid":
        return [0] * (2 * dims)
    if pad_type == "custom":
        return _ints(args["pad"])
    if pad_type not in ("same", "same_lower"):
        raise UnsupportedOpError(f"unsupported pad_type {pad_type!r}")
    pads = []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads += [large, small] if pad_type == "same_lower" else [small, large]
    return pads


def _torch_pad(pads: list[int]) -> list[int]:
    """MIL [before_0, after_0, before_1, after_1] (outer dim first) -> torch's F.pad order (last dim first)."""
    pairs = [pads[i : i + 2] for i in range(0, len(pads), 2)]
    return [v for pair in reversed(pairs) for v in pair]


def _conv(a: Args) -> np.ndarray:
    x, w = a["x"], a["weight"]
    dims = w.ndim - 2
    strides = _ints(a.get("strides", [1] * dims))
    dilations = _ints(a.get("dilations", [1] * dims))
    pads = _spatial_padding(a, x, list(w.shape[2:]), strides, dilations)
    xt = F.pad(_t(x), _torch_pad(pads))
    bias = _t(a["bias"]) if "bias" in a else None
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    return conv(xt, _t(w), bias, strides, 0, dilations, int(a.get("groups", 1))).numpy()


def _pool(a: Args, kind: str) -> np.ndarray:
    x = a["x"]
    kernel = _ints(a["kernel_sizes"])
    strides = _ints(a.get("strides", kernel))
    pads = _spatial_padding(a, x, kernel, strides, [1] * len(kernel))
    ceil = bool(a.get("ceil_mode", False))
    if kind == "max":
        xt = F.pad(_t(x), _torch_pad(pads), value=-np.inf)
        return F.max_pool2d(xt, kernel, strides, 0, ceil_mode=ceil).numpy()
    xt = F.pad(_t(x), _torch_pad(pads))
    summed = F.avg_pool2d(xt, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
    if bool(a.get("exclude_padding_from_average", False)):
        ones = F.pad(torch.ones_like(_t(x)[:1, :1]), _torch_pad(pads))
        counts = F.avg_pool2d(ones, kernel, strides, 0, ceil_mode=ceil, divisor_override=1)
        return (summed / counts).numpy()
    return (summed / float(np.prod(kernel))).numpy()


def _pad(a: Args) -> Any:  # numpy array
    x, pads = a["x"], _ints(a["pad"])
    mode = a.get("mode", "constant")
    full = [0] * (2 * x.ndim - len(pads)) + pads  # pads cover the last len(pads) // 2 dims
    widths = [(full[i], full[i + 1]) for i in range(0, len(full), 2)]
    if mode == "constant":
        return np.pad(x, widths, constant_values=float(a.get("constant_val", 0.0)))
    return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")  # MIL "replicate" is numpy's "edge"


def _reduce(fn: Callable[..., np.ndarray]) -> Callable[[Args], np.ndarray]:
    def reduce(a: Args) -> np.ndarray:
        axes = tuple(_ints(a["axes"])) if "axes" in a and a["axes"] is not None else None
        return fn(a["x"], axis=axes, keepdims=bool(a.get("keep_dims", False)))

    return reduce


def _reshape(a: Args) -> Any:  # numpy array
    x = a["x"]
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(_ints(a["shape"]))]
    return x.reshape(shape)


def _along(param: np.ndarray, axis: Any, ndim: int) -> np.ndarray:
    """A per-axis quantization parameter, shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    param = np.asarray(param)
    if param.ndim == 0 or axis is None:
        return param
    shape = [1] * ndim
    shape[int(axis) % ndim] = -1
    return param.reshape(shape)


def _quantize(a: Args) -> Any:  # numpy array
    x = a["input"]
    dtype = {"int8": np.int8, "uint8": np.uint8}[a["output_dtype"]]
    info = np.iinfo(dtype)
    scale = _along(a["scale"], a.get("axis"), x.ndim).astype(np.float32)
    zero = _along(a.get("zero_point", 0), a.get("axis"), x.ndim).astype(np.float32)
    return np.clip(np.rint(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(a: Args) -> Any:  # numpy array
    q = a["input"]
    scale = _along(a["scale"], a.get("axis"), q.ndim).astype(np.float32)
    zero = _along(a.get("zero_point", 0), a.get("axis"), q.ndim).astype(np.float32)
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


def _batch_norm(a: Args) -> Any:  # numpy array
    x = a["x"]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    eps = float(a.get("epsilon", 1e-5))
    out = (x - a["mean"].reshape(shape)) / np.sqrt(a["variance"].reshape(shape) + eps)
    if "gamma" in a:
        out = out * a["gamma"].reshape(shape)
    if "beta" in a:
        out = out + a["beta"].reshape(shape)
    return out.astype(np.float32)


def _linear(a: Args) -> Any:  # numpy array
    out = a["x"] @ a["weight"].T
    return out + a["bias"] if "bias" in a else out


def _softmax(a: Args) -> Any:  # numpy array
    x = a["x"]
    axis = int(a.get("axis", -1))
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _classify(a: Args) -> tuple[str, dict[str, float]]:
    probs = np.asarray(a["probabilities"]).reshape(-1)
    classes = a["classes"]
    classes = [str(c) for c in (classes if isinstance(classes, list) else np.asarray(classes).reshape(-1))]
    if len(classes) != probs.size:
        raise PackageError(f"classify: {len(classes)} class labels for {probs.size} probabilities")
    return classes[int(probs.argmax())], {c: float(p) for c, p in zip(classes, probs, strict=True)}


def _cast(a: Args) -> np.ndarray:
    dtypes = {"fp16": np.float32, "fp32": np.float32, "int32": np.int32, "int8": np.int8, "uint8": np.uint8,
              "bool": np.bool_}  # fmt: skip
    return np.asarray(a["x"]).astype(dtypes[a["dtype"]])  # fp16 rounding comes from the declared output type


OPS: dict[str, Callable[[Args], Any]] = {
    "conv": _conv,
    "max_pool": lambda a: _pool(a, "max"),
    "avg_pool": lambda a: _pool(a, "avg"),
    "pad": _pad,
    "relu": lambda a: np.maximum(a["x"], 0),
    "add": lambda a: a["x"] + a["y"],
    "sub": lambda a: a["x"] - a["y"],
    "mul": lambda a: a["x"] * a["y"],
    "real_div": lambda a: a["x"] / a["y"],
    "square": lambda a: a["x"] * a["x"],
    "sqrt": lambda a: np.sqrt(a["x"]),
    "rsqrt": lambda a: 1.0 / np.sqrt(a["x"] + float(a.get("epsilon", 1e-12))),
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reshape": _reshape,
    "squeeze": lambda a: np.squeeze(a["x"], axis=tuple(_ints(a["axes"])) if "axes" in a else None),
    "expand_dims": lambda a: np.expand_dims(a["x"], tuple(_ints(a["axes"]))),
    "transpose": lambda a: np.transpose(a["x"], _ints(a["perm"])),
    "batch_norm": _batch_norm,
    "linear": _linear,
    "matmul": lambda a: np.matmul(
        np.swapaxes(a["x"], -1, -2) if a.get("transpose_x", False) else a["x"],
        np.swapaxes(a["y"], -1, -2) if a.get("transpose_y", False) else a["y"],
    ),
    "softmax": _softmax,
    "classify": _classify,
    "cast": _cast,
    "identity": lambda a: a["x"],
    "quantize": _quantize,
    "dequantize": _dequantize,
}


def _affine_dequantize(a: Args) -> Any:  # numpy array
    """iOS16's int8 weight constant: ``dequantize`` of its attributes."""
    return _dequantize({"input": a["quantized_data"], "scale": a["scale"], "zero_point": a["zero_point"],
                        "axis": a.get("axis")})  # fmt: skip


def _blockwise_shift_scale(a: Args) -> Any:  # numpy array
    """iOS18: ``(data - offset) * scale``, scale/offset of the data's rank, each repeated over its block."""
    data = a["data"].astype(np.float32)

    def expand(param: np.ndarray) -> np.ndarray:
        for axis, (n, m) in enumerate(zip(data.shape, param.shape, strict=True)):
            if n % m:
                raise PackageError(f"blockwise scale shape {param.shape} does not tile data {data.shape}")
            param = np.repeat(param, n // m, axis=axis)
        return param.astype(np.float32)

    offset = expand(a["offset"]) if "offset" in a else 0.0
    return ((data - offset) * expand(a["scale"])).astype(np.float32)


CONSTEXPR: dict[str, Callable[[Args], np.ndarray]] = {
    "constexpr_affine_dequantize": _affine_dequantize,
    "constexpr_blockwise_shift_scale": _blockwise_shift_scale,
}
# constants are decoded once per emulator (Emulator._evaluate_constant), ops run on every call
SUPPORTED_OPS = frozenset(OPS) | frozenset(CONSTEXPR) | {"const"}
