"""The deploy graph is shared: every artifact of a conversion is built from one folded model, so a converter
must hand it back as it found it (``converters/base.py``). ``fingerprint`` records what a converter could
change (its modules, their mode and hooks; each tensor's identity, storage, in-place version counter, shape,
dtype and sum); two fingerprints differ if it did. Cheap next to a conversion: one pass over the weights.
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn

Fingerprint = list[tuple[object, ...]]


def fingerprint(module: nn.Module) -> Fingerprint:
    """What a converter must not change in ``module``."""
    state: Fingerprint = []
    for name, sub in module.named_modules(remove_duplicate=False):
        hooks = (sub._forward_hooks, sub._forward_pre_hooks, sub._backward_hooks)
        state.append((name, type(sub), sub.training, *(len(h) for h in hooks)))
    tensors = chain(module.named_parameters(remove_duplicate=False), module.named_buffers(remove_duplicate=False))
    for name, tensor in tensors:
        total = None if tensor.is_meta else repr(float(torch.sum(tensor.detach(), dtype=torch.float64)))
        # an edit through ``.data`` escapes the version counter; the sum catches it
        state.append((name, id(tensor), tensor._version, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), total))
    return state


def changes(before: Fingerprint, after: Fingerprint) -> list[str]:
    """The names of what differs (modules or tensors), in graph order; empty when nothing does."""
    if len(before) != len(after):
        return ["its modules or tensors (some were added or removed)"]
    return [str(b[0]) or "the model" for b, a in zip(before, after, strict=True) if b != a]
