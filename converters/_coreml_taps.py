"""Taps for ``bitedge diagnose`` in a Core ML package: every layer's output, read off the emulator's run of the
saved program, by the MIL variable the conversion recorded for it.

coremltools names MIL variables after TorchScript values (``input_17``, ``x_3``, ``..._cast_fp16`` in fp16
programs), not after modules, so the map is made when the package is built (``record_taps``): every op of the
final program (after fp16 typing and weight compression) carries the chain of torch modules that produced it
(its ``TORCHSCRIPT_MODULE_NAME`` scope, kept through coremltools' graph passes), and a layer's output is the
last op inside its module. The map goes into the package's user-defined metadata (``TAPS_KEY``), beside
bitedge's provenance: it names variables, never values, so a package whose numbers are wrong still maps.
Deriving it later from op order (i-th conv = i-th conv) would break on a program with an op more or less.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from bitedge.converters._coreml_emulator import Emulator
from bitedge.converters._coreml_package import MLPackage
from bitedge.converters.base import Taps, fixed_batch_taps
from bitedge.errors import BadInputError

TAPS_KEY = "bitedge.taps"  # user-defined metadata: JSON {layer path: the MIL variable holding its output}
# ops that only retype a value (fp16 programs cast around fp32 GroupNorm statistics): never a layer's own output
RETYPING_OPS = frozenset({"cast"})


def record_taps(program: Any, root: nn.Module, prefix: str) -> dict[str, str]:
    """Each tap point of ``root.get_submodule(prefix)`` -> the MIL variable of its output in ``program``.

    A module's output is its last op in program order: every other op of the module feeds it, and the program
    is in topological order. Casts are skipped: fp16 typing puts the cast of a layer's output to fp32 (for the
    next GroupNorm's statistics) in the producing layer's scope, after its output.

    Args:
        program: coremltools' MIL ``Program`` as ``ct.convert`` made it (``MLModel._mil_program``; after weight
            compression the ops lose their scopes but keep their names).
        root: the module that was traced (bitedge's ``Classifier``), whose module tree the scopes name.
        prefix: the path of the network inside ``root``; tap points are named relative to it, as in bitedge's
            deploy graph.
    """
    from coremltools.converters.mil.mil.scope import ScopeSource

    from bitedge.model.taps import tap_points

    points = tap_points(root.get_submodule(prefix))
    resolved: dict[tuple[str, ...], str | None] = {}
    last: dict[str, str] = {}  # tap point -> the output of its last op so far (program order)
    for op in program.functions["main"].operations:
        if op.op_type == "const" or op.op_type.startswith("constexpr_") or op.op_type in RETYPING_OPS:
            continue
        chain = tuple(op.scopes.get(ScopeSource.TORCHSCRIPT_MODULE_NAME, ()))[:-1]  # the last: a torch value
        if chain not in resolved:
            resolved[chain] = module_path(root, chain)
        path = resolved[chain]
        if path is None or not path.startswith(f"{prefix}."):
            continue
        path = path.removeprefix(f"{prefix}.")
        for point in _enclosing(path, points):
            last[point] = op.outputs[0].name
    return {point: last[point] for point in points if point in last}


def tap_metadata(taps: dict[str, str], program: Any) -> str:
    """The ``TAPS_KEY`` metadata: ``taps`` whose variables the final ``program`` holds, as JSON."""
    variables = {out.name for op in program.functions["main"].operations for out in op.outputs}
    return json.dumps({layer: var for layer, var in taps.items() if var in variables})


def module_path(root: nn.Module, chain: tuple[str, ...]) -> str | None:
    """The path in ``root`` of the module a TorchScript scope chain names (None: it names none).

    The chain holds the *called* modules: a container that is only indexed or iterated (``ModuleList``,
    BiT's ``encoder.stages``) is not in it, so a name not found among a module's children is looked up among
    its grandchildren, through exactly one child.
    """
    module, parts = root, list[str]()
    for name in chain:
        children = dict(module.named_children())
        if name in children:
            module, parts = children[name], [*parts, name]
            continue
        through = [(key, child) for key, child in children.items() if name in dict(child.named_children())]
        if len(through) != 1:
            return None
        key, child = through[0]
        module, parts = child.get_submodule(name), [*parts, key, name]
    return ".".join(parts) if parts else None


def _enclosing(path: str, points: dict[str, str]) -> list[str]:
    """The tap points that are ``path`` or contain it."""
    parts = path.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in points]


def recorded_taps(package: MLPackage) -> dict[str, str]:
    """The layer -> MIL variable map the conversion recorded, for the variables the program still has."""
    metadata = package.spec.description.metadata.userDefined
    if TAPS_KEY not in metadata:
        raise BadInputError(f"{package.root}: records no layer outputs (converted by an older bitedge); convert it "
                            "again to diagnose it")  # fmt: skip
    try:
        recorded = json.loads(metadata[TAPS_KEY])
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict):
        raise BadInputError(f"{package.root}: its {TAPS_KEY} metadata is not a JSON map; convert it again")
    variables = {out.name for op in package.block.operations for out in op.outputs}
    return {str(layer): str(var) for layer, var in recorded.items() if var in variables}


def coreml_taps(path: Path, *, batch: int) -> Taps:
    """The package at ``path`` run by the emulator as verification runs it (fp16 rounding as the program types
    it), tapped: ``pixels (N, 3, H, W) -> {layer: (N, C, H, W) or (N, K) float32}``."""
    package = MLPackage(path)
    taps = recorded_taps(package)
    emulator = Emulator(package, fp16=True)  # the mode EmulatedRunner verifies in
    (input_name,) = emulator.inputs
    keep = set(taps.values())

    def run(pixels: np.ndarray) -> dict[str, np.ndarray]:
        values = emulator.run({input_name: pixels}, keep=keep).values
        return {layer: _as_float32(values[var], len(pixels)) for layer, var in taps.items()}

    return fixed_batch_taps(run, batch)


def _as_float32(value: Any, images: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind != "f":
        raise BadInputError(f"a tapped Core ML variable holds {array.dtype}, not floats; convert the model again")
    return array.astype(np.float32).reshape(images, *array.shape[1:])  # (N, ...) as the torch module's output
