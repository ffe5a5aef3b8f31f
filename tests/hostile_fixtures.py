"""Fixtures and helpers of the hostile-use tests (tests/e2e/test_hostile_*.py, issue 22): a tiny model, the
arguments that convert it to one ONNX artifact, a passing artifact of the user's own to protect, and the
check that nothing was lost (every file's sha256, before and after). Loaded as a plugin by tests/conftest.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from conftest import demo_eval_subset, hf_classifier

from bitedge.artifacts.manifest import Manifest
from bitedge.cli import main
from bitedge.hashing import sha256_file


def digests(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) with its sha256: 'nothing was lost' is equality."""
    if path.is_file():
        return {path.name: sha256_file(path)}
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "tiny-bit"
    hf_classifier().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def convert_args(tiny: Path, eval_dir: Path) -> list[str]:
    """One tiny ONNX fp32 artifact (a second or two); add --out."""
    return [
        "convert",
        str(tiny),
        "--target",
        "onnx",
        "--precision",
        "fp32",
        "--eval",
        str(eval_dir),
        "--image-size",
        "64",
    ]


@pytest.fixture(scope="module")
def template(convert_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("template") / "artifact"
    assert main([*convert_args, "--out", str(out)]) == 0
    return out


@pytest.fixture
def artifact(template: Path, tmp_path: Path) -> Path:
    """A passing artifact of the user's own, to be protected."""
    copy = tmp_path / "artifact"
    shutil.copytree(template, copy)
    return copy


@pytest.fixture(scope="module")
def demo_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 of the demo's held-out digits, in their class folders: a quick but real int8 gate."""
    return demo_eval_subset(tmp_path_factory.mktemp("demo-eval"), per_class=4)


def tamper(artifact: Path) -> None:
    """Negate the head's weights: a confident, wrong model with the same file size."""
    proto = onnx.load(str(artifact / "model.onnx"))
    for tensor in proto.graph.initializer:
        if tensor.name == "classifier.1.weight":
            tensor.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(tensor), tensor.name))
    onnx.save(proto, str(artifact / "model.onnx"))


def mark_failed(artifact: Path) -> None:
    """An artifact whose gate failed, as bitedge records it (an edit by hand would break its seal)."""
    manifest = Manifest.read(artifact)
    manifest.status = "failed"
    manifest.write(artifact)
