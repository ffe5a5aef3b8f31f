"""The latency protocol and `bitedge bench` — their correctness, not speed."""

from __future__ import annotations

import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bitedge.bench import Protocol, measure_interleaved, paired_ratio
from bitedge.cli import main

FAST = Protocol(warmup_runs=2, warmup_seconds=0.0, min_runs=5, min_seconds=0.0)


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


def test_protocol_honours_minimum_duration() -> None:
    stats = measure_interleaved({"x": lambda: time.sleep(0.001)}, batch=1, threads=None,
                                protocol=Protocol(0, 0.0, 3, 0.05))  # fmt: skip
    assert sum(stats["x"].samples_ms) >= 50 and stats["x"].runs >= 3


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
    assert data["machine"]["cores"] and (out / "bench.png").stat().st_size > 0 and (out / "bench.md").is_file()


def test_bench_missing_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    artifact = tmp_path / "ov"
    assert main(["convert", "--target", "openvino", "--precision", "fp32", "--out", str(artifact)]) == 0
    monkeypatch.setitem(sys.modules, "openvino", None)
    capsys.readouterr()
    assert main(["bench", str(artifact), "--runs", "1", "--duration", "0.01"]) == 1
    assert "bitedge[openvino]" in capsys.readouterr().err


def test_bench_unknown_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "no-such-thing", "--runs", "1"]) == 2
    assert "no such file" in capsys.readouterr().err
