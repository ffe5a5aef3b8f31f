"""The latency protocol and `bitedge bench` — their correctness, not speed."""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bitedge.bench.peak import measure_peak
from bitedge.bench.protocol import (  # _stats: LatencyStats from samples
    Protocol,
    _stats,
    measure_interleaved,
    paired_ratio,
)
from bitedge.cli import main
from bitedge.model.loading import load_model
from bitedge.model.summary import count_macs

FAST = Protocol(warmup_runs=2, warmup_seconds=0.0, min_runs=5, min_seconds=0.0, settle_seconds=0.0)


def test_statistics_and_interleaving() -> None:
    order: list[str] = []
    delays = itertools.cycle([0.001, 0.003])

    def a() -> None:
        order.append("a")
        time.sleep(next(delays))

    def b() -> None:
        order.append("b")
        time.sleep(0.002)

    stats = measure_interleaved({"a": a, "b": b}, batch=4, threads=1, protocol=FAST)
    timed = order[-10:]  # after the warm-up of each (a a b b), the timed runs alternate
    assert order[:4] == ["a", "a", "b", "b"] and timed == ["a", "b"] * 5
    s = stats["a"]
    samples = np.asarray(s.samples_ms)
    assert s.runs == len(samples) == 5
    assert s.median_ms == pytest.approx(np.median(samples)) and s.min_ms == pytest.approx(samples.min())
    assert s.p90_ms == pytest.approx(np.percentile(samples, 90)) and s.mean_ms == pytest.approx(samples.mean())
    assert s.throughput == pytest.approx(4 / (s.median_ms / 1e3))
    assert paired_ratio(stats["a"], stats["a"]) == 1.0


