"""``bitedge verify --engine ray --workers 2`` (issue 21): shards on a local Ray started for the run, or on the
cluster ``RAY_ADDRESS`` names, with token authentication on; the verdict equals the local engine's."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
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


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, str]]:
    """A Ray cluster started as a user would (`ray start --head`) with token authentication: (address, token)."""
    pytest.importorskip("ray.data", reason="install bitedge[ray]")
    ray = shutil.which("ray") or str(Path(sys.executable).parent / "ray")
    token, port = secrets.token_hex(32), _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory(prefix="ray-", dir="/tmp") as session:  # short: Ray's socket paths are limited
        start = [ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                 "--include-dashboard=false", f"--temp-dir={session}", "--disable-usage-stats"]  # fmt: skip
        started = subprocess.run(start, env=env, capture_output=True, text=True, timeout=180, check=False)
        assert started.returncode == 0, started.stderr[-2000:]
        try:
            yield f"127.0.0.1:{port}", token
        finally:
            subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120, check=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_existing_cluster_named_by_ray_address_runs_the_shards_with_its_token(
    artifact: Path, ray_cluster: tuple[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, token = ray_cluster
    assert main(["verify", str(artifact)]) == 0
    local = json.loads((artifact / "parity.json").read_text())
    monkeypatch.setenv("RAY_ADDRESS", address)
    monkeypatch.setenv("RAY_NUM_REDIS_GET_RETRIES", "2")  # Ray's own retries: a refused client fails in seconds
    monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)  # not the cluster's token: refused, nothing recorded
    (artifact / "parity.json").write_text("{}")
    capsys.readouterr()
    code = main(["verify", str(artifact), "--engine", "ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 2 and f"RAY_ADDRESS={address}: cannot connect" in err and "RAY_AUTH_TOKEN" in err, err
    assert (artifact / "parity.json").read_text() == "{}"
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    code = main(["verify", str(artifact), "--engine", "ray", "--workers", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"cluster {address}" in err and "merging 2 partial results" in err
    assert json.loads((artifact / "parity.json").read_text()) == local
