"""The models an artifact was made from, rebuilt from what its manifest records (``verify``, ``diagnose``):
the float reference from its source checkpoint (refused unless its sha256 is the recorded one), the deploy
graph as the artifact was folded, and, for int8 from bitedge's table, the simulated-quantized model from the
artifact's own table in its target's placement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from bitedge.artifacts.manifest import Manifest
from bitedge.calibration.recipe import select_layers
from bitedge.calibration.simulate import simulate
from bitedge.calibration.table import CalibrationTable
from bitedge.converters import get_converter
from bitedge.errors import BadInputError
from bitedge.fold import fold
from bitedge.model.image_processor import BitImageProcessor
from bitedge.model.loading import load_model
from bitedge.model.modeling import BitPreTrainedModel
from bitedge.precisions import Precision


def float_reference(manifest: Manifest, given: Path | None, log: Callable[[str], None]) -> BitPreTrainedModel:
    """The checkpoint the artifact was made from: where the manifest says, or ``given`` (``--model``), and only
    if its sha256 is the one recorded."""
    source = manifest.source
    if given is None and source.format != "preset" and not Path(source.path).exists():
        raise BadInputError(f"{source.path}: the checkpoint this artifact was made from is not there (moved or "
                            "deleted); pass --model PATH to where it is now (checked against the sha256 in "
                            "bitedge.json)")  # fmt: skip
    path = given if given is not None else source.path
    log(f"loading the float reference {path}")
    model: BitPreTrainedModel = load_model(path, seed=source.seed or 0)
    found = model.source.sha256 if model.source is not None else None
    if found != source.sha256:
        if given is not None:
            raise BadInputError(f"--model {given}: not the checkpoint this artifact was made from (sha256 {found} "
                                f"differs from {source.sha256}, recorded in bitedge.json)")  # fmt: skip
        raise BadInputError(f"{source.path} changed since the artifact was made (sha256 differs); convert again")
    return model


def deploy_graph(model: BitPreTrainedModel, manifest: Manifest) -> nn.Module:
    """The deploy graph as the artifact was folded (input normalization in the stem or not)."""
    processor = BitImageProcessor.from_dict(manifest.preprocessing)
    return fold(model, raw_pixel_input=manifest.input.folded, processor=processor)


def simulated_model(directory: Path, manifest: Manifest, deploy: nn.Module) -> nn.Module | None:
    """For an int8 artifact made from bitedge's table: its simulated model, from that table; else None."""
    calibration = manifest.calibration
    if manifest.precision != Precision.INT8 or calibration is None or calibration.quantizer not in (None, "bitedge"):
        return None
    table = CalibrationTable.load(directory / calibration.table)
    converter = get_converter(manifest.target)
    known = converter.int8_placements()  # the placement for each CPU (e.g. x86-uint8, x86-uint8-vnni)
    placement = known.get(calibration.placement or converter.placement.name)
    if placement is None:
        raise BadInputError(
            f"{directory}: its int8 graph has the {calibration.placement} Q/DQ placement; this bitedge's "
            f"{manifest.target} target places {' or '.join(known)}, so its simulated model would not match: "
            "convert again"
        )
    layers, _ = select_layers(deploy, list(table.excluded), source=f"calibration table {directory / calibration.table}")
    size = list(BitImageProcessor.from_dict(manifest.preprocessing).input_size)
    table.check_matches(model_sha256=manifest.source.sha256, size=size, raw_pixels=manifest.input.folded,
                        layers=layers)  # fmt: skip
    return simulate(deploy, table, placement)


def recorded_eval(manifest: Manifest) -> Path:
    """The evaluation images the artifact was last verified on, as its manifest records them."""
    recorded = manifest.parity.get("eval")
    path = recorded.get("path") if isinstance(recorded, dict) else None
    if not isinstance(path, str):
        raise BadInputError("no evaluation images recorded in the manifest; pass --eval DIR")
    return Path(path)
