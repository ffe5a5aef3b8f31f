"""The contract every target obeys, as pytest tests over the registry (built-in and outside targets alike).

A target is registered completely (name, precisions, budgets, options that become flags); converts the demo
model through the whole pipeline at each precision; writes a manifest that reads back with every file hashed;
loads as a runner in its real runtime that classifies a held-out digit; passes the parity gate; leaves the
deploy graph it is given as it found it, so every artifact of one run (and a built-in target's beside it)
still passes; and, with its runtime missing, is skipped with the reason and its install command.

Which targets: ``$BITEDGE_CONTRACT_TARGETS`` (comma-separated), or every registered one. Run it with
``python -m bitedge.testing TARGET`` (see ``bitedge.testing``). Where the ``slow`` marker is registered
(bitedge's own suite), the long conversions carry it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import bitedge
from bitedge.artifacts.integrity import changed_files
from bitedge.artifacts.manifest import Manifest
from bitedge.cli.parser import build_parser
from bitedge.converters import converter_classes, get_converter, parse_target
from bitedge.converters.base import Converter, TargetOptions
from bitedge.errors import MissingRuntimeError
from bitedge.model.demo import DEMO_CALIBRATION, DEMO_MODEL
from bitedge.model.image_processor import BitImageProcessor
from bitedge.pipeline.convert import convert as run_pipeline
from bitedge.pipeline.options import CalibrationOptions, ConvertRequest
from bitedge.pipeline.plan import Job, plan_jobs
from bitedge.precisions import Precision
from bitedge.testing import TARGETS_VARIABLE, demo_eval_subset

SENTINEL = "onnx"  # the built-in target converted beside the one under test, from the same deploy graph
# bitedge's fast tier converts every target at its first precision and one int8 (ExecuTorch's lowering alone
# takes ~20 s even for the demo, so it waits for the slow tier); the rest are marked slow.
FAST_SLOW_EXCEPTIONS = {("onnx", Precision.INT8)}


def contract_classes() -> list[type[Converter]]:
    """The targets under test: those ``$BITEDGE_CONTRACT_TARGETS`` names, or every registered one."""
    named = [t.strip() for t in os.environ.get(TARGETS_VARIABLE, "").split(",") if t.strip()]
    if not named:
        return converter_classes()
    return [type(get_converter(parse_target(name))) for name in named]


def _fast(name: str, precision: Precision) -> bool:
    cls = type(get_converter(name))
    return (name != "executorch" and precision == cls.precisions[0]) or (name, precision) in FAST_SLOW_EXCEPTIONS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    slow_known = any(line.split(":")[0].strip() == "slow" for line in metafunc.config.getini("markers"))

    def marks(fast: bool) -> list[pytest.MarkDecorator]:
        return [pytest.mark.slow] if slow_known and not fast else []

    classes = contract_classes()
    if "precision" in metafunc.fixturenames:
        params = [pytest.param(c.name, p, marks=marks(_fast(c.name, p)), id=f"{c.name}-{p}")
                  for c in classes for p in c.precisions]  # fmt: skip
        metafunc.parametrize(("name", "precision"), params)
    elif "name" in metafunc.fixturenames:
        fast = metafunc.function.__name__ != "test_every_precision_in_one_run_beside_a_built_in"
        metafunc.parametrize("name", [pytest.param(c.name, marks=marks(fast), id=c.name) for c in classes])


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """bitedge caches file digests and float references per user: the contract keeps its own."""
    saved = os.environ.get("BITEDGE_CACHE_DIR")
    os.environ["BITEDGE_CACHE_DIR"] = str(tmp_path_factory.mktemp("contract-cache"))
    yield
    if saved is None:
        os.environ.pop("BITEDGE_CACHE_DIR", None)
    else:
        os.environ["BITEDGE_CACHE_DIR"] = saved


@pytest.fixture(scope="module")
def few_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 of the demo's held-out digits (3 per class, in their class folders)."""
    return demo_eval_subset(tmp_path_factory.mktemp("few"), per_class=3)


def _usable(name: str) -> Converter:
    converter = get_converter(name)
    try:
        converter.check_runtime()
    except MissingRuntimeError as exc:
        pytest.skip(str(exc))
    return converter


def test_registration_is_complete(name: str) -> None:
    cls = type(get_converter(name))
    assert cls.name == name and cls.description and cls.precisions and cls.modules
    assert cls.extra or cls.install, "a target names its pip extra or its own install command"
    assert all(p in cls.budgets for p in cls.precisions) and cls.quantizers
    assert dataclasses.is_dataclass(cls.Options) and issubclass(cls.Options, TargetOptions)
    assert cls.Options.__dataclass_params__.frozen  # type: ignore[attr-defined]
    defaults = cls.parse_options({})
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = commands.choices["convert"].format_help()
    for field in dataclasses.fields(cls.Options):
        assert field.default is not dataclasses.MISSING and getattr(defaults, field.name) == field.default
        assert f"--{name}-{field.name.replace('_', '-')}" in flags and field.metadata.get("help")


def test_converts_the_demo_and_passes_its_gate(
    name: str, precision: Precision, few_images: Path, tmp_path: Path
) -> None:
    converter = _usable(name)
    out = tmp_path / "artifact"
    int8 = precision == Precision.INT8
    (result,) = bitedge.convert(
        DEMO_MODEL, out, targets=[name], precisions=[precision], eval_images=few_images,
        calibration=DEMO_CALIBRATION if int8 else None, calibration_size=32 if int8 else None,
    )  # fmt: skip
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


def test_every_precision_in_one_run_beside_a_built_in(name: str, few_images: Path, tmp_path: Path) -> None:
    """Every artifact of one conversion comes from one deploy graph: a converter that changed it (``half()``
    for fp16, say) would spoil the next artifact. Each precision of the target, then the built-in sentinel's
    fp32, built in one run: all pass."""
    converter = _usable(name)
    _usable(SENTINEL)
    out = tmp_path / "out"
    jobs = [Job(name, p, out / f"{name}-{p}") for p in converter.precisions]
    jobs.append(Job(SENTINEL, Precision.FP32, out / "sentinel"))
    calibration = CalibrationOptions(images=DEMO_CALIBRATION, size=32)
    request = ConvertRequest(model=DEMO_MODEL, out=out, eval_images=few_images,
                             calibration=calibration if Precision.INT8 in converter.precisions else None)  # fmt: skip
    results, failures = run_pipeline(request, jobs)
    assert not failures, failures
    assert [(r.manifest.target, r.manifest.precision) for r in results] == [(j.target, j.precision) for j in jobs]
    for result in results:
        assert result.passed, "\n".join(result.report.summary_lines())


def test_a_missing_runtime_is_skipped_with_the_install_command(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = type(get_converter(name))
    monkeypatch.setattr(cls, "modules", ("bitedge_no_such_runtime",))  # what an uninstalled runtime looks like
    jobs, skipped = plan_jobs(None, None, tmp_path)
    reason = next(s.reason for s in skipped if s.target == name)
    assert "bitedge_no_such_runtime" in reason and (cls.install or f"pip install 'bitedge[{cls.extra}]'") in reason
    assert all(job.target != name for job in jobs)
    with pytest.raises(MissingRuntimeError, match=f"target {name} needs"):  # asked for by name: an error
        plan_jobs((name,), None, tmp_path)
