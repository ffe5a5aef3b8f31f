"""Building and running TensorRT engines: the only code here that needs ``tensorrt`` and an NVIDIA GPU.

Written against TensorRT's documented Python API for 10.x (strongly typed through the STRONGLY_TYPED
network flag) and 11.x (always strongly typed; the flag is ignored). No machine bitedge is developed or
tested on can run it: CI has no GPU and TensorRT cannot be installed there. It is therefore kept small,
and exercised only by tests marked ``gpu``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bitedge.artifacts.manifest import Manifest
from bitedge.errors import BadInputError, MissingRuntimeError
from bitedge.parity.metrics import Runner

HOW_TO = (
    "building a TensorRT engine needs an NVIDIA GPU and the tensorrt package: on the device that will run it "
    "(a Jetson, a GPU server), run `pip install 'bitedge[tensorrt]'` and then `bitedge build-engine DIR` there"
)


def engine_unavailable() -> str | None:
    """Why this machine cannot build engines, or None when it can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt package is not installed"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU is visible"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is missing"
    return None


def device() -> dict[str, str]:
    """TensorRT version, GPU name and compute capability: an engine runs only where these match."""
    import tensorrt as trt
    import torch

    major, minor = torch.cuda.get_device_capability()
    return {"tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


def build_engine(directory: Path) -> list[str]:
    """Build ``model.engine`` from the bundle's ONNX and build spec, reusing and updating the timing cache."""
    reason = engine_unavailable()
    if reason is not None:
        raise MissingRuntimeError(f"{reason}; {HOW_TO}")
    import tensorrt as trt

    spec = json.loads((directory / "build_spec.json").read_text())
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(1 << int(strongly_typed) if strongly_typed is not None else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(directory / spec["onnx"])):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BadInputError(f"TensorRT cannot parse the bundle's ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec["workspace_mib"] << 20)
    config.builder_optimization_level = spec["builder_optimization_level"]
    cache_path = directory / spec["timing_cache"]
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    i, b = spec["input"], spec["batch_profile"]
    shape = (i["channels"], i["height"], i["width"])
    profile.set_shape(i["name"], (b["min"], *shape), (b["opt"], *shape), (b["max"], *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BadInputError("TensorRT failed to build the engine; see its log above")
    (directory / spec["engine"]).write_bytes(bytes(serialized))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    (directory / "engine.json").write_text(json.dumps(device(), indent=2) + "\n")
    return [spec["engine"], spec["timing_cache"], "engine.json"]


def engine_runner(directory: Path, manifest: Manifest) -> Runner:
    """``batch -> logits`` through the TensorRT runtime; refuses an engine built for another GPU/version."""
    reason = engine_unavailable()
    if reason is not None:
        raise MissingRuntimeError(f"running the engine needs TensorRT and a GPU ({reason}); {HOW_TO}")
    import tensorrt as trt
    import torch

    built = json.loads((directory / "engine.json").read_text())
    here = device()
    if built != here:
        raise BadInputError(f"the engine was built for {built}, this machine is {here}; run bitedge build-engine again")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((directory / "model.engine").read_bytes())
    context = engine.create_execution_context()
    stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def run(pixels: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).cuda()
        context.set_input_shape("pixel_values", tuple(inputs.shape))
        outputs = torch.empty(tuple(context.get_tensor_shape("logits")), dtype=torch.float32, device="cuda")
        context.set_tensor_address("pixel_values", inputs.data_ptr())
        context.set_tensor_address("logits", outputs.data_ptr())
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return outputs.cpu().numpy()

    return run
