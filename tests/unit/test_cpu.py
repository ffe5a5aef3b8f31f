"""``--cpu``: which x86 CPU the int8 placements are made for, read once at the boundary; placements per CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bitedge.calibration.placement import SYMMETRIC_INT8, X86_UINT8, XNNPACK_INT8
from bitedge.calibration.simulate import quantize_weight
from bitedge.converters import get_converter
from bitedge.cpu import Cpu, CpuTarget, detect_cpu, parse_cpu
from bitedge.errors import BadInputError

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c\n"
WITH_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16\n"
AVX_VNNI = "processor\t: 0\nflags\t\t: fpu avx2 fma avx_vnni\n"


@pytest.mark.parametrize(("cpuinfo", "cpu"), [(AVX2_ONLY, Cpu.AVX2), (WITH_VNNI, Cpu.VNNI), (AVX_VNNI, Cpu.VNNI)])
def test_the_converting_cpu_is_read_from_its_flags(tmp_path: Path, cpuinfo: str, cpu: Cpu) -> None:
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    assert detect_cpu(tmp_path / "cpuinfo") is cpu


def test_unreadable_flags_count_as_avx2_the_choice_exact_everywhere(tmp_path: Path) -> None:
    assert detect_cpu(tmp_path / "missing") is Cpu.AVX2
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n")
    assert detect_cpu(tmp_path / "cpuinfo") is Cpu.AVX2


def test_parse_cpu() -> None:
    assert parse_cpu("AVX2") == CpuTarget(Cpu.AVX2) and parse_cpu(" vnni ") == CpuTarget(Cpu.VNNI)
    auto = parse_cpu("auto")
    assert auto.detected and auto.cpu is detect_cpu() and "--cpu auto" in auto.describe()
    with pytest.raises(BadInputError, match="unknown --cpu 'arm'; choose from avx2, vnni, auto"):
        parse_cpu("arm")


def test_only_the_x86_placements_change_with_the_cpu() -> None:
    assert X86_UINT8.for_cpu(Cpu.AVX2) is X86_UINT8 and X86_UINT8.weight_bits == 7
    vnni = X86_UINT8.for_cpu(Cpu.VNNI)
    assert vnni.name == "x86-uint8-vnni" and vnni.weight_bits == 8
    assert (vnni.nonnegative_inputs, vnni.conv_outputs) == (X86_UINT8.nonnegative_inputs, X86_UINT8.conv_outputs)
    for other in (SYMMETRIC_INT8, XNNPACK_INT8):  # 8-bit weights already: the same on every CPU
        assert other.for_cpu(Cpu.VNNI) is other
    placements = {name: set(get_converter(name).int8_placements()) for name in ("onnx", "openvino", "tensorrt")}
    assert placements == {
        "onnx": {"x86-uint8", "x86-uint8-vnni"},
        "openvino": {"x86-uint8", "x86-uint8-vnni"},
        "tensorrt": {"symmetric-int8"},
    }


@pytest.mark.parametrize(("bits", "levels"), [(7, 63), (8, 127)])
def test_weights_use_every_level_of_their_bits(bits: int, levels: int) -> None:
    weight = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    q, scale = quantize_weight(weight, bits)
    assert int(q.abs().amax()) == levels and torch.equal(q.abs().flatten(1).amax(1), torch.full((16,), levels))
    assert float((q.float() * scale[:, None, None, None] - weight).abs().max()) <= float(scale.max()) / 2 + 1e-6
