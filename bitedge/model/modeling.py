"""The reference BiT models: `BitModel`, `BitForImageClassification` and `BitBackbone`.

Same module tree, parameter names, outputs and numerics as transformers' classes of the same names, without
depending on transformers: a transformers state dict loads here as is. This float model is what every
converted artifact is measured against.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bitedge.model.blocks import BitEmbeddings, BitStage
from bitedge.model.checkpoints import CheckpointSource
from bitedge.model.config import BitConfig
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.layers import BitGroupNormActivation, make_div

WEIGHTS_NAME = "model.safetensors"


@dataclass
class _Output:
    """Base of the output records: attribute access, plus ``out[0]`` / ``to_tuple()`` like transformers."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v for v in astuple(self) if v is not None)

    def __getitem__(self, index: int) -> Any:
        return self.to_tuple()[index]


@dataclass
class BitModelOutput(_Output):
    last_hidden_state: Tensor  # (N, C, h, w) after the final norm
    pooler_output: Tensor  # (N, C, 1, 1)
    hidden_states: tuple[Tensor, ...] | None = None  # stem output, then each stage's output


@dataclass
class BitClassifierOutput(_Output):
    loss: Tensor | None
    logits: Tensor  # (N, num_labels)
    hidden_states: tuple[Tensor, ...] | None = None


@dataclass
class BitBackboneOutput(_Output):
    feature_maps: tuple[Tensor, ...]
    hidden_states: tuple[Tensor, ...] | None = None


def stage_widths(config: BitConfig) -> list[int]:
    """Output channels of each stage (transformers widens only these by ``width_factor``)."""
    return [make_div(h * config.width_factor) for h in config.hidden_sizes]


class BitEncoder(nn.Module):
    """The stages. Past ``output_stride``, strides turn into dilation (semantic-segmentation style)."""

    def __init__(self, config: BitConfig) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        # Drop-path rate rises linearly over all units (in float32, as transformers); plain numpy so this also
        # runs under torch.device("meta").
        flat = np.linspace(0, config.drop_path_rate, sum(config.depths)).astype(np.float32).tolist()
        bounds = np.cumsum([0, *config.depths]).tolist()
        rates = [flat[a:b] for a, b in itertools.pairwise(bounds)]
        cin, current_stride, dilation = config.embedding_size, 4, 1
        for idx, (depth, cout) in enumerate(zip(config.depths, stage_widths(config), strict=True)):
            stride = 1 if idx == 0 else 2
            if current_stride >= config.output_stride:
                dilation, stride = dilation * stride, 1
            self.stages.append(
                BitStage(config, cin, cout, stride=stride, dilation=dilation, depth=depth, drop_paths=rates[idx])
            )
            cin, current_stride = cout, current_stride * stride

    def forward(self, x: Tensor, *, output_hidden_states: bool = False) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        hidden: list[Tensor] = []
        for stage in self.stages:
            hidden.append(x)
            x = stage(x)
        hidden.append(x)
        return x, (tuple(hidden) if output_hidden_states else None)


class BitPreTrainedModel(nn.Module):
    """Shared plumbing: config, weight init, ``from_pretrained`` / ``save_pretrained``.

    Constructors leave PyTorch's default initialization (weights are usually loaded right after);
    :meth:`init_weights` gives transformers' scheme, seeded, for presets and tests.
    """

    source: CheckpointSource | None = None  # set by load_model
    image_processor: BitImageProcessor | None = None  # the checkpoint's preprocessing, when it has one

    def __init__(self, config: BitConfig) -> None:
        super().__init__()
        self.config = config

    def init_weights(self, seed: int | None = None) -> None:
        """transformers' init (Kaiming-normal convs, default-style linear); seeded when ``seed`` is given."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=gen)
                elif isinstance(module, nn.Linear):
                    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=gen)
                    bound = 1 / math.sqrt(module.in_features) if module.in_features > 0 else 0
                    nn.init.uniform_(module.bias, -bound, bound, generator=gen)
                elif isinstance(module, nn.GroupNorm):
                    nn.init.ones_(module.weight)
                    nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Any:
        """Load any supported checkpoint (see :func:`bitedge.load_model`) into this class."""
        from bitedge.model.loading import load_model

        return load_model(path, model_class=cls)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (a directory transformers can load)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(directory)
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        return directory


class BitModel(BitPreTrainedModel):
    """Stem + stages + (pre-activation only) final GN+ReLU + global average pool."""

    def __init__(self, config: BitConfig) -> None:
        super().__init__(config)
        self.embedder = BitEmbeddings(config)
        self.encoder = BitEncoder(config)
        width = stage_widths(config)[-1]
        preact = config.layer_type == "preactivation"
        self.norm: nn.Module = (
            BitGroupNormActivation(config.num_groups, width, act=config.hidden_act) if preact else nn.Identity()
        )
        self.pooler = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, pixel_values: Tensor, output_hidden_states: bool | None = None) -> BitModelOutput:
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        x, hidden = self.encoder(self.embedder(pixel_values), output_hidden_states=output_hidden_states)
        x = self.norm(x)
        return BitModelOutput(last_hidden_state=x, pooler_output=self.pooler(x), hidden_states=hidden)


class BitForImageClassification(BitPreTrainedModel):
    """`BitModel` + flatten + linear head (``classifier.1``), or no head when ``num_labels`` is 0."""

    def __init__(self, config: BitConfig) -> None:
        super().__init__(config)
        self.bit = BitModel(config)
        width = stage_widths(config)[-1]
        head: nn.Module = nn.Linear(width, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.classifier = nn.Sequential(nn.Flatten(), head)

    def forward(
        self, pixel_values: Tensor, labels: Tensor | None = None, output_hidden_states: bool | None = None
    ) -> BitClassifierOutput:
        out = self.bit(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.pooler_output)  # (N, num_labels)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return BitClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class BitBackbone(BitPreTrainedModel):
    """Feature maps of the stages named in ``config.out_features`` (``"stem"``, ``"stage1"``, ...)."""

    def __init__(self, config: BitConfig) -> None:
        super().__init__(config)
        self.bit = BitModel(config)
        self.num_features = [config.embedding_size, *stage_widths(config)]

    def forward(self, pixel_values: Tensor, output_hidden_states: bool | None = None) -> BitBackboneOutput:
        hidden = self.bit(pixel_values, output_hidden_states=True).hidden_states or ()
        wanted = set(self.config.out_features or [])
        maps = tuple(h for h, name in zip(hidden, self.config.stage_names, strict=True) if name in wanted)
        want_hidden = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return BitBackboneOutput(feature_maps=maps, hidden_states=hidden if want_hidden else None)


MODEL_CLASSES: dict[str, type[BitPreTrainedModel]] = {
    cls.__name__: cls for cls in (BitModel, BitForImageClassification, BitBackbone)
}
