"""What `bitedge inspect` reports about a model: architecture, parameters, MACs at a resolution, provenance.

Counting runs on PyTorch's ``meta`` device: shapes propagate, nothing is allocated, so an R152x4 (936 M
parameters) is summarised instantly and without its 3.7 GB of weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bitedge.model.config import BitConfig
from bitedge.model.modeling import BitForImageClassification, BitPreTrainedModel, stage_widths


@dataclass(frozen=True)
class ModelSummary:
    name: str
    layer_type: str
    depths: list[int]
    stem_width: int
    stage_widths: list[int]
    num_labels: int
    parameters: int
    resolution: int
    macs: int  # multiply-accumulates of convs and the head for one image; norms and pooling excluded
    source_format: str | None
    sha256: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable report, one fact per line."""
        rows = [
            ("model", self.name),
            ("layer type", self.layer_type),
            ("depths", " ".join(map(str, self.depths))),
            ("widths", f"stem {self.stem_width}, stages {' '.join(map(str, self.stage_widths))}"),
            ("labels", str(self.num_labels)),
            ("parameters", f"{self.parameters:,} ({self.parameters * 4 / 2**20:,.1f} MiB in fp32)"),
            (f"MACs @ {self.resolution}px", f"{self.macs:,} ({self.macs / 1e9:.2f} G)"),
            ("source format", self.source_format or "-"),
            ("sha256", self.sha256 or "-"),
        ]
        return [f"{key:<16} {value}" for key, value in rows]


def count_macs(
    config: BitConfig,
    resolution: int | tuple[int, int],
    model_class: type[BitPreTrainedModel] = BitForImageClassification,
) -> int:
    """MACs of one forward pass at ``resolution`` (square, or (H, W)), counted on the meta device."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    with torch.device("meta"):
        model = model_class(config)
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k_h, k_w = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * k_h * k_w
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.empty(1, config.num_channels, height, width, device="meta"))
    return total


def count_parameters(config: BitConfig, model_class: type[BitPreTrainedModel] = BitForImageClassification) -> int:
    with torch.device("meta"):
        return model_class(config).num_parameters()


def summarize(name: str, model_or_config: BitPreTrainedModel | BitConfig, resolution: int) -> ModelSummary:
    """Summary of a loaded model, or of a bare config (then nothing is allocated)."""
    model_class: type[BitPreTrainedModel]
    if isinstance(model_or_config, BitConfig):
        config, model_class, source = model_or_config, BitForImageClassification, None
        parameters = count_parameters(config)
    else:
        config, model_class, source = model_or_config.config, type(model_or_config), model_or_config.source
        parameters = model_or_config.num_parameters()
    return ModelSummary(
        name=name,
        layer_type=config.layer_type,
        depths=list(config.depths),
        stem_width=config.embedding_size,
        stage_widths=stage_widths(config),
        num_labels=config.num_labels,
        parameters=parameters,
        resolution=resolution,
        macs=count_macs(config, resolution, model_class),
        source_format=source.format if source else None,
        sha256=source.sha256 if source else None,
    )
