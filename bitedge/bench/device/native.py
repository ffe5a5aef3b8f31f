"""Latency from the runtimes' own benchmark tools, read into bitedge's device-results schema.

A bundle's README gives the native command of its runtime; what that tool prints (or writes) comes back
through ``bitedge bench --import``, latency only (a native tool runs random or fixed inputs and returns no
outputs, so nothing is re-gated):

- OpenVINO ``benchmark_app`` (its console output, or ``-json_stats``' ``benchmark_report.json``);
- TensorRT ``trtexec`` (the "=== Performance summary ===" lines; end-to-end ``Latency``, the GPU compute time
  kept beside it);
- ExecuTorch's Android benchmark app, Minibench (its JSON list of metrics: average, trimmed mean, load time,
  PSS).

Each parser returns the parts of a results record it can fill; ``results`` completes and checks it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bitedge.errors import BadInputError

NUMBER = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"


def detect(text: str) -> str | None:
    """Which tool wrote ``text``: "benchmark_app", "trtexec", "minibench", or None."""
    stripped = text.lstrip()
    if stripped.startswith("[") and '"benchmarkModel"' in text:
        return "minibench"
    if stripped.startswith("{") and '"execution_results"' in text:
        return "benchmark_app"
    if "=== Performance summary ===" in text and "Latency: min =" in text:
        return "trtexec"
    if "[Step 11/11]" in text and "Median:" in text:
        return "benchmark_app"
    return None


def parse(tool: str, text: str, where: str) -> dict[str, Any]:
    """``{"source", "latency_ms", "runtime", ...}`` from a native tool's output (BadInputError if it is not)."""
    try:
        record = {"benchmark_app": _benchmark_app, "trtexec": _trtexec, "minibench": _minibench}[tool](text)
    except (KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:
        raise BadInputError(f"{where}: not {tool} output bitedge can read ({type(exc).__name__}: {exc})") from None
    return {"source": tool, **record}


def _benchmark_app(text: str) -> dict[str, Any]:
    if text.lstrip().startswith("{"):
        results = json.loads(text)["execution_results"]
        latency = {"median": float(results["latency (ms)"]), "mean": float(results["avg latency"]),
                   "min": float(results["min latency"]), "max": float(results["max latency"]),
                   "runs": int(results["total number of iterations"])}  # fmt: skip
        first = float(results["first inference time (ms)"])
        load = (float(results["read model time (ms)"]) + float(results["compile model time (ms)"])) / 1e3
        return {"latency_ms": latency, "first_inference_ms": first, "load_seconds": load,
                "runtime": {"name": "openvino benchmark_app"}}  # fmt: skip

    def value(label: str) -> float:
        match = re.search(rf"{label}:?\s+{NUMBER}\s*ms", text)
        if match is None:
            raise ValueError(f"no {label!r} line")
        return float(match[1])

    count = re.search(r"Count:\s+([0-9]+) iterations", text)
    stats: dict[str, Any] = {"median": value("Median"), "mean": value("Average"), "min": value("Min"),
                             "max": value("Max"), "runs": int(count[1]) if count else None}  # fmt: skip
    first_line = re.search(rf"First inference took {NUMBER} ms", text)
    version = re.search(r"OpenVINO:\s*\n?.*?Build[ .]*([0-9][^\s]*)", text)
    runtime = {"name": "openvino benchmark_app", "version": version[1] if version else None}
    first_ms = float(first_line[1]) if first_line else None
    return {"latency_ms": stats, "first_inference_ms": first_ms, "runtime": runtime}


def _trtexec(text: str) -> dict[str, Any]:
    summary = text[text.index("=== Performance summary ===") :]

    def stats(label: str) -> dict[str, float]:
        line = re.search(rf"\] {label}: (min = .*)", summary) or re.search(rf"^{label}: (min = .*)", summary, re.M)
        if line is None:
            raise ValueError(f"no {label!r} line in the performance summary")
        pairs = dict(re.findall(rf"(min|max|mean|median|percentile\([0-9.]+%\)) =? ?{NUMBER} ms", line[1]))
        return {k: float(v) for k, v in pairs.items()}

    end_to_end, compute = stats("Latency"), stats("GPU Compute Time")
    latency = {"median": end_to_end["median"], "mean": end_to_end["mean"], "min": end_to_end["min"],
               "max": end_to_end["max"], "p90": end_to_end.get("percentile(90%)"),
               "p99": end_to_end.get("percentile(99%)")}  # fmt: skip
    version = re.search(r"TensorRT version: ([0-9][^\s]*)", text)
    device = re.search(r"Selected Device: (.+)", text)
    return {"latency_ms": latency, "gpu_compute_ms": compute,
            "runtime": {"name": "tensorrt trtexec", "version": version[1] if version else None},
            "device": {"gpu": device[1].strip()} if device else {}}  # fmt: skip


def _minibench(text: str) -> dict[str, Any]:
    metrics = json.loads(text)
    values = {m["metric"]: float(m["actualValue"]) for m in metrics}
    if values.get("load_status", 0.0) != 0.0:
        raise ValueError(f"the program did not load on the device (load_status {values['load_status']:.0f})")
    info = metrics[0].get("deviceInfo", {})
    model = metrics[0]["benchmarkModel"]
    latency = {"mean": values["avg_inference_latency(ms)"], "trimmed_mean": values["trimmean_inference_latency(ms)"]}
    return {"latency_ms": latency, "load_seconds": values.get("model_load_time(ms)", 0.0) / 1e3,
            "memory_mib": values.get("ram_pss_usage(mb)"),
            "runtime": {"name": "executorch minibench", "backend": model.get("backend")},
            "device": {"device": info.get("device"), "model": info.get("arch"), "os": info.get("os")}}  # fmt: skip
