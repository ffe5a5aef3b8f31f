"""A target's own failures are its own: a converter that raises (even ``sys.exit()``) or changes the shared
deploy graph fails its artifact alone, named, and the built-in target after it still builds and passes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from bitedge.converters import get_converter, registry
from bitedge.converters.base import ConvertedFiles, Converter, ExportSpec, keep_weights
from bitedge.errors import BitEdgeError
from bitedge.model.demo import DEMO_MODEL
from bitedge.parity.metrics import Runner
from bitedge.pipeline.convert import convert
from bitedge.pipeline.options import ConvertRequest
from bitedge.pipeline.plan import Job
from bitedge.precisions import Precision
from bitedge.testing import demo_eval_subset


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_eval_subset(tmp_path_factory.mktemp("images"), per_class=1)


def _outside(monkeypatch: pytest.MonkeyPatch, convert: Callable[[nn.Module], None]) -> None:
    """An outside target "careless" whose conversion does ``convert(deploy)`` and writes nothing."""

    class Careless(Converter):
        name, description, precisions, extra, modules = "careless", "a careless target", (Precision.FP32,), "x", ()

        def convert(self, deploy: nn.Module, directory: Path, *, precision: Precision, spec: ExportSpec,
                    release_weights: Callable[[], None] = keep_weights) -> ConvertedFiles:  # fmt: skip
            convert(deploy)
            return ConvertedFiles([])

        def load_runner(self, directory: Path, manifest: Any, *, threads: int | None = None) -> Runner:
            raise AssertionError("never loaded: its conversion failed")

    registry.target_names()
    monkeypatch.setattr(registry, "_classes", {**registry._classes, "careless": Careless})
    monkeypatch.setattr(registry, "_instances", {})


def _run(images: Path, tmp_path: Path, first: str) -> tuple[list[Any], list[Any]]:
    jobs = [Job(first, Precision.FP32, tmp_path / "first"), Job("onnx", Precision.FP32, tmp_path / "onnx")]
    return convert(ConvertRequest(model=DEMO_MODEL, out=tmp_path, eval_images=images), jobs)


def _halve(deploy: nn.Module) -> None:
    deploy.half()


def _edit_through_data(deploy: nn.Module) -> None:
    next(deploy.parameters()).data.mul_(2)  # escapes the version counter, not the sum


def _hook(deploy: nn.Module) -> None:
    deploy.register_forward_hook(lambda *args: None)


def _crash(deploy: nn.Module) -> None:
    raise ValueError("the format has no GroupNorm")


def _exit(deploy: nn.Module) -> None:
    raise SystemExit(2)


@pytest.mark.parametrize(
    ("careless", "reason"),
    [
        (_halve, "the careless target changed the deploy graph it was given"),
        (_edit_through_data, "changed the deploy graph it was given (bit.embedder.convolution.weight)"),
        (_hook, "changed the deploy graph it was given (the model)"),
        (_crash, "the careless target failed to convert to fp32 (ValueError: the format has no GroupNorm)"),
        (_exit, "the careless target failed to convert to fp32 (sys.exit(): 2)"),
    ],
    ids=["half", "data-edit", "hook", "exception", "sys-exit"],
)
def test_an_outside_target_fails_alone_and_the_built_in_after_it_passes(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, careless: Callable[[nn.Module], None], reason: str
) -> None:
    _outside(monkeypatch, careless)
    results, failures = _run(images, tmp_path, "careless")
    assert [(f.target, f.precision) for f in failures] == [("careless", Precision.FP32)]
    assert reason in failures[0].reason, failures[0].reason
    assert not (tmp_path / "first").exists()  # nothing of it published
    (result,) = results
    assert result.manifest.target == "onnx" and result.passed
    assert result.report.comparisons[0].metrics.max_abs_diff < 1e-3


def test_a_built_in_target_that_changes_the_graph_stops_the_run(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A built-in target is handed the shared graph itself: changing it would spoil every artifact after it."""
    onnx = type(get_converter("onnx"))
    original = onnx.convert

    def careless(self: Converter, deploy: nn.Module, *args: Any, **kwargs: Any) -> ConvertedFiles:
        files = original(self, deploy, *args, **kwargs)  # type: ignore[arg-type]
        _edit_through_data(deploy)
        return files

    monkeypatch.setattr(onnx, "convert", careless)
    jobs = [Job("onnx", Precision.FP32, tmp_path / "a"), Job("onnx", Precision.FP16, tmp_path / "b")]
    with pytest.raises(BitEdgeError, match=r"the onnx target changed the deploy graph .* stopping"):
        convert(ConvertRequest(model=DEMO_MODEL, out=tmp_path, eval_images=images), jobs)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
