"""Interruptions and concurrency: a killed conversion leaves the old artifact or none, never half of one."""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bitedge.cli import main

pytestmark = pytest.mark.slow  # end-to-end runs of seconds each: `pytest` runs them, `-m "not slow"` does not


def _start(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    args = ["convert", "--target", "onnx", "openvino", "--precision", "fp32", "fp16", "int8", "--out", str(out)]
    return subprocess.Popen([sys.executable, "-m", "bitedge", *args, *extra], stderr=subprocess.PIPE)


def _read_until(process: subprocess.Popen[bytes], marker: str) -> str:
    """Read the conversion's log until a line holds ``marker`` (the stage to interrupt has begun)."""
    assert process.stderr is not None
    seen = []
    for raw in iter(process.stderr.readline, b""):
        seen.append(raw.decode(errors="replace"))
        if marker in seen[-1]:
            return "".join(seen)
    process.wait()
    raise AssertionError(f"the conversion ended before {marker!r}:\n{''.join(seen)[-800:]}")


# Stages are found by the log line that opens them, not by time, so a faster or slower machine interrupts the
# same stage. The last stage, after every artifact is published, is the report (and the exit).
STAGES = {
    "onnx-export": ("converting to onnx fp32", signal.SIGINT),
    "calibration": ("calibrating on", signal.SIGTERM),
    "openvino-int8": ("converting to openvino int8", signal.SIGINT),
    "openvino-verify": ("verifying openvino int8", signal.SIGTERM),
    "report-SIGINT": ("writing the report", signal.SIGINT),
    "report-SIGTERM": ("writing the report", signal.SIGTERM),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_signal_mid_conversion_leaves_nothing_half_written(tmp_path: Path, stage: str) -> None:
    """OpenVINO's native layer turns a KeyboardInterrupt into a RuntimeError or drops it; a signal in a
    runtime's worker thread corrupted CPython's GC (SIGSEGV); a signal at exit crashed the teardown."""
    marker, sig = STAGES[stage]
    out = tmp_path / "artifacts"
    process = _start(out)
    log = _read_until(process, marker)
    process.send_signal(sig)
    _, rest = process.communicate(timeout=120)
    log += rest.decode(errors="replace")
    assert process.returncode == 130, log[-800:]
    assert "interrupted" in log
    if not out.exists():  # nothing was published: the output directory this run created is gone too
        assert stage in ("onnx-export", "calibration"), stage
        return
    published = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert published
    for artifact in published:  # whatever was published before the signal is complete and verified
        if artifact.is_dir():
            assert json.loads((artifact / "bitedge.json").read_text())["status"] == "passed"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial dirs, temp files, locks


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
