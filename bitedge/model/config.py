"""`BitConfig`: the architecture description of a BiT model, field-for-field compatible with transformers.

A ``config.json`` written by ``transformers.BitConfig.save_pretrained`` loads here unchanged, and one written
here loads in transformers. Unknown keys are kept (in ``extra``) and written back, so nothing a user put in a
config is lost. Values are checked once, here, so the model code can trust them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bitedge.errors import ConfigError
from bitedge.fileio import read_json_object, write_json

LAYER_TYPES = ("preactivation", "bottleneck")
PADDINGS = (None, "SAME")
ACTIVATIONS = ("relu", "gelu", "silu", "swish")
CONFIG_NAME = "config.json"

# Bounds that no real BiT comes near; past them a config is corrupt, not ambitious.
_MAX_DEPTH = 1024
_MAX_WIDTH = 1 << 16


@dataclass
class BitConfig:
    """Configuration of a BiT (ResNetV2 + GroupNorm + weight standardization) model.

    Fields and defaults are transformers' ``BitConfig`` (a BiT-R50x1 with a 2-way head); see DESIGN.md for
    their meaning. bitedge adds ``weight_standardization_eps``: 1e-8 for transformers and timm checkpoints,
    1e-10 for the original Google ``.npz`` ones.

    Note:
        As in transformers, ``width_factor`` widens the stages only. bitedge also sizes the final norm and the
        head from the widened last stage (transformers crashes there); to widen the stem, set
        ``embedding_size`` explicitly, as the presets do.
    """

    num_channels: int = 3
    embedding_size: int = 64
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    depths: list[int] = field(default_factory=lambda: [3, 4, 6, 3])
    layer_type: str = "preactivation"
    hidden_act: str = "relu"
    global_padding: str | None = None
    num_groups: int = 32
    drop_path_rate: float = 0.0
    embedding_dynamic_padding: bool = False
    output_stride: int = 32
    width_factor: int = 1
    num_labels: int = 2
    id2label: dict[int, str] = field(default_factory=dict)
    out_features: list[str] | None = None
    out_indices: list[int] | None = None
    output_hidden_states: bool = False
    weight_standardization_eps: float = 1e-8
    architectures: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hidden_sizes = _int_list("hidden_sizes", self.hidden_sizes, _MAX_WIDTH)
        self.depths = _int_list("depths", self.depths, _MAX_DEPTH)
        if len(self.depths) != len(self.hidden_sizes):
            raise ConfigError(
                f"config has {len(self.depths)} depths but {len(self.hidden_sizes)} hidden_sizes; "
                "give one depth and one hidden size per stage"
            )
        for name in ("num_channels", "embedding_size", "num_groups", "width_factor"):
            setattr(self, name, _positive_int(name, getattr(self, name), _MAX_WIDTH))
        self.output_stride = _positive_int("output_stride", self.output_stride, 1 << 10)
        if self.output_stride < 4 or self.output_stride & (self.output_stride - 1):
            raise ConfigError(f"output_stride must be a power of two >= 4, got {self.output_stride}")
        if self.layer_type not in LAYER_TYPES:
            raise ConfigError(f"layer_type {self.layer_type!r} is not one of {', '.join(LAYER_TYPES)}")
        if isinstance(self.global_padding, str):
            self.global_padding = self.global_padding.upper()
        if self.global_padding == "VALID":
            raise ConfigError(
                "global_padding 'VALID' cannot build a working BiT (unpadded 3x3 convs shrink the residual "
                "branch below its shortcut; transformers fails at run time); use null or 'SAME'"
            )
        if self.global_padding not in PADDINGS:
            raise ConfigError(f"global_padding {self.global_padding!r} must be null or 'SAME'")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported; use one of {ACTIVATIONS}")
        if not isinstance(self.drop_path_rate, int | float) or not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")
        eps = self.weight_standardization_eps
        if not isinstance(eps, int | float) or not (0.0 < eps < 1.0) or math.isnan(eps):
            raise ConfigError(f"weight_standardization_eps must be in (0, 1), got {eps!r}")
        self._init_labels()
        self._init_out_features()

    # ----------------------------------------------------------------------------------------- derived values
    @property
    def stage_names(self) -> list[str]:
        """``["stem", "stage1", ...]``: the feature names a backbone can return."""
        return ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]

    @property
    def label2id(self) -> dict[str, int]:
        return {label: idx for idx, label in self.id2label.items()}

    @property
    def labels(self) -> list[str]:
        """Class names in logit order."""
        return [self.id2label[i] for i in range(self.num_labels)]

    def _init_labels(self) -> None:
        if self.id2label:
            try:
                id2label = {int(k): str(v) for k, v in self.id2label.items()}
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"id2label keys must be integers: {exc}") from None
            if sorted(id2label) != list(range(len(id2label))):
                raise ConfigError("id2label keys must be 0..num_labels-1 with no gaps")
            self.id2label = id2label
            self.num_labels = len(id2label)
        else:
            self.num_labels = _non_negative_int("num_labels", self.num_labels)
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}

    def _init_out_features(self) -> None:
        names = self.stage_names
        if self.out_features is not None:
            unknown = [f for f in self.out_features if f not in names]
            if unknown:
                raise ConfigError(f"out_features {unknown} are not stage names; choose from {names}")
            indices = [names.index(f) for f in self.out_features]
            if self.out_indices is not None and list(self.out_indices) != indices:
                raise ConfigError(f"out_features {self.out_features} and out_indices {self.out_indices} disagree")
            self.out_indices = indices
        elif self.out_indices is not None:
            bad = [i for i in self.out_indices if not isinstance(i, int) or not -len(names) <= i < len(names)]
            if bad:
                raise ConfigError(f"out_indices {bad} are out of range for {len(names)} stages")
            self.out_indices = [i % len(names) for i in self.out_indices]
            self.out_features = [names[i] for i in self.out_indices]
        else:
            self.out_features, self.out_indices = [names[-1]], [len(names) - 1]

    # ------------------------------------------------------------------------------------------ (de)serialize
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BitConfig:
        """Build a config from a transformers-style dict; unknown keys go to ``extra``."""
        if not isinstance(data, dict):
            raise ConfigError("config must be a JSON object")
        model_type = data.get("model_type", "bit")
        if model_type != "bit":
            raise ConfigError(
                f"config.json describes a {model_type!r} model, not BiT (model_type 'bit'); "
                "point bitedge at a BiT checkpoint"
            )
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in known:
                kwargs[key] = value
            elif key not in ("model_type", "label2id", "stage_names", "transformers_version"):
                extra[key] = value
        if isinstance(kwargs.get("id2label"), dict):
            kwargs["num_labels"] = len(kwargs["id2label"])  # transformers stores the labels, not the count
        try:
            return cls(**kwargs, extra=extra)
        except TypeError as exc:  # a value of the wrong JSON type reached a comparison
            raise ConfigError(f"config.json has a value of the wrong type: {exc}") from None

    @classmethod
    def from_pretrained(cls, path: str | Path) -> BitConfig:
        """Read ``config.json`` from a directory (or the file itself)."""
        return cls.from_dict(read_json_object(path, CONFIG_NAME))

    def to_dict(self) -> dict[str, Any]:
        """A transformers-compatible dict (what ``config.json`` holds)."""
        out: dict[str, Any] = dict(self.extra)
        for f in fields(self):
            if f.name not in ("extra", "architectures", "num_labels"):
                out[f.name] = getattr(self, f.name)
        if self.architectures is not None:
            out["architectures"] = list(self.architectures)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["label2id"] = self.label2id
        out["model_type"] = "bit"
        out["stage_names"] = self.stage_names
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` into ``directory`` (created if needed); returns the file path."""
        return write_json(directory, CONFIG_NAME, self.to_dict())


def _positive_int(name: str, value: Any, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
        raise ConfigError(f"{name} must be an integer in 1..{limit}, got {value!r}")
    return value


def _non_negative_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _int_list(name: str, value: Any, limit: int) -> list[int]:
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(f"{name} must be a non-empty list of integers, got {value!r}")
    return [_positive_int(f"{name}[{i}]", v, limit) for i, v in enumerate(value)]
