"""Running a Core ML package (helpers of ``coreml.py``): bitedge's emulator of its ML program on any
machine, and ``MLModel.predict`` on macOS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bitedge.artifacts.manifest import Manifest
from bitedge.converters._coreml_emulator import Emulator
from bitedge.converters._coreml_package import MLPackage
from bitedge.converters.base import fixed_batch
from bitedge.converters.coreml import PACKAGE
from bitedge.errors import MissingRuntimeError
from bitedge.parity.metrics import Runner


class EmulatedRunner:
    """The saved package run by the emulator: ``(N, 3, H, W) -> logits (N, K)``, one program batch at a time.

    ``notes`` collects every op that overflowed fp16, for the parity report.
    """

    def __init__(self, path: Path, *, batch: int, fp16: bool = True) -> None:
        self.package = MLPackage(path)
        self.emulator = Emulator(self.package, fp16=fp16)
        (self.input_name,) = self.emulator.inputs
        self.logits_name = logits_variable(self.package)
        self.batch = batch
        self.notes: list[str] = []

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return fixed_batch(self._run, self.batch)(pixels)

    def _run(self, pixels: np.ndarray) -> np.ndarray:
        execution = self.emulator.run({self.input_name: pixels}, keep={self.logits_name})
        for overflow in execution.overflows:
            note = f"fp16 overflow (inf/NaN from finite inputs) in {overflow}"
            if note not in self.notes:
                self.notes.append(note)
        logits: np.ndarray = execution.values[self.logits_name]
        return logits.reshape(len(pixels), -1).astype(np.float32)


def logits_variable(package: MLPackage) -> str:
    """The variable the classifier's softmax reads: the program's logits."""
    producers = {out.name: op for op in package.block.operations for out in op.outputs}
    for op in package.block.operations:
        if op.type == "classify":
            name = op.inputs["probabilities"].arguments[0].name
            while producers[name].type == "cast":  # fp16 programs cast back to fp32 before classify
                name = producers[name].inputs["x"].arguments[0].name
            if producers[name].type == "softmax":
                return str(producers[name].inputs["x"].arguments[0].name)
            return str(name)
    return str(package.block.outputs[0])


def mlmodel_runner(directory: Path, manifest: Manifest, units: str) -> Runner:
    """macOS only: the package run by Core ML itself; returns log-probabilities (the program's output)."""
    try:
        import coremltools as ct
        from PIL import Image
    except ImportError as exc:
        raise MissingRuntimeError(f"Core ML prediction needs coremltools ({exc})") from None
    model = ct.models.MLModel(str(directory / PACKAGE), compute_units=getattr(ct.ComputeUnit, units))
    name, labels = manifest.input.name, manifest.labels
    image = manifest.input.normalization != "caller"

    def run(pixels: np.ndarray) -> np.ndarray:
        rows = []
        for sample in pixels:
            value: Any = sample[None]
            if image:
                value = Image.fromarray(sample.transpose(1, 2, 0).round().clip(0, 255).astype(np.uint8))
            probs = model.predict({name: value})["classLabel_probs"]
            rows.append(np.log(np.maximum([probs[label] for label in labels], 1e-30)))
        return np.asarray(rows, dtype=np.float32)

    return run
