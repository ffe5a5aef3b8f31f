"""`load_model`: one entry point for every checkpoint format bitedge reads.

    transformers directory   config.json + model.safetensors | pytorch_model.bin (sharded too)
    timm state dict          resnetv2_*_bit as .safetensors / .pth / .bin (architecture read off the shapes)
    original BiT .npz        Google's release (HWIO kernels, ``resnet/...`` keys, weight-std eps 1e-10)
    preset name              e.g. ``bit-m-r50x1`` (architecture only, seeded random weights)

Every format is renamed to transformers' names, checked key by key and shape by shape against the model,
and loaded strictly. The model records where it came from (``model.source``, with the sha256 of the
weights) and, when the checkpoint has one, its preprocessing (``model.image_processor``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bitedge.errors import CheckpointError, ConfigError
from bitedge.fileio import read_json_object
from bitedge.hashing import sha256_file
from bitedge.model.checkpoints import CheckpointSource
from bitedge.model.checkpoints.infer import HEAD_KEY, infer_config
from bitedge.model.checkpoints.io import (
    PICKLE_SUFFIXES,
    StateDict,
    check_finite,
    read_npz,
    read_pickle,
    read_safetensors,
)
from bitedge.model.checkpoints.keymaps import looks_like_timm, npz_to_transformers, timm_to_transformers
from bitedge.model.config import CONFIG_NAME, BitConfig
from bitedge.model.demo import DEMO_DIR, DEMO_MODEL
from bitedge.model.image_processor import PROCESSOR_NAME, BitImageProcessor
from bitedge.model.modeling import MODEL_CLASSES, BitForImageClassification, BitModel, BitPreTrainedModel
from bitedge.model.presets import PRESETS

NPZ_WS_EPS = 1e-10  # the original Google code standardizes with this eps
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def load_model(
    source: str | Path,
    *,
    model_class: type[BitPreTrainedModel] | None = None,
    config: BitConfig | None = None,
    seed: int = 0,
) -> Any:
    """Load a BiT model from any supported checkpoint or preset name, in eval mode.

    Args:
        source: a transformers directory, a timm/transformers state-dict file, an original ``.npz``, a
            preset name (see ``bitedge.model.presets.PRESETS``), or ``"bitedge/demo"``, the bundled trained model.
        model_class: ``BitForImageClassification`` (default), ``BitModel`` or ``BitBackbone``; for a
            transformers directory the default is the class its config names.
        config: overrides the checkpoint's config (or the one inferred from tensor shapes).
        seed: weight-init seed for presets.

    Raises:
        CheckpointError: unreadable file, unsafe pickle, non-BiT tensors, missing/unexpected keys, shape
            mismatches, NaN/inf weights.
    """
    path = DEMO_DIR if str(source) == DEMO_MODEL else Path(source)
    if not path.exists():
        return _load_preset(str(source), model_class, config, seed)
    processor = None
    config_file = None  # where the config came from, to name it when the weights do not fit
    if path.is_dir():
        tensors, files = _read_transformers_dir(path)
        if config is None:
            config, config_file = BitConfig.from_pretrained(path), path / CONFIG_NAME
        fmt = "transformers"
        if (path / PROCESSOR_NAME).is_file():
            processor = BitImageProcessor.from_pretrained(path)
        if model_class is None and config.architectures:
            model_class = MODEL_CLASSES.get(config.architectures[0])
    else:
        tensors, fmt = _read_file(path)
        files = [path]
        if config is None:
            # a config.json beside the file describes it (GroupNorm groups, labels, ...: what shapes cannot tell)
            config = _config_beside(path, tensors)
            config_file = path.parent / CONFIG_NAME if config is not None else None
        if config is None:
            overrides = {"weight_standardization_eps": NPZ_WS_EPS} if fmt == "npz" else {}
            config = infer_config(tensors, path, **overrides)
        if (path.parent / PROCESSOR_NAME).is_file():
            processor = BitImageProcessor.from_pretrained(path.parent)
    check_finite(tensors, path)
    model = (model_class or BitForImageClassification)(config)
    _load_strict(model, tensors, path, config_file)
    model.eval()
    model.source = CheckpointSource(str(path.resolve()), fmt, _sha256(files))
    model.image_processor = processor
    return model


def check_source(source: str | Path) -> None:
    """Refuse, cheaply (no reading), a source that is neither the demo, an existing path nor a preset name."""
    if str(source) != DEMO_MODEL and not Path(source).exists() and str(source) not in PRESETS:
        raise CheckpointError(f"{source}: no such file, directory or preset name; presets are {', '.join(PRESETS)}")


def _load_preset(name: str, model_class: type[BitPreTrainedModel] | None, config: BitConfig | None, seed: int) -> Any:
    check_source(name)
    preset = PRESETS[name]
    model = (model_class or BitForImageClassification)(config or preset.config())
    model.init_weights(seed)
    model.eval()
    model.source = CheckpointSource(name, "preset", None)
    model.image_processor = preset.image_processor()
    return model


def _read_transformers_dir(path: Path) -> tuple[StateDict, list[Path]]:
    name = next((n for n in _WEIGHT_FILES if (path / n).is_file()), None)
    if name is None:
        raise CheckpointError(f"{path}: no weights found; expected one of {', '.join(_WEIGHT_FILES)}")
    if not name.endswith(".index.json"):
        file = path / name
        return (read_safetensors(file) if name.endswith(".safetensors") else read_pickle(file)), [file]
    try:
        shards = sorted(set(json.loads((path / name).read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path / name}: not a valid shard index ({exc})") from None
    tensors: StateDict = {}
    for shard in shards:
        file = path / shard
        if not file.is_file():
            raise CheckpointError(f"{path}: shard {shard} listed in {name} is missing")
        part = read_safetensors(file) if shard.endswith(".safetensors") else read_pickle(file)
        shadowed = sorted(set(part) & set(tensors))
        if shadowed:  # which copy would win is an accident of file order: refuse rather than guess
            raise CheckpointError(
                f"{file}: {len(shadowed)} tensors also appear in an earlier shard (e.g. {shadowed[0]}); "
                "a checkpoint must hold each tensor once — re-save it"
            )
        tensors.update(part)
    return tensors, [path / s for s in shards]


def _read_file(path: Path) -> tuple[StateDict, str]:
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return npz_to_transformers(read_npz(path), path), "npz"
    if suffix == ".safetensors":
        tensors = read_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        tensors = read_pickle(path)
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint type {suffix!r}; use a transformers directory, .safetensors, "
            f".pth/.bin, .npz, or a preset name"
        )
    if looks_like_timm(tensors):
        return timm_to_transformers(tensors, path), "timm"
    if any(k.startswith(("bit.", "embedder.")) for k in tensors):
        return tensors, "state-dict"
    raise CheckpointError(
        f"{path}: does not look like a BiT checkpoint (first keys: {', '.join(list(tensors)[:3])}); "
        "expected timm resnetv2_*_bit or transformers Bit* tensor names"
    )


def _config_beside(path: Path, tensors: StateDict) -> BitConfig | None:
    """The transformers BiT config in ``config.json`` beside a weights file; None when there is none (or it is
    timm's, which describes the architecture by name and is checked against the head instead)."""
    file = path.parent / CONFIG_NAME
    if not file.is_file():
        return None
    data = read_json_object(file, CONFIG_NAME)
    if "model_type" in data:
        return BitConfig.from_dict(data)  # refuses a model_type other than "bit", naming it
    classes = data.get("num_classes")
    if "architecture" in data:  # timm's config.json: the architecture is read off the tensors; check the head
        head = tensors.get(HEAD_KEY)
        if isinstance(classes, int) and head is not None and classes != head.shape[0]:
            raise CheckpointError(
                f"{file} says num_classes {classes} but {path} has a {head.shape[0]}-way head; they do not belong "
                "together: pass the matching config, or move config.json away"
            )
        return None
    raise ConfigError(
        f"{file} sits beside {path.name} but is not a transformers BiT config (no model_type); pass the "
        "checkpoint's own config.json, or move this one away"
    )


def _load_strict(model: BitPreTrainedModel, tensors: StateDict, path: Path, config_file: Path | None) -> None:
    """Load with every key and shape checked; the error names the first offenders (and the config, if a file)."""
    tensors = _match_prefix(model, tensors)
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [
        f"{k} {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
            problems.append(f"{label}: {', '.join(items[:5])}{more}")
    if problems:
        against = f"the config in {config_file}" if config_file is not None else "the model"
        raise CheckpointError(f"{path}: checkpoint does not fit {against}; " + "; ".join(problems))
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)


def _match_prefix(model: BitPreTrainedModel, tensors: StateDict) -> StateDict:
    """Reconcile ``bit.``-prefixed (classification/backbone) and bare (``BitModel``) tensor names."""
    if not any(k.startswith("bit.") for k in tensors):  # saved from a BitModel
        tensors = {(k if k.startswith("classifier.") else f"bit.{k}"): v for k, v in tensors.items()}
    if isinstance(model, BitModel):
        return {k.removeprefix("bit."): v for k, v in tensors.items() if k.startswith("bit.")}
    if isinstance(model, BitForImageClassification):
        return tensors
    return {k: v for k, v in tensors.items() if k.startswith("bit.")}  # a backbone has no head


def _sha256(files: list[Path]) -> str:
    if len(files) == 1:
        return sha256_file(files[0])
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{sha256_file(file)}\n".encode())
    return digest.hexdigest()
