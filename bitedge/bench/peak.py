"""The machine's peak, measured in the same run as the rows it judges: achieved GFLOP/s means little alone.

fp32: the best of several dense matrix multiplies (torch.mm, onnxruntime MatMul, OpenVINO MatMul at f32)
at a few sizes, with the bench's thread count: one library's BLAS alone understates the machine (a suite
once measured torch.mm at 185 GFLOP/s while onnxruntime ran R50x1 at 284). int8: onnxruntime's
MatMulInteger (uint8 x int8, the kernel family its QLinearConv uses) and OpenVINO's int8 MatMul. numpy is
never used (it may run a deliberately slowed OpenBLAS kernel). A runtime that is not installed is left out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

SIZES = (256, 512, 1024)


@dataclass(frozen=True)
class Peak:
    """Best achieved rate per number type (G operations/s: a multiply-add is 2) and who achieved it."""

    fp32_gflops: float
    fp32_by: str
    int8_gops: float | None = None
    int8_by: str | None = None
    measured: dict[str, float] = field(default_factory=dict)  # every candidate: "<library> <type> <size>" -> G/s

    def share(self, gflops: float, *, int8: bool) -> float | None:
        """``gflops`` as a fraction of the peak of its number type (None when that peak is unknown)."""
        peak = self.int8_gops if int8 else self.fp32_gflops
        return gflops / peak if peak else None


def measure_peak(threads: int | None, *, seconds: float = 0.25) -> Peak:
    """Time every available candidate for ``seconds`` at each size; the best per number type wins."""
    rates: dict[str, float] = {}
    for library, number_type, make in _candidates(threads):
        for size in SIZES:
            try:
                call = make(size)
            except Exception:  # a runtime that cannot build this candidate is simply not one
                break
            rates[f"{library} {number_type} {size}"] = 2 * size**3 / _seconds_per_call(call, seconds) / 1e9
    fp32 = {k: v for k, v in rates.items() if " fp32 " in k}
    int8 = {k: v for k, v in rates.items() if " int8 " in k}
    best32 = max(fp32, key=fp32.__getitem__)
    best8 = max(int8, key=int8.__getitem__) if int8 else None
    return Peak(
        round(fp32[best32], 1), best32, round(int8[best8], 1) if best8 else None, best8,
        {k: round(v, 1) for k, v in rates.items()},
    )  # fmt: skip


def _seconds_per_call(call: Callable[[], object], seconds: float) -> float:
    call()  # warm-up: first calls pack weights and allocate
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def _candidates(threads: int | None) -> list[tuple[str, str, Callable[[int], Callable[[], object]]]]:
    found: list[tuple[str, str, Callable[[int], Callable[[], object]]]] = [("torch", "fp32", _torch(threads))]
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        pass
    else:
        found += [("onnxruntime", "fp32", _onnxruntime(threads, int8=False)),
                  ("onnxruntime", "int8", _onnxruntime(threads, int8=True))]  # fmt: skip
    try:
        import openvino  # noqa: F401
    except ImportError:
        pass
    else:
        found += [("openvino", "fp32", _openvino(threads, int8=False)),
                  ("openvino", "int8", _openvino(threads, int8=True))]  # fmt: skip
    return found


def _torch(threads: int | None) -> Callable[[int], Callable[[], object]]:
    def make(size: int) -> Callable[[], object]:
        import torch

        if threads:
            torch.set_num_threads(threads)
        a, b = torch.randn(size, size), torch.randn(size, size)
        return lambda: torch.mm(a, b)

    return make


def _onnxruntime(threads: int | None, *, int8: bool) -> Callable[[int], Callable[[], object]]:
    def make(size: int) -> Callable[[], object]:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        a: np.ndarray
        b: np.ndarray
        if int8:  # u8 activations x s8 weights, as QLinearConv runs on x86
            a = rng.integers(0, 256, (size, size), dtype=np.uint8)
            b = rng.integers(-127, 128, (size, size), dtype=np.int8)
            node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
            types = (TensorProto.UINT8, TensorProto.INT32)
        else:
            a, b = rng.standard_normal((size, size), np.float32), rng.standard_normal((size, size), np.float32)
            node = helper.make_node("MatMul", ["a", "b"], ["y"])
            types = (TensorProto.FLOAT, TensorProto.FLOAT)
        graph = helper.make_graph(
            [node], "peak", [helper.make_tensor_value_info("a", types[0], [size, size])],
            [helper.make_tensor_value_info("y", types[1], [size, size])], [numpy_helper.from_array(b, "b")],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, {"a": a})

    return make


def _openvino(threads: int | None, *, int8: bool) -> Callable[[int], Callable[[], object]]:
    def make(size: int) -> Callable[[], object]:
        import openvino as ov
        from openvino import opset13 as ops

        rng = np.random.default_rng(0)
        x = ops.parameter([size, size], ov.Type.f32)
        a, b = x, ops.constant(rng.standard_normal((size, size), np.float32))
        if int8:  # FakeQuantize on both sides: the CPU plugin then runs an int8 MatMul
            a = ops.fake_quantize(x, 0.0, 4.0, 0.0, 4.0, 256)
            b = ops.fake_quantize(b, -4.0, 4.0, -4.0, 4.0, 255)
        model = ov.Model([ops.matmul(a, b, False, False)], [x], "peak")
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(model, "CPU", config)
        pixels = np.abs(rng.standard_normal((size, size), np.float32))
        return lambda: compiled(pixels)

    return make
