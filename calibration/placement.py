"""Where a target's int8 Q/DQ go and in which integer type: one calibration table, a placement per target.

Runtimes fuse different Q/DQ patterns into integer kernels (docs/int8.md):

- ``SYMMETRIC_INT8`` (TensorRT, Core ML): a Q/DQ pair on every quantized layer's input, symmetric int8
  (zero point 0), weights per output channel. TensorRT's strongly typed parser accepts nothing else.
- ``X86_UINT8`` (onnxruntime, OpenVINO on x86): Q/DQ on every convolution's input AND output, uint8
  activations, an int32 bias. onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv
  only when the output carries Q/DQ too, and runs uint8 x int8 fastest on x86. A signed layer input (the
  stem's normalized pixels) stays symmetric int8. Weights use 7 bits (+-63) for x86 without VNNI (AVX2):
  it multiplies u8 x s8 pairs with ``vpmaddubsw``, whose int16 sum saturates above 32767, and 2 x 255 x 127
  does; 2 x 255 x 63 does not. With 8-bit weights onnxruntime drifted from the simulated model on a
  random-weight BiT (cosine 0.980); 7 bits cost the demo ~2 dB of SNR and no top-1 change (onnxruntime's
  ``reduce_range``, and NNCF for the first layer, do the same). For a CPU with VNNI (``--cpu vnni``,
  ``bitedge/cpu.py``) the same placement keeps 8-bit weights: ``x86-uint8-vnni`` (``Placement.for_cpu``).
- ``XNNPACK_INT8`` (ExecuTorch's XNNPACK backend): Q/DQ on every convolution's input and output, symmetric
  int8, 8-bit weights per output channel. XNNPACK's int8 convolution reads and writes int8 (a convolution
  whose output is not quantized is not delegated as int8) and derives an int32 bias itself. Its int8 fully
  connected layer would round the logits to int8 too, so the target runs the classifier as a float GEMM on the
  quantized input and int8-rounded weights: the simulated model's numbers, with logits in float.

The simulated-quantized model follows the placement of the target it is compared with, so "artifact vs
simulated" stays a check of conversion fidelity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from bitedge.calibration.table import Range
from bitedge.cpu import Cpu


class IntType(StrEnum):
    INT8 = "int8"
    UINT8 = "uint8"


@dataclass(frozen=True)
class QParams:
    """Per-tensor affine quantization: ``q = clamp(round(x / scale) + zero_point, qmin, qmax)``."""

    scale: float
    zero_point: int
    dtype: IntType

    @property
    def qmin(self) -> int:
        return -128 if self.dtype == IntType.INT8 else 0

    @property
    def qmax(self) -> int:
        return 127 if self.dtype == IntType.INT8 else 255


@dataclass(frozen=True)
class Placement:
    """A target's Q/DQ placement. ``name`` is recorded in the manifest."""

    name: str
    nonnegative_inputs: IntType = IntType.INT8  # a layer input that is never negative (a ReLU output): its type
    conv_outputs: IntType | None = None  # Q/DQ on convolution outputs in this type, and an int32 bias; None: none
    weight_bits: int = 8  # symmetric per-channel weights within +-(2^(bits-1) - 1)

    @property
    def integer_bias(self) -> bool:
        return self.conv_outputs is not None

    @property
    def weight_max(self) -> int:
        """The largest weight magnitude: 2^(bits-1) - 1 (63 for 7 bits, 127 for 8)."""
        return int(2 ** (self.weight_bits - 1)) - 1

    def for_cpu(self, cpu: Cpu) -> Placement:
        """This placement as built for ``cpu``: fewer than 8 weight bits exist only for x86 without VNNI, so a
        VNNI CPU gets 8-bit weights under the name ``<name>-vnni``; any other placement is unchanged."""
        if cpu is Cpu.VNNI and self.weight_bits < 8:
            return replace(self, name=f"{self.name}-{Cpu.VNNI.value}", weight_bits=8)
        return self

    def input(self, r: Range) -> QParams:
        """A quantized layer's input: uint8 from 0 if it is never negative and the placement says so, otherwise
        symmetric int8 (a signed input at a uint8 zero point of ~128 drifted in OpenVINO: cosine 0.9967 against
        the simulated model on a random-weight BiT, exact as int8)."""
        if r.low >= 0 and self.nonnegative_inputs == IntType.UINT8:
            return _affine(0.0, min(r.high, r.amax))
        return _symmetric(r.amax)

    def output(self, r: Range) -> QParams | None:
        """A convolution's output, if the placement quantizes it: uint8 over the clip, or symmetric int8."""
        if self.conv_outputs is None:
            return None
        if self.conv_outputs == IntType.UINT8:
            return _affine(max(r.low, -r.amax), min(r.high, r.amax))
        return _symmetric(r.amax)


def _symmetric(amax: float) -> QParams:
    return QParams(max(amax, 1e-12) / 127.0, 0, IntType.INT8)


def _affine(low: float, high: float) -> QParams:
    """uint8 over ``[low, high]`` widened to hold 0 exactly (zero padding and ReLU zeros stay exact)."""
    low, high = min(0.0, low), max(0.0, high)
    scale = max(high - low, 1e-12) / 255.0
    return QParams(scale, min(255, max(0, round(-low / scale))), IntType.UINT8)


SYMMETRIC_INT8 = Placement("symmetric-int8")
XNNPACK_INT8 = Placement("xnnpack-int8", conv_outputs=IntType.INT8)
X86_UINT8 = Placement("x86-uint8", IntType.UINT8, conv_outputs=IntType.UINT8, weight_bits=7)
