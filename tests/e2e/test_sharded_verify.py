"""``bitedge verify --shard I/N --partial-out`` and ``--merge`` (issue 21): the merged verdict is the unsharded
one, and partials that do not make one run are refused with nothing merged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bitedge.cli import main

pytestmark = pytest.mark.slow


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    _, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, err


@pytest.fixture
def artifact(demo_onnx_int8: Path, tmp_path: Path) -> Path:
    """A copy of the shared artifact: what one test's verify records (its budget) is not the next one's."""
    return Path(shutil.copytree(demo_onnx_int8, tmp_path / demo_onnx_int8.name))


def _shards(capsys: pytest.CaptureFixture[str], artifact: Path, tmp: Path, n: int, *flags: str) -> list[str]:
    partials = []
    for i in range(n):
        partial = tmp / f"shard-{i}.npz"
        code, _ = _run(capsys, "verify", str(artifact), "--shard", f"{i}/{n}", "--partial-out", str(partial), *flags)
        assert code == 0 and partial.exists()
        partials.append(str(partial))
    return partials


@pytest.mark.parametrize("flags", [(), ("--min-cosine", "0.9999999")], ids=["passing", "failing"])
def test_merged_shards_record_the_unsharded_report_and_exit_the_same_way(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...]
) -> None:
    unsharded_code, _ = _run(capsys, "verify", str(artifact), *flags)
    unsharded = json.loads((artifact / "parity.json").read_text())
    partials = _shards(capsys, artifact, tmp_path, 3, *flags)
    (artifact / "parity.json").write_text("{}")  # whatever is there is replaced by the merge
    code, _ = _run(capsys, "verify", str(artifact), "--merge", *reversed(partials))
    assert code == unsharded_code == (1 if flags else 0)
    assert json.loads((artifact / "parity.json").read_text()) == unsharded
    _run(capsys, "verify", str(artifact))  # leave it passing for the next test


def test_partials_that_do_not_make_one_run_are_refused_and_nothing_is_merged(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partials = _shards(capsys, artifact, tmp_path, 2)
    before = (artifact / "parity.json").read_bytes()
    cases = {
        "missing shard(s) 1/2": [partials[0]],
        "both shard 0/2": [partials[0], partials[0], partials[1]],
    }
    for problem, given in cases.items():
        code, err = _run(capsys, "verify", str(artifact), "--merge", *given)
        assert code == 2 and problem in err, err
    code, err = _run(capsys, "verify", str(artifact), "--shard", "3/2", "--partial-out", str(tmp_path / "x.npz"))
    assert code == 2 and "0 <= I < N" in err
    code, err = _run(capsys, "verify", str(artifact), "--merge", *partials, "--eval", str(tmp_path))
    assert code == 2 and "--eval" in err
    mine = tmp_path / "notes.txt"
    mine.write_text("a user's file")
    code, err = _run(capsys, "verify", str(artifact), "--shard", "0/2", "--partial-out", str(mine))
    assert code == 2 and "not a bitedge partial result" in err and mine.read_text() == "a user's file"
    assert (artifact / "parity.json").read_bytes() == before  # nothing merged
