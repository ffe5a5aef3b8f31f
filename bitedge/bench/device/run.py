"""bitedge device benchmark runner: times one artifact on this device, and records its outputs on real images.

Copied into every bundle ``bitedge bench --bundle`` writes. It needs Python 3.9+, numpy and the artifact's own
runtime (onnxruntime, openvino, executorch, or coremltools on macOS), never bitedge or torch:

    python run.py                   # the protocol in bundle.json; writes results.json beside this file
    python run.py --threads 4 --out /sdcard/results.json

The protocol (bitedge's, DESIGN.md): warm-up of at least 10 runs and 1 s, then at least 50 timed runs and 3 s,
one batch back to back. results.json holds the latency statistics (median, p90, p99, trimmed mean, mean, min,
every sample), the load time and first inference, peak RSS, the device, OS and runtime versions, and the
artifact's outputs on the bundle's real inputs, which ``bitedge bench --import results.json`` checks against
the float model. Nothing is sent anywhere.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_FORMAT = "bitedge-device-results-1"
HERE = Path(__file__).resolve().parent
Run = Callable[[np.ndarray], Any]  # one batch, as the artifact takes it -> its logits


def load(bundle: dict[str, Any], threads: int | None, precision: str | None) -> tuple[Run, dict[str, Any]]:
    """(run: batch -> logits, runtime record) for the bundle's artifact in its own runtime."""
    runtime, model = bundle["runtime"], str(HERE / bundle["model"])
    if runtime == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return (lambda x: session.run(None, {name: x})[0]), {
            "name": "onnxruntime",
            "version": ort.__version__,
            "provider": "CPUExecutionProvider",
        }
    if runtime == "openvino":
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, "CPU", config)
        ran = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        return (lambda x: compiled(x)[0]), {
            "name": "openvino",
            "version": ov.__version__,
            "device": "CPU",
            "inference_precision": ran,
            "performance_hint": "LATENCY",
        }
    if runtime == "executorch":
        import torch  # executorch's Python runtime takes torch tensors (it installs torch itself)
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(model).load_method("forward")
        from importlib.metadata import version

        return (lambda x: method.execute([torch.from_numpy(x)])[0].numpy()), {
            "name": "executorch",
            "version": version("executorch"),
            "backend": "XNNPACK",
        }
    if runtime == "coreml":
        if platform.system() != "Darwin":
            raise SystemExit("Core ML runs on macOS and iOS only; on iOS use the Swift snippet in README.md")
        import coremltools as ct
        from PIL import Image

        mlmodel = ct.models.MLModel(model, compute_units=ct.ComputeUnit[precision or "ALL"])
        spec_input = mlmodel.get_spec().description.input[0].name

        def predict(x: np.ndarray) -> np.ndarray:  # log-probabilities, in label order (the output is a softmax)
            frames = [Image.fromarray(np.uint8(image.transpose(1, 2, 0).round().clip(0, 255))) for image in x]
            outs = [mlmodel.predict({spec_input: frame})[bundle["output"]] for frame in frames]
            probabilities = np.asarray([[o[label] for label in bundle["labels"]] for o in outs], np.float64)
            return np.log(np.maximum(probabilities, 1e-45)).astype(np.float32)

        return predict, {"name": "coremltools", "version": ct.__version__, "compute_units": precision or "ALL"}
    raise SystemExit(f"{runtime}: this runner cannot run it; see README.md for the native command")


