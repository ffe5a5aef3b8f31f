"""An outside target, the way another package ships one: TorchScript (``model.pt``), run by ``torch.jit``.

It is not in bitedge/converters/: it registers through the entry-point group ``bitedge.converters``
(``torchscript = "bitedge_torchscript:TorchScriptConverter"``). docs/design.md walks through it line by line.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bitedge.artifacts.manifest import Manifest
from bitedge.converters.base import ConvertedFiles, Converter, ExportSpec, TargetOptions, keep_weights, option
from bitedge.converters.registry import register
from bitedge.parity.metrics import Runner
from bitedge.precisions import Precision

if TYPE_CHECKING:
    from torch import nn

MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class TorchScriptOptions(TargetOptions):
    # (torch.jit.optimize_for_inference would be next, but its output fails to load in torch 2.13)
    freeze: bool = field(default=False, metadata=option("freeze the module: weights become constants"))


@register
class TorchScriptConverter(Converter):
    name = "torchscript"
    description = "model.pt (TorchScript), run by torch.jit"
    precisions = (Precision.FP32,)
    extra = "torchscript"
    install = "pip install bitedge-torchscript"
    modules = ("torch",)
    Options = TorchScriptOptions

    def convert(
        self,
        deploy: nn.Module,
        directory: Path,
        *,
        precision: Precision,
        spec: ExportSpec,
        release_weights: Callable[[], None] = keep_weights,
    ) -> ConvertedFiles:
        import torch

        options = spec.options if isinstance(spec.options, TorchScriptOptions) else TorchScriptOptions()
        example = torch.zeros(spec.batch or 1, 3, *spec.input_size)  # (N, 3, H, W)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input check traces as a constant
            module = torch.jit.trace(deploy.eval(), example, check_trace=False)
            if options.freeze:
                module = torch.jit.freeze(module)
        torch.jit.save(module, str(directory / MODEL_FILE))
        release_weights()  # the saved module holds its own copy
        return ConvertedFiles([MODEL_FILE])

    def load_runner(self, directory: Path, manifest: Manifest, *, threads: int | None = None) -> Runner:
        import torch

        module = torch.jit.load(str(directory / MODEL_FILE))

        def run(pixels: np.ndarray) -> np.ndarray:  # (N, 3, H, W) -> (N, K)
            with torch.no_grad():
                logits: np.ndarray = module(torch.from_numpy(pixels)).numpy()
            return logits

        return run
