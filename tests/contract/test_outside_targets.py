"""Targets from other packages load through the entry-point group ``bitedge.converters`` and work like
built-in ones: convert, verify, predict, their own flags, the contract tests. An outside target can never
break a built-in one or bitedge: one that fails to load (an exception, ``sys.exit()``, any BaseException) is
listed unusable in one line naming it, and one named like a built-in is left out (built-ins win)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from docs_plugin import pip_install, write_example_package

from bitedge.converters import registry
from bitedge.errors import MissingRuntimeError
from bitedge.model.demo import DEMO_EVAL
from bitedge.pipeline.plan import plan_jobs
from bitedge.testing import TARGETS_VARIABLE


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which docs/design.md's plugin example is installed by pip, as a real package."""
    root = tmp_path_factory.mktemp("plugin")
    site = pip_install(write_example_package(root / "package"), root / "site")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def _bitedge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bitedge", *args], env=env, capture_output=True, text=True)


def _outside(site: Path, entry: str, module: str, code: str) -> dict[str, str]:
    """An environment with an outside package declaring ``entry`` (``name = module:attr``), whose module is
    ``code``."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(code)
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{entry}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_the_docs_plugin_installed_by_pip_works_like_a_built_in_target(
    installed: dict[str, str], tmp_path: Path
) -> None:
    assert "--torchscript-freeze" in _bitedge(installed, "convert", "--help").stdout
    out = tmp_path / "ts"
    args = ["convert", "--target", "torchscript", "--torchscript-freeze", "--out", str(out)]
    run = _bitedge(installed, *args)
    assert run.returncode == 0 and "warning" not in run.stderr, run.stderr[-2000:]
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


@pytest.mark.slow
def test_the_docs_plugin_passes_the_shipped_contract_tests(installed: dict[str, str], tmp_path: Path) -> None:
    """What the docs tell a plugin author to run: ``python -m bitedge.testing torchscript``."""
    done = subprocess.run([sys.executable, "-m", "bitedge.testing", "torchscript", "--", "-q"],
                          env=installed, capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    # registration, fp32 through the gate, every precision in one run beside onnx, a missing runtime
    assert "4 passed" in done.stdout and "failed" not in done.stdout, done.stdout[-3000:]


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The registry loaded again (the built-in modules are imported already), with the entry points set below."""
    registry.target_names()  # the built-ins register when their modules are first imported: load them now
    monkeypatch.setattr(registry, "_classes", {k: v for k, v in registry._classes.items() if registry.is_builtin(k)})
    for name, empty in (("_broken", {}), ("_builtin", set()), ("_problems", []), ("_instances", {})):
        monkeypatch.setattr(registry, name, empty)
    monkeypatch.setattr(registry, "_loaded", False)
    yield


def _entries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **modules: str) -> None:
    """Entry points ``name = <module>:Converter`` whose modules have the given code."""
    monkeypatch.syspath_prepend(str(tmp_path))
    points = []
    for name, code in modules.items():
        module = f"bitedge_outside_{name}_{abs(hash(code)) % 10**8}"
        (tmp_path / f"{module}.py").write_text(code)
        points.append(EntryPoint(name=name, value=f"{module}:Converter", group=registry.ENTRY_POINT_GROUP))
    monkeypatch.setattr(registry, "entry_points", lambda group: points)


def test_an_outside_target_that_fails_to_load_is_reported(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _entries(monkeypatch, tmp_path, broken="import bitedge_no_such_package\n")
    assert "broken" in registry.target_names() and "onnx" in registry.target_names()
    jobs, skipped = plan_jobs(None, None, tmp_path)  # the rest still convert
    reason = next(s.reason for s in skipped if s.target == "broken")
    assert "it failed to load (ModuleNotFoundError: No module named 'bitedge_no_such_package')" in reason and jobs
    with pytest.raises(MissingRuntimeError, match="target broken is not usable"):
        plan_jobs(("broken",), None, tmp_path)


REGISTERS_ONNX = """
from bitedge.converters.base import Converter
from bitedge.converters.registry import register
from bitedge.precisions import Precision

@register
class Converter(Converter):
    name = "onnx"
    description = "an impostor"
    precisions = (Precision.FP32,)
    extra = "impostor"
    modules = ()
"""


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("raise ImportError('its runtime is missing')\n", "it failed to load (ImportError: its runtime is missing)"),
        ("import sys\nsys.exit(3)\n", "it called sys.exit(3) while loading"),
        ("class Quit(BaseException):\n    pass\nraise Quit('bye')\n", "it failed to load (Quit: bye)"),
        (REGISTERS_ONNX, "it claims the name of the built-in target 'onnx', which wins"),
    ],
    ids=["import-error", "sys-exit", "base-exception", "registers-onnx"],
)
def test_an_outside_target_named_like_a_built_in_never_replaces_it(
    fresh_registry: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str, why: str
) -> None:
    _entries(monkeypatch, tmp_path, onnx=code)
    (problem,) = registry.problems()
    assert problem.startswith("outside target 'onnx' (bitedge_outside_onnx_") and why in problem, problem
    assert problem.endswith("the built-in onnx target is used")
    converter = registry.get_converter("onnx")
    assert type(converter).__module__ == "bitedge.converters.onnx" and registry.is_builtin("onnx")
    assert registry.target_names().count("onnx") == 1


def test_an_outside_target_that_exits_at_import_breaks_neither_the_cli_nor_the_library(
    template: Path, tmp_path: Path
) -> None:
    """sys.exit() in a plugin's module: the command line says so in one line and goes on; ``bitedge.verify()``
    returns its verdict instead of raising SystemExit."""
    quits = "import sys\nsys.exit(4)\n"
    env = _outside(tmp_path / "site", "quitter = bitedge_quitter:Converter", "bitedge_quitter", quits)
    run = _bitedge(env, "inspect", str(template))
    warnings = [line for line in run.stderr.splitlines() if "warning" in line]
    assert run.returncode == 0 and len(warnings) == 1, run.stderr
    assert "outside target 'quitter' (bitedge_quitter:Converter, package bitedge_quitter)" in warnings[0]
    assert "sys.exit(4)" in warnings[0]
    script = f"import bitedge; print('passed', bitedge.verify({str(template)!r}).passed)"
    library = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert library.returncode == 0 and "passed True" in library.stdout, library.stderr[-2000:]


def test_the_contract_runner_selects_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    from bitedge.testing.contract import contract_classes

    monkeypatch.setenv(TARGETS_VARIABLE, "onnx, openvino")
    assert [c.name for c in contract_classes()] == ["onnx", "openvino"]
    monkeypatch.delenv(TARGETS_VARIABLE)
    assert [c.name for c in contract_classes()] == registry.target_names()
