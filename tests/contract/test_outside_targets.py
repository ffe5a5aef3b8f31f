"""Targets from other packages load through the entry-point group ``bitedge.converters`` and work like
built-in ones: convert, verify, predict, their own flags. One that fails to load is reported, not fatal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from bitedge.converters import registry
from bitedge.errors import MissingRuntimeError
from bitedge.model.demo import DEMO_EVAL
from bitedge.pipeline.plan import plan_jobs

PLUGIN = Path(__file__).parent / "plugin"


@pytest.fixture
def installed(tmp_path: Path) -> dict[str, str]:
    """An environment in which the plugin is installed: its module and a dist-info declaring the entry point."""
    site = tmp_path / "site"
    shutil.copytree(PLUGIN, site)
    info = site / "bitedge_torchscript-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bitedge-torchscript\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[bitedge.converters]\ntorchscript = bitedge_torchscript:TorchScriptConverter\n"
    )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _bitedge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bitedge", *args], env=env, capture_output=True, text=True)


def test_an_installed_outside_target_works_like_a_built_in_one(installed: dict[str, str], tmp_path: Path) -> None:
    assert "--torchscript-freeze" in _bitedge(installed, "convert", "--help").stdout
    out = tmp_path / "ts"
    args = ["convert", "--target", "torchscript", "--torchscript-freeze", "--out", str(out)]
    run = _bitedge(installed, *args)
    assert run.returncode == 0, run.stderr[-2000:]
    manifest = json.loads((out / "bitedge.json").read_text())
    assert manifest["target"] == "torchscript" and manifest["status"] == "passed"
    assert manifest["conversion"]["target_options"] == {"freeze": True}
    assert manifest["parity"]["top1_agreement"] == 1.0 and manifest["parity"]["max_abs_diff"] < 1e-3
    digit = next((DEMO_EVAL / "3").iterdir())
    predicted = _bitedge(installed, "predict", str(out), str(digit), "--top-k", "1", "--json")
    assert predicted.returncode == 0 and json.loads(predicted.stdout)[0]["predictions"][0]["label"] == "3"
    assert _bitedge(installed, "verify", str(out)).returncode == 0
    missing = {k: v for k, v in installed.items() if k != "PYTHONPATH"}  # the plugin uninstalled
    refused = _bitedge(missing, "predict", str(out), str(digit))
    assert refused.returncode == 2 and "unknown target 'torchscript'" in refused.stderr


def test_an_outside_target_that_fails_to_load_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint(name="broken", value="bitedge_no_such_package:Converter", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [broken])
    monkeypatch.setattr(registry, "_classes", dict(registry._classes))  # the built-ins, already imported
    monkeypatch.setattr(registry, "_broken", {})
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setattr(registry, "_loaded", False)
    assert "broken" in registry.target_names() and "onnx" in registry.target_names()
    jobs, skipped = plan_jobs(None, None, tmp_path)  # the rest still convert
    reason = next(s.reason for s in skipped if s.target == "broken")
    assert "bitedge_no_such_package:Converter failed to load (ModuleNotFoundError" in reason and jobs
    with pytest.raises(MissingRuntimeError, match="target broken is not usable"):
        plan_jobs(("broken",), None, tmp_path)
