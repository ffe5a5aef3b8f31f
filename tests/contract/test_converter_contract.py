"""The contract every registered target obeys, parametrized over the registry (built-in and outside ones):
it is registered completely, converts the demo model through the pipeline, writes a manifest that reads
back, loads as a runner in its real runtime, passes the parity gate on a few held-out images, and, with its
runtime missing, is skipped with the reason and the install command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import demo_eval_subset

import bitedge
from bitedge.artifacts.integrity import changed_files
from bitedge.artifacts.manifest import Manifest
from bitedge.cli.parser import build_parser
from bitedge.converters import converter_classes, get_converter
from bitedge.converters.base import TargetOptions
from bitedge.errors import MissingRuntimeError
from bitedge.model.demo import DEMO_CALIBRATION
from bitedge.model.image_processor import BitImageProcessor
from bitedge.pipeline.plan import plan_jobs
from bitedge.precisions import Precision

CLASSES = converter_classes()
NAMES = [c.name for c in CLASSES]
# The fast tier converts every target at its first precision and one int8; the rest run with the slow tier.
# ExecuTorch's lowering alone takes ~20 s even for the demo (XNNPACK's passes over the graph), a quarter of the
# fast tier's 90 s: its contract runs with the slow tier (its registration is checked in the fast one).
FIRST = {(c.name, c.precisions[0]) for c in CLASSES if c.name != "executorch"} | {("onnx", Precision.INT8)}
PAIRS = [
    pytest.param(c.name, p, marks=[] if (c.name, p) in FIRST else [pytest.mark.slow], id=f"{c.name}-{p}")
    for c in CLASSES
    for p in c.precisions
]


@pytest.fixture(scope="module")
def few_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 of the demo's held-out digits (3 per class, in their class folders)."""
    return demo_eval_subset(tmp_path_factory.mktemp("few"), per_class=3)


@pytest.mark.parametrize("name", NAMES)
def test_registration_is_complete(name: str) -> None:
    cls = type(get_converter(name))
    assert cls.name == name and cls.description and cls.precisions and cls.extra and cls.modules
    assert all(p in cls.budgets for p in cls.precisions) and cls.quantizers
    assert dataclasses.is_dataclass(cls.Options) and issubclass(cls.Options, TargetOptions)
    assert cls.Options.__dataclass_params__.frozen  # type: ignore[attr-defined]
    defaults = cls.parse_options({})
    flags = build_parser()._subparsers._group_actions[0].choices["convert"].format_help()  # type: ignore[union-attr]
    for field in dataclasses.fields(cls.Options):
        assert field.default is not dataclasses.MISSING and getattr(defaults, field.name) == field.default
        assert f"--{name}-{field.name.replace('_', '-')}" in flags and field.metadata.get("help")


@pytest.mark.parametrize(("name", "precision"), PAIRS)
def test_converts_the_demo_and_passes_its_gate(
    name: str, precision: Precision, few_images: Path, tmp_path: Path
) -> None:
    converter = get_converter(name)
    try:
        converter.check_runtime()
    except MissingRuntimeError as exc:
        pytest.skip(str(exc))
    out = tmp_path / "artifact"
    calibration = {"calibration": DEMO_CALIBRATION, "calibration_size": 32} if precision == Precision.INT8 else {}
    (result,) = bitedge.convert(
        "bitedge/demo", out, targets=[name], precisions=[precision], eval_images=few_images, **calibration
    )
    assert result.passed, "\n".join(result.report.summary_lines())
    manifest = Manifest.read(out)  # the manifest it wrote reads back, typed
    assert (manifest.target, manifest.precision, manifest.status) == (name, precision, "passed")
    assert set(manifest.file_sha256) == set(manifest.files) and changed_files(out, manifest) == []
    assert manifest.conversion["target_options"] == dataclasses.asdict(converter.Options())
    assert json.loads((out / "parity.json").read_text())["comparisons"][0]["metrics"]["samples"] == 30
    runner = converter.load_runner(out, manifest)  # in its real runtime, as predict and verify load it
    processor = BitImageProcessor.from_dict(manifest.preprocessing)
    if manifest.input.raw_pixels:
        processor = dataclasses.replace(processor, do_rescale=False, do_normalize=False)
    digit = sorted((few_images / "7").iterdir())[0]
    logits = runner(processor(digit.as_posix())["pixel_values"].astype(np.float32))
    assert logits.shape == (1, len(manifest.labels)) and manifest.labels[int(logits.argmax())] == "7"


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_runtime_is_skipped_with_the_install_command(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = type(get_converter(name))
    monkeypatch.setattr(cls, "modules", ("bitedge_no_such_runtime",))  # what an uninstalled runtime looks like
    jobs, skipped = plan_jobs(None, None, tmp_path)
    reason = next(s.reason for s in skipped if s.target == name)
    assert "bitedge_no_such_runtime" in reason and f"pip install 'bitedge[{cls.extra}]'" in reason
    assert all(job.target != name for job in jobs)
    with pytest.raises(MissingRuntimeError, match=f"target {name} needs"):  # asked for by name: an error
        plan_jobs((name,), None, tmp_path)
