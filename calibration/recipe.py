"""The BiT quantization recipe: which tensors get int8 Q/DQ and which stay float.

Quantized: the input and the (per-output-channel) weight of every convolution and of the linear head.
Float: GroupNorm, ReLU, the residual add, padding and pooling — TensorRT runs that glue in fp16/fp32
anyway, and GroupNorm renormalizes every unit's input. Measured on the demo model
(benchmarks/results/int8_calibration.md): with every conv and the head quantized, int8 keeps 100 % top-1
agreement on the held-out split, and keeping the stem or the head in float moved the result by at most two
of 400 images (noise, not a gain), so the default quantizes all of them.

``--exclude`` keeps named layers in float: a layer name, a prefix (``bit.encoder.stages.0``), or the
aliases ``stem`` and ``head``.
"""

from __future__ import annotations

from torch import nn

from bitedge.errors import BadInputError

ALIASES = {"stem": "bit.embedder.convolution", "head": "classifier.1"}


def quantizable_layers(deploy: nn.Module) -> list[str]:
    """Names of every convolution and linear layer of a deploy graph, in graph order."""
    return [name for name, m in deploy.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def select_layers(deploy: nn.Module, exclude: list[str], *, source: str = "--exclude") -> tuple[list[str], list[str]]:
    """(quantized, excluded) layer names; an ``exclude`` entry that matches no layer is an error blamed on
    ``source`` (the flag, or the calibration table that lists it)."""
    layers = quantizable_layers(deploy)
    prefixes = [ALIASES.get(e, e) for e in exclude]
    unmatched = [e for e, p in zip(exclude, prefixes, strict=True) if not any(_under(n, p) for n in layers)]
    if unmatched:
        examples = ", ".join(["stem", "head", *layers[1:3]])
        if source == "--exclude":
            raise BadInputError(f"--exclude {', '.join(unmatched)} matches no layer; e.g. {examples}")
        raise BadInputError(f"{source}: its excluded layers {', '.join(unmatched)} are not layers of this model (made "
                            "for another model, or edited): calibrate again with bitedge calibrate")  # fmt: skip
    excluded = [n for n in layers if any(_under(n, p) for p in prefixes)]
    return [n for n in layers if n not in excluded], excluded


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")
