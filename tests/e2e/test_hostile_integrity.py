"""Hostile and careless use, part 2 (issue 22): an artifact is used only as it was verified.

predict, bench and report check file hashes and status; a modified or failed artifact is refused unless the
user says so, and then the output states it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hostile_fixtures import mark_failed, run, tamper

# ------------------------------------------------------------------------------------------ integrity on use


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_a_tampered_artifact_is_refused(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    tamper(artifact)
    extra = [str(eval_dir)] if command == "predict" else ["--runs", "2", "--duration", "0.01"]
    code, out, err = run(capsys, command, str(artifact), *extra)
    assert code == 1 and "model.onnx changed since the artifact was verified" in err and "--no-verify-hashes" in err
    assert "LABEL_" not in out  # nothing was classified


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_a_failed_artifact_is_refused(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    mark_failed(artifact)
    extra = [str(eval_dir)] if command == "predict" else ["--runs", "2", "--duration", "0.01"]
    code, _, err = run(capsys, command, str(artifact), *extra)
    assert code == 1 and "failed its parity gate" in err and "--allow-failed" in err


def test_allowed_failed_and_unchecked_artifacts_are_stated(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mark_failed(artifact)
    code, out, err = run(capsys, "predict", str(artifact), str(eval_dir), "--allow-failed")
    assert code == 0 and "LABEL_" in out and "using an artifact that failed its parity gate" in err
    tamper(artifact)
    code, out, err = run(capsys, "predict", str(artifact), str(eval_dir), "--allow-failed", "--no-verify-hashes")
    assert code == 0 and "file hashes not checked" in err


def test_an_edit_that_restores_the_mtime_is_still_caught(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "predict", str(artifact), str(eval_dir))[0] == 0  # hashed once, cached
    model = artifact / "model.onnx"
    stat = model.stat()
    data = bytearray(model.read_bytes())
    data[-1] ^= 1  # one bit, same size
    model.write_bytes(bytes(data))
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    code, _, err = run(capsys, "predict", str(artifact), str(eval_dir))
    assert code == 1 and "changed since" in err


def test_report_marks_a_modified_artifact(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tamper(artifact)
    code, _, err = run(capsys, "report", str(artifact))
    assert code == 1 and "changed since the artifact was verified" in err
    assert "MODIFIED" in (artifact / "report.md").read_text()
