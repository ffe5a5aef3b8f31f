"""This process's memory: resident set size now, its peak (also since a reset), and glibc's malloc told to
keep freed memory. Used by the conversion's progress log and by the benchmarks; Linux reads /proc, elsewhere
the figures are 0 or the whole process's peak.
"""

from __future__ import annotations

import os
import platform
import resource

_earlier_peak_mb = 0.0  # the process's peak before the last reset_peak_rss


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return max(_earlier_peak_mb, peak / 2**20 if platform.system() == "Darwin" else peak / 1024)


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB (0 where /proc is missing: macOS)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def reset_peak_rss() -> bool:
    """Start a new peak for ``peak_rss_since_reset_mb`` (Linux >= 4.0: clear_refs 5); False where it cannot.
    ``peak_rss_mb`` still reports the whole process's peak."""
    global _earlier_peak_mb
    _earlier_peak_mb = peak_rss_mb()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset_mb() -> float:
    """VmHWM: the peak resident set size since the last ``reset_peak_rss`` (Linux), in MiB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmHWM in /proc/self/status")


# How runtimes say an allocation failed: torch ("can't allocate memory"), onnxruntime ("Failed to allocate
# memory"), OpenVINO and other C++ code ("std::bad_alloc"), numpy ("Unable to allocate"), the C library (ENOMEM).
_OUT_OF_MEMORY = ("can't allocate memory", "failed to allocate memory", "bad_alloc", "cannot allocate memory",
                  "unable to allocate", "out of memory")  # fmt: skip


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out (a ``MemoryError``, or a runtime's own words for it)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return any(words in text for words in _OUT_OF_MEMORY)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS between calls.

    By default blocks past 128 KiB (a threshold glibc raises as larger blocks are freed) are mmapped and
    unmapped on every allocation, and the heap top is trimmed back, so a model that allocates large
    temporaries per call page-faults them in each time: torch eager BiT-R50x1 recomputes its standardized
    weights (~100 MB) every call and took 69 ms per call instead of 50 ms
    (benchmarks/results/eager_allocator.md). How much of that a process pays depends on its allocation
    history, so a benchmark pins it, at the setting that favours eager (the baseline). False where this is
    not glibc (the call is then a no-op).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(name)
    limit = 1 << 30  # 1 GiB: past any one BiT weight tensor
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, limit)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, limit))