def feed(bundle: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The artifact's input from the bundle's (N, 3, H, W) float32: uint8 NHWC for OpenVINO raw-pixel IRs."""
    if bundle["input"].get("uint8_nhwc"):
        return np.ascontiguousarray(x.round().clip(0, 255).astype(np.uint8).transpose(0, 2, 3, 1))
    return np.ascontiguousarray(x, np.float32)


def timed(run: Run, x: np.ndarray, protocol: dict[str, Any]) -> list[float]:
    """Warm-up, then back-to-back timed calls until both minimums are met; milliseconds per call."""
    start, count = time.perf_counter(), 0
    while count < protocol["warmup_runs"] or time.perf_counter() - start < protocol["warmup_seconds"]:
        run(x)
        count += 1
    samples: list[float] = []
    while len(samples) < protocol["min_runs"] or sum(samples) < protocol["min_seconds"] * 1e3:
        begin = time.perf_counter()
        run(x)
        samples.append((time.perf_counter() - begin) * 1e3)
    return samples


def statistics(samples: list[float], batch: int) -> dict[str, Any]:
    array = np.sort(np.asarray(samples))
    cut = len(array) // 10  # the trimmed mean drops the fastest and slowest tenth
    median = float(np.median(array))
    return {"runs": len(array), "median": median, "p90": float(np.percentile(array, 90)),
            "p99": float(np.percentile(array, 99)), "trimmed_mean": float(array[cut : len(array) - cut].mean()),
            "mean": float(array.mean()), "min": float(array[0]), "max": float(array[-1]),
            "throughput": batch / (median / 1e3)}  # fmt: skip


def device() -> dict[str, Any]:
    cpu, cores = platform.processor() or platform.machine(), os.cpu_count()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Hardware", "Model") and ":" in line:
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "platform": platform.platform(), "cpu": cpu, "cores": cores,
            "python": platform.python_version(), "hostname": platform.node()}  # fmt: skip


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


def outputs(run: Run, bundle: dict[str, Any], inputs: np.ndarray) -> np.ndarray:
    """The artifact's logits for every input image, a batch of the bundle's size at a time (the last padded)."""
    batch, rows = bundle["batch"], []
    for start in range(0, len(inputs), batch):
        chunk = inputs[start : start + batch]
        padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        rows.append(np.asarray(run(feed(bundle, padded)), np.float32).reshape(batch, -1)[: len(chunk)])
    return np.concatenate(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Time this bundle's artifact on this device (bitedge protocol).")
    parser.add_argument("--threads", type=int, help="runtime threads (default: the bundle's, else the runtime's)")
    parser.add_argument(
        "--precision",
        help="OpenVINO inference precision (f32, bf16, f16) or Core ML compute "
        "units (CPU_ONLY, CPU_AND_GPU, ALL); default: the runtime's own choice, recorded",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results.json", help="where to write the results")
    for name in ("warmup_runs", "min_runs"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    for name in ("warmup_seconds", "min_seconds"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float)
    args = parser.parse_args(argv)
    bundle: dict[str, Any] = json.loads((HERE / "bundle.json").read_text())
    protocol = {**bundle["protocol"], **{k: v for k, v in vars(args).items() if k in bundle["protocol"] and v}}
    threads = args.threads or bundle.get("threads")
    inputs = np.load(HERE / bundle["inputs"], allow_pickle=False)
    began = time.perf_counter()
    run, runtime = load(bundle, threads, args.precision)
    loaded = time.perf_counter()
    first_batch = feed(bundle, inputs[: bundle["batch"]])
    run(first_batch)
    first = (time.perf_counter() - loaded) * 1e3
    samples = timed(run, first_batch, protocol)
    logits = outputs(run, bundle, inputs)
    results = {
        "format": RESULTS_FORMAT, "source": "run.py",
        "bundle": {"id": bundle["id"], "sha256": hashlib.sha256((HERE / "bundle.json").read_bytes()).hexdigest()},
        "artifact": bundle["artifact"], "device": device(), "runtime": runtime,
        "batch": bundle["batch"], "threads": threads, "protocol": protocol,
        "load_seconds": loaded - began, "first_inference_ms": first,
        "latency_ms": statistics(samples, bundle["batch"]), "samples_ms": samples, "peak_rss_mib": peak_rss_mib(),
        "outputs": {"shape": list(logits.shape), "dtype": "float32",
                    "base64": base64.b64encode(logits.astype("<f4").tobytes()).decode("ascii")},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017 (Python 3.9 devices)
    }  # fmt: skip
    args.out.write_text(json.dumps(results, indent=1))
    stats = results["latency_ms"]
    print(f"{bundle['artifact']['name']} on {results['device']['cpu']}: median {stats['median']:.2f} ms, "
          f"p90 {stats['p90']:.2f} ms ({stats['runs']} runs); results: {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
