"""Interruptions and concurrency: a killed conversion leaves the old artifact or none, never half of one."""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bitedge.cli import main


def _start(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = ["convert", "--target", "onnx", "openvino", "--precision", "fp32", "fp16", "int8", "--out", str(out)]
    return subprocess.Popen([sys.executable, "-m", "bitedge", *args, *extra], stderr=subprocess.PIPE)


def _wait_for_partial(process: subprocess.Popen[bytes], root: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if root.exists() and any(".partial-" in p.name for p in root.iterdir()):
            return
        assert process.poll() is None, "the conversion ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError("no conversion in progress appeared")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("delay", [0.0, 2.5, 4.0], ids=["onnx", "later", "openvino"])
def test_signal_mid_conversion_leaves_nothing_half_written(tmp_path: Path, sig: signal.Signals, delay: float) -> None:
    """At different stages: OpenVINO's native layer turns a KeyboardInterrupt into a RuntimeError or drops it."""
    out = tmp_path / "artifacts"
    process = _start(out)
    _wait_for_partial(process, out)
    time.sleep(delay)
    process.send_signal(sig)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err.decode()[-500:]
    assert "interrupted" in err.decode()
    published = [p for p in out.iterdir() if not p.name.startswith(".")]
    for artifact in published:  # whatever was published before the signal is complete and verified
        assert json.loads((artifact / "bitedge.json").read_text())["status"] == "passed"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial dirs, no locks


def test_second_writer_is_refused_while_the_first_holds_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "onnx"
    with (tmp_path / ".onnx.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running conversion holds
        assert main(["convert", "--target", "onnx", "--precision", "fp32", "--out", str(out)]) == 2
    assert "another bitedge run is writing it" in capsys.readouterr().err
    assert not out.exists()
    assert main(["convert", "--target", "onnx", "--precision", "fp32", "--out", str(out)]) == 0  # free again
    assert not (tmp_path / ".onnx.lock").exists()