def test_rounds_settle_each_candidate_before_timing_it() -> None:
    """Another candidate's threads may still spin: per round, a candidate runs untimed, then is timed."""
    calls: list[tuple[str, float]] = []

    def candidate(name: str) -> Callable[[], None]:
        def call() -> None:
            calls.append((name, time.perf_counter()))
            time.sleep(0.001)

        return call

    protocol = Protocol(warmup_runs=1, warmup_seconds=0.0, min_runs=3, min_seconds=0.0, settle_seconds=0.01)
    stats = measure_interleaved({"a": candidate("a"), "b": candidate("b")}, batch=1, threads=None, protocol=protocol)
    timed = calls[2:]  # after one warm-up run each
    switches = [i for i in range(1, len(timed)) if timed[i][0] != timed[i - 1][0]]
    blocks = [timed[start:end] for start, end in zip([0, *switches], [*switches, len(timed)], strict=True)]
    rounds = stats["a"].rounds[-1] + 1
    assert len(blocks) == 2 * rounds and [b[0][0] for b in blocks] == ["a", "b"] * rounds
    for block, name in zip(blocks, ["a", "b"] * rounds, strict=True):
        timed_in_block = stats[name].rounds.count(blocks.index(block) // 2)
        untimed = len(block) - timed_in_block
        assert untimed >= 1 and timed_in_block >= 1  # settled, then timed
        assert block[untimed][1] - block[0][1] >= 0.01  # the untimed runs lasted settle_seconds
    assert stats["a"].runs == len(stats["a"].samples_ms) == len(stats["a"].rounds) >= 3


def test_paired_ratio_pairs_samples_of_the_same_round() -> None:
    a = _stats("a", [1.0, 1.0, 3.0], [0, 0, 1], 1, None)
    b = _stats("b", [2.0, 2.0, 2.0], [0, 1, 1], 1, None)
    assert paired_ratio(a, b) == pytest.approx(1.0)  # rounds: 1/2 and 3/2
    assert paired_ratio(b, a) == pytest.approx((2 + 2 / 3) / 2)


_PEAK_SINCE_RESET = """
import numpy as np
from bitedge.memory import current_rss_mb, peak_rss_mb, peak_rss_since_reset_mb, reset_peak_rss

before = peak_rss_mb()
assert reset_peak_rss()
start = current_rss_mb()
block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
grown = peak_rss_since_reset_mb()
del block
assert grown - start >= 60, (grown, start)
assert peak_rss_mb() >= max(before, grown) - 1  # the process's peak survives resets
assert reset_peak_rss() and peak_rss_since_reset_mb() < grown - 60  # the block is gone: a new, lower peak
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs")
def test_peak_memory_since_a_reset() -> None:
    """In a fresh process: once a bench in this one has told malloc to keep freed memory, the block stays."""
    import subprocess

    run = subprocess.run([sys.executable, "-c", _PEAK_SINCE_RESET], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


_WHERE_A_FREED_BLOCK_GOES = """
import ctypes, ctypes.util, sys
import numpy as np
from bitedge.memory import keep_freed_memory

class MallInfo2(ctypes.Structure):  # glibc's malloc statistics (malloc.h)
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert keep_freed_memory()
block = np.ones(64 << 18, np.float32)  # 64 MiB, like one of eager's per-call temporaries
mapped = libc.mallinfo2().hblkhd
del block
print(mapped >> 20, libc.mallinfo2().fordblks >> 20)  # MiB mapped for it alone; MiB kept free for reuse
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_keeping_freed_memory_reuses_large_blocks() -> None:
    """By default glibc maps a large block on its own and unmaps it when freed, so the next one is faulted in
    again; told to keep freed memory, it serves the block from the heap and keeps it for the next call."""
    import subprocess

    def mapped_and_kept(mode: str) -> list[int]:
        run = subprocess.run([sys.executable, "-c", _WHERE_A_FREED_BLOCK_GOES, mode], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return [int(v) for v in run.stdout.split()]

    mapped, kept = mapped_and_kept("default")
    assert mapped >= 64 and kept < 64  # mapped alone, returned to the OS when freed
    mapped, kept = mapped_and_kept("keep")
    assert mapped < 64 and kept >= 64  # from the heap, and still there for the next call


def test_protocol_honours_minimum_duration() -> None:
    stats = measure_interleaved({"x": lambda: time.sleep(0.001)}, batch=1, threads=None,
                                protocol=Protocol(0, 0.0, 3, 0.05))  # fmt: skip
    assert sum(stats["x"].samples_ms) >= 50 and stats["x"].runs >= 3


@pytest.mark.slow
def test_bench_cli_artifact_vs_float_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    artifact = tmp_path / "onnx"
    assert main(["convert", "--target", "onnx", "--precision", "fp32", "--out", str(artifact)]) == 0
    capsys.readouterr()
    out = tmp_path / "bench"
    args = ["bench", str(artifact), "bitedge/demo", "--batch", "1", "2", "--runs", "5", "--duration", "0.05"]
    assert main([*args, "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "median ms" in printed and "bitedge/demo" in printed
    data = json.loads((out / "bench.json").read_text())
    assert [r["batch"] for r in data["runs"]] == [1, 2]
    run = data["runs"][0]
    assert run["ratios_vs_first"][str(artifact)] == 1.0
    assert len(run["stats"]["bitedge/demo"]["samples_ms"]) >= 5
    assert data["targets"][str(artifact)]["runtime"].startswith("onnxruntime")
    assert all(isinstance(t["rss_added_mb"], float) for t in data["targets"].values())  # measured on Linux
    assert "+RSS MiB" in printed and "GFLOP/s" in printed and "peak of this machine" in printed
    # achieved GFLOP/s is the model's work over the median, judged against a peak measured in the same run
    work = 2 * count_macs(load_model("bitedge/demo").config, 64) / 1e9
    median_s = run["stats"]["bitedge/demo"]["median_ms"] / 1e3
    assert run["gflops"]["bitedge/demo"] == pytest.approx(work / median_s)
    assert run["peak_share"]["bitedge/demo"] == pytest.approx(work / median_s / data["peak"]["fp32_gflops"])
    assert data["targets"][str(artifact)]["runs"] == "fp32" and data["peak"]["fp32_gflops"] > 1
    assert data["machine"]["cores"] and (out / "bench.png").stat().st_size > 0 and (out / "bench.md").is_file()


@pytest.mark.slow
def test_first_target_is_charged_only_for_itself(tmp_path: Path) -> None:
    """In a fresh process the first target's loader imports torch; that shared cost is not the target's."""
    import subprocess

    artifact = tmp_path / "onnx"
    assert main(["convert", "--target", "onnx", "--precision", "fp32", "--out", str(artifact)]) == 0
    out = tmp_path / "bench"
    args = [str(artifact), "bitedge/demo", "--runs", "3", "--duration", "0.05", "--threads", "1", "--out", str(out)]
    subprocess.run([sys.executable, "-m", "bitedge", "bench", *args], check=True, capture_output=True)
    memory = {name: t["rss_added_mb"] for name, t in json.loads((out / "bench.json").read_text())["targets"].items()}
    assert memory[str(artifact)] < 120, memory  # onnxruntime and a 0.7 MB model; torch alone is ~190 MiB


@pytest.mark.slow
def test_bench_missing_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = tmp_path / "ov"
    assert main(["convert", "--target", "openvino", "--precision", "fp32", "--out", str(artifact)]) == 0
    monkeypatch.setitem(sys.modules, "openvino", None)
    capsys.readouterr()
    assert main(["bench", str(artifact), "--runs", "1", "--duration", "0.01"]) == 1
    assert "bitedge[openvino]" in capsys.readouterr().err


@pytest.mark.slow
def test_openvino_rows_name_the_precision_that_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One row per precision the CPU plugin runs: f32 always, bf16 as its own row only where the CPU has it."""
    import openvino as ov

    artifact = tmp_path / "ov"
    assert main(["convert", "--target", "openvino", "--precision", "fp32", "--out", str(artifact)]) == 0
    out = tmp_path / "bench"
    assert main(["bench", str(artifact), "--runs", "3", "--duration", "0.05", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    targets = json.loads((out / "bench.json").read_text())["targets"]
    bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    expected = ["f32", "bf16"] if bf16 else ["f32"]
    assert [t["runs"] for t in targets.values()] == expected
    assert [t["inference_precision"] for t in targets.values()] == expected
    assert bf16 or "this CPU has no bf16 support" in printed


def test_peak_is_measured_per_number_type() -> None:
    peak = measure_peak(1, seconds=0.01)
    assert peak.fp32_gflops > 0 and peak.fp32_by in peak.measured
    assert peak.int8_gops and peak.int8_by and peak.int8_by.split()[1] == "int8"  # onnxruntime is installed here
    assert peak.share(peak.fp32_gflops / 2, int8=False) == pytest.approx(0.5)
    assert peak.share(peak.int8_gops, int8=True) == pytest.approx(1.0)


def test_bench_unknown_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "no-such-thing", "--runs", "1"]) == 2
    assert "no such file" in capsys.readouterr().err
