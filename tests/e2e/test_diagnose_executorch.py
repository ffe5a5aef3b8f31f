"""``bitedge diagnose`` on ExecuTorch programs: every layer from a tapped twin (the artifact's own lowering with
each layer's output as a program output, run in ExecuTorch's runtime), the head from the artifact itself.

A fault is put into one named layer on the way through the lowering (``converters.executorch.lower``, which
``convert`` and the twin both call): a conv's weights scaled, an int8 conv's output scale changed, a GroupNorm's
eps changed. It is in the artifact's program and in the twin, not in the float or simulated models diagnose
rebuilds from the checkpoint, and diagnose must name exactly that layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from torch import Tensor, nn

import bitedge
from bitedge.artifacts.integrity import Allowances
from bitedge.artifacts.manifest import Manifest
from bitedge.calibration.simulate import copy_sharing_tensors
from bitedge.diagnose.compare import ARTIFACT_VS_FLOAT, ARTIFACT_VS_SIMULATED
from bitedge.diagnose.run import Diagnosis, diagnose
from bitedge.testing import demo_eval_subset

pytest.importorskip("executorch.runtime", reason="install bitedge[executorch]")
pytestmark = pytest.mark.slow

# the fp32 fault: weights 5 % too large, in a conv feeding a residual add (a GroupNorm right after a conv would
# cancel a scale of its output, so the logits would not show it)
CONV = "bit.encoder.stages.1.layers.0.conv3"
INT8_CONV = "bit.encoder.stages.1.layers.0.conv1"  # the int8 fault: its output's Q/DQ scale a quarter of the table's
NORM = "bit.encoder.stages.2.layers.0.norm2"  # the GroupNorm fault: eps 1 instead of 1e-5
STEM_CONV, STEM = "bit.embedder.convolution", "bit.embedder"
IMAGES = 20


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_eval_subset(tmp_path_factory.mktemp("eval"), per_class=2)


def _convert(out: Path, images: Path, *precisions: str, group_norm: str | None = None) -> list[Path]:
    options = {"executorch": {"group_norm": group_norm}} if group_norm else None
    results = bitedge.convert(out=out, targets=["executorch"], precisions=list(precisions), eval_images=images,
                              target_options=options, report=False)  # fmt: skip
    return [result.directory for result in results]


def _diagnose(directory: Path, images: Path) -> Diagnosis:
    return diagnose(directory, eval_images=images, images=IMAGES, allow=Allowances(failed=True))


def _fault(monkeypatch: pytest.MonkeyPatch, *, model: Callable[[nn.Module], None] | None = None,
           simulated: Callable[[nn.Module], None] | None = None) -> None:  # fmt: skip
    """Every program lowered from now on (the artifact's, then the twin's) gets the fault, on a copy: the models
    diagnose rebuilds from the checkpoint do not."""
    from bitedge.converters import executorch

    lower = executorch.lower

    def faulty(graph: nn.Module, example: tuple[Tensor, ...], reference: nn.Module | None = None) -> Any:
        graph = copy_sharing_tensors(graph)
        if model is not None:
            model(graph)
        if reference is not None and simulated is not None:
            reference = copy_sharing_tensors(reference)
            simulated(reference)
        return lower(graph, example, reference)

    monkeypatch.setattr(executorch, "lower", faulty)


def _scale_weight(name: str, factor: float) -> Callable[[nn.Module], None]:
    def edit(model: nn.Module) -> None:
        conv = model.get_submodule(name)
        conv.weight = nn.Parameter(conv.weight.detach() * factor, requires_grad=False)

    return edit


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory, images: Path) -> dict[str, Diagnosis]:
    directories = _convert(tmp_path_factory.mktemp("executorch") / "out", images, "fp32", "int8")
    return {Manifest.read(d).precision: diagnose(d, eval_images=images, images=IMAGES) for d in directories}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_an_unmodified_program_has_every_layer_tapped_and_no_conversion_fall_off(
    clean: dict[str, Diagnosis], precision: str
) -> None:
    diagnosis = clean[precision]
    assert diagnosis.manifest.status == "passed"
    assert diagnosis.untapped == [] and len(diagnosis.layers) == 36
    against = ARTIFACT_VS_SIMULATED if precision == "int8" else ARTIFACT_VS_FLOAT  # what it should compute
    assert all(against in layer.pairs and layer.problem is None for layer in diagnosis.layers)
    assert diagnosis.fall_offs["conversion"].layer is None, diagnosis.fall_offs
    if precision == "int8":
        assert diagnosis.fall_offs["quantization"].layer is None


def test_the_int8_stem_pads_and_pools_as_the_simulated_stem_within_one_step(clean: dict[str, Diagnosis]) -> None:
    """BiT's stem in int8 (conv, zero pad, max-pool: issue 20517's graph, lowered with pad and pool sharing the
    conv's int8 parameters): the program's stem differs from the simulated stem by at most one int8 step."""
    from bitedge.pipeline.rebuild import deploy_graph, float_reference, simulated_model

    diagnosis = clean["int8"]
    manifest = diagnosis.manifest
    simulated = simulated_model(diagnosis.directory, manifest, deploy_graph(float_reference(manifest, None, print),
                                                                             manifest))  # fmt: skip
    assert simulated is not None
    step = simulated.get_submodule(STEM_CONV).output_q.scale
    layers = {layer.name: layer for layer in diagnosis.layers}
    for name in (STEM_CONV, STEM):
        assert layers[name].pairs[ARTIFACT_VS_SIMULATED].max_abs <= step * 1.001, name


def test_a_scaled_conv_weight_is_named_and_a_fault_in_the_file_alone_shows_at_the_head(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fault(monkeypatch, model=_scale_weight(CONV, 1.05))
    (directory,) = _convert(tmp_path / "out", images, "fp32")
    faulty = _diagnose(directory, images)
    assert faulty.untapped == [] and faulty.fall_offs["conversion"].layer == CONV, faulty.fall_offs
    # Diagnosed without the fault: the twin is right, the artifact's own logits (the head's tap) are not.
    monkeypatch.undo()
    twin_clean = _diagnose(directory, images)
    assert twin_clean.fall_offs["conversion"].layer == "classifier.1", twin_clean.fall_offs


def test_a_changed_int8_output_scale_is_named(tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def quarter_scale(simulated: nn.Module) -> None:
        layer = simulated.get_submodule(INT8_CONV)
        layer.output_q = replace(layer.output_q, scale=layer.output_q.scale / 4)

    _fault(monkeypatch, simulated=quarter_scale)
    (directory,) = _convert(tmp_path / "out", images, "int8")
    diagnosis = _diagnose(directory, images)
    assert diagnosis.fall_offs["conversion"].layer == INT8_CONV, diagnosis.fall_offs
    assert diagnosis.fall_offs["quantization"].layer is None  # the table itself is fine


def test_a_changed_group_norm_eps_is_named_between_partitions(
    tmp_path: Path, images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--executorch-group-norm native: GroupNorm in portable kernels between XNNPACK partitions, tapped alike."""

    def large_eps(model: nn.Module) -> None:
        model.get_submodule(NORM).eps = 1.0

    _fault(monkeypatch, model=large_eps)
    (directory,) = _convert(tmp_path / "out", images, "fp32", group_norm="native")
    diagnosis = _diagnose(directory, images)
    assert diagnosis.untapped == [] and diagnosis.fall_offs["conversion"].layer == NORM, diagnosis.fall_offs
