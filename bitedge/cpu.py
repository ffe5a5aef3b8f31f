"""The CPU an int8 artifact is made for: ``--cpu avx2|vnni|auto``, parsed once at the boundary.

x86 runs uint8 x int8 products in one of two ways (docs/int8.md). Without VNNI (AVX2) ``vpmaddubsw`` adds
two products into a saturating int16: 2 x 255 x 127 overflows, so weights must keep to 7 bits (+-63). With
VNNI (AVX-512 VNNI, AVX-VNNI, and AMX, which every AMX CPU has beside them) ``vpdpbusd`` accumulates in
int32 and 8-bit weights are exact. ``auto`` means the CPU converting, read from ``/proc/cpuinfo``; a machine
whose flags cannot be read counts as AVX2, the choice that is exact on every CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bitedge.errors import BadInputError

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # any of them: int8 dot products accumulate in int32


class Cpu(StrEnum):
    AVX2 = "avx2"  # x86 without VNNI: 7-bit weights where a placement multiplies uint8 by int8
    VNNI = "vnni"  # x86 with VNNI (or AMX): 8-bit weights


AUTO = "auto"


@dataclass(frozen=True)
class CpuTarget:
    """The resolved choice, and whether it was read off the converting machine (``--cpu auto``)."""

    cpu: Cpu
    detected: bool = False

    def describe(self) -> str:
        return describe(self.cpu.value, self.detected)


def describe(cpu: str, detected: bool, also: str = "") -> str:
    """``"vnni CPUs (this machine's, --cpu auto)"``: what the log, the summary and ``inspect`` say (``also``
    joins the parenthesis)."""
    how = "this machine's, --cpu auto" if detected else "--cpu"
    return f"{cpu} CPUs ({how}{'; ' + also if also else ''})"


OTHER_CHOICE: dict[str, str] = {  # by the recorded cpu: the choice for the other kind of x86 CPU
    Cpu.VNNI.value: "--cpu avx2 for x86 CPUs without VNNI",
    Cpu.AVX2.value: "--cpu vnni for CPUs with VNNI or AMX",
}


def parse_cpu(text: str) -> CpuTarget:
    """``avx2``, ``vnni`` or ``auto`` (case-insensitive) as a resolved target."""
    value = text.strip().lower()
    if value == AUTO:
        return CpuTarget(detect_cpu(), detected=True)
    try:
        return CpuTarget(Cpu(value))
    except ValueError:
        choices = ", ".join([*(c.value for c in Cpu), AUTO])
        raise BadInputError(f"unknown --cpu {text!r}; choose from {choices}") from None


def detect_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> Cpu:
    """VNNI if the converting CPU lists any of ``VNNI_FLAGS``, otherwise AVX2."""
    return Cpu.VNNI if set(VNNI_FLAGS) & cpu_flags(cpuinfo) else Cpu.AVX2


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first processor's flags (empty where ``/proc/cpuinfo`` is missing or unreadable)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()
