"""Reading tensors from checkpoint files safely, with errors that say which file and what to do.

Pickles (``.bin``, ``.pth``, ``.pt``) load only through ``torch.load(weights_only=True)``, so a pickle that
tries to run code or holds arbitrary objects is refused. ``.npz`` loads with ``allow_pickle=False``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bitedge.errors import CheckpointError

StateDict = dict[str, Tensor]
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
# Wrappers training scripts put around a state dict ({"state_dict": {...}}, timm's "model", ...).
_WRAPPER_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({exc}); it may be truncated or corrupt, re-export it"
        ) from None


def read_pickle(path: Path) -> StateDict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the pickle holds objects other than tensors ({_first_line(exc)}); "
            "bitedge only loads plain state dicts; save one with torch.save(model.state_dict()) or use safetensors"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)}); is it truncated?"
        ) from None
    return _as_state_dict(obj, path)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as exc:
        raise CheckpointError(
            f"{path}: refused: the .npz holds pickled objects ({exc}); only arrays are loaded"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path}: not a readable .npz file ({exc}); is it truncated?") from None


def _as_state_dict(obj: object, path: Path) -> StateDict:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a non-empty dict of tensors (a state dict), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {', '.join(bad[:5])}; expected a state dict")
    return obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_finite(tensors: StateDict, path: Path) -> None:
    """Refuse weights holding NaN or inf: any artifact built from them would be garbage."""
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{path}: NaN or inf values in {', '.join(bad[:5])}; the checkpoint is corrupt")
