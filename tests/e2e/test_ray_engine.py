"""``bitedge verify --engine ray --workers 2`` (issue 21): shards on a local Ray started for the run, with token
authentication on; the verdict equals the local engine's."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from bitedge.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def artifact(demo_onnx_int8: Path, tmp_path: Path) -> Path:
    """A copy of the shared artifact: what one test's verify records (its budget) is not the next one's."""
    return Path(shutil.copytree(demo_onnx_int8, tmp_path / demo_onnx_int8.name))


def test_ray_workers_record_the_local_engines_verdict(
    artifact: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray.data", reason="install bitedge[ray]")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["verify", str(artifact)]) == 0
    local = json.loads((artifact / "parity.json").read_text())
    (artifact / "parity.json").write_text("{}")
    home = Path.home() / ".ray" / "auth_token"
    existed = home.exists()
    code = main(["verify", str(artifact), "--engine", "ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads((artifact / "parity.json").read_text()) == local
    assert "merging 2 partial results" in err and "Traceback" not in err
    assert home.exists() == existed  # the run's token lived in its environment, not in a lasting file
    assert "RAY_AUTH_TOKEN" not in os.environ  # and left with it


def test_without_ray_the_message_says_how_to_install_it(
    artifact: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if it were not installed
    before = (artifact / "parity.json").read_bytes()
    code = main(["verify", str(artifact), "--engine", "ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 1 and "pip install 'bitedge[ray]'" in err and "Traceback" not in err
    assert (artifact / "parity.json").read_bytes() == before
    code = main(["verify", str(artifact), "--workers", "2"])
    assert code == 2 and "--engine ray" in capsys.readouterr().err
