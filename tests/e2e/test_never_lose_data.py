"""Trust nothing bitedge did not write (issue 29): each hostile or careless input is refused with a clear
message and the right exit code, and nothing the user had changes (every file's sha256, before and after).

Outside targets that misbehave are in tests/contract/test_outside_targets.py and test_target_failures.py;
API argument checks in tests/contract/test_library_api.py; hand-edited calibration tables beside the other
table checks in test_hostile_validation.py.
"""

from __future__ import annotations

import http.server
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import hf_classifier
from hostile_fixtures import digests, run, tamper

# ------------------------------------------------------------------------- 1. the float reference's cache


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BITEDGE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "reference"


def _entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if len(p.name) == 64)


def test_a_cache_entry_corrupted_in_place_never_fails_a_good_artifact(
    artifact: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "verify", str(artifact))[0] == 0  # writes the entry
    (entry,) = _entries(cache)
    logits = entry / "logits.f32"
    data = bytearray(logits.read_bytes())
    data[:] = data[len(data) // 2 :] + data[: len(data) // 2]  # same size, the rows of other images
    logits.write_bytes(bytes(data))
    code, _, err = run(capsys, "verify", str(artifact))
    assert code == 0 and "are not usable (they changed since they were written" in err and "running it again" in err
    assert json.loads((artifact / "bitedge.json").read_text())["status"] == "passed"


def test_two_models_swapped_cache_entries_never_fail_their_artifacts(
    artifact: Path, convert_args: list[str], eval_dir: Path, cache: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    other = tmp_path / "other-bit"
    hf_classifier(seed=1).save_pretrained(other)
    args = [*convert_args[:1], str(other), *convert_args[2:]]
    assert run(capsys, *args, "--out", str(tmp_path / "other"))[0] == 0
    assert run(capsys, "verify", str(artifact))[0] == 0
    a, b = _entries(cache)
    shutil.move(a, tmp_path / "swap")
    shutil.move(b, a)
    shutil.move(tmp_path / "swap", b)
    for directory in (artifact, tmp_path / "other"):
        code, _, err = run(capsys, "verify", str(directory))
        assert code == 0 and "they changed since they were written" in err, err
        assert json.loads((directory / "bitedge.json").read_text())["status"] == "passed"


# ------------------------------------------------------------------------------ 3. a damaged partial result


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_merging_a_damaged_partial_names_it_and_records_nothing(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    partials = [tmp_path / f"shard-{i}.npz" for i in range(2)]
    for i, partial in enumerate(partials):
        assert run(capsys, "verify", str(artifact), "--shard", f"{i}/2", "--partial-out", str(partial))[0] == 0
    data = partials[1].read_bytes()
    partials[1].write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04" + os.urandom(200))
    before = digests(artifact)
    code, _, err = run(capsys, "verify", str(artifact), "--merge", *map(str, partials))
    assert code == 2 and f"{partials[1]}: not a bitedge partial result, or a damaged one" in err, err
    assert "run that shard again" in err and "a bug" not in err and digests(artifact) == before


# --------------------------------------------------------------------------------------- 4. RAY_ADDRESS


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """Something that listens but is not Ray: a plain HTTP server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("not an address", "is not an address Ray can join"),
        ("http://127.0.0.1:8265", "is not an address Ray can join"),
        ("ray://127.0.0.1:10001", "Ray Client (ray://) is not supported"),
        ("127.0.0.1:1", "no Ray cluster there (Connection refused)"),
        ("HTTP", "something listens there, but it is not a Ray cluster's GCS"),
    ],
    ids=["malformed", "http-url", "ray-client", "nothing-listens", "not-ray"],
)
def test_a_ray_address_ray_cannot_join_is_refused_within_seconds(
    artifact: Path, http_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    address: str, message: str,
) -> None:  # fmt: skip
    address = f"127.0.0.1:{http_port}" if address == "HTTP" else address
    monkeypatch.setenv("RAY_ADDRESS", address)
    before, start = digests(artifact), time.monotonic()
    code, _, err = run(capsys, "verify", str(artifact), "--engine", "ray")
    assert code == 2 and f"RAY_ADDRESS={address}" in err.replace(repr(address), address) and message in err, err
    assert time.monotonic() - start < 30 and digests(artifact) == before


# ------------------------------------------------------------------------- 5. a source checkpoint that moved


def test_verify_finds_a_moved_checkpoint_by_model_and_checks_its_sha256(
    tiny: Path, convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = Path(shutil.copytree(tiny, tmp_path / "tiny"))
    out = tmp_path / "artifact"
    assert run(capsys, *convert_args[:1], str(source), *convert_args[2:], "--out", str(out))[0] == 0
    moved = source.rename(tmp_path / "moved")
    before = digests(out)
    code, _, err = run(capsys, "verify", str(out))
    assert code == 2 and f"{source}: the checkpoint this artifact was made from is not there" in err
    assert "pass --model PATH" in err and digests(out) == before
    other = tmp_path / "other"
    hf_classifier(seed=1).save_pretrained(other)
    code, _, err = run(capsys, "verify", str(out), "--model", str(other))
    assert code == 2 and f"--model {other}: not the checkpoint this artifact was made from" in err
    assert digests(out) == before
    code, _, _ = run(capsys, "verify", str(out), "--model", str(moved))
    assert code == 0 and json.loads((out / "bitedge.json").read_text())["status"] == "passed"


# ------------------------------------------------------------------- 6. every manifest field a runner uses


@pytest.mark.parametrize(
    "edit",
    [
        {"labels": ["cat", "dog", "bird", "fish", "frog"]},
        {"preprocessing": "resize"},
        {"status": "passed", "parity": {}},
    ],
    ids=["labels", "preprocessing", "parity"],
)
def test_a_hand_edited_manifest_is_caught_by_predict_verify_and_inspect(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str], edit: dict[str, object]
) -> None:
    manifest = json.loads((artifact / "bitedge.json").read_text())
    if edit.get("preprocessing") == "resize":
        edit = {"preprocessing": {**manifest["preprocessing"], "size": {"shortest_edge": 80}}}
    (artifact / "bitedge.json").write_text(json.dumps({**manifest, **edit}, indent=2))
    before = digests(artifact)
    code, out, err = run(capsys, "predict", str(artifact), str(eval_dir))
    assert code == 1 and "bitedge.json was edited since bitedge wrote it" in err and not out
    code, _, err = run(capsys, "verify", str(artifact))
    assert code == 1 and "bitedge.json was edited since bitedge wrote it" in err and "convert again" in err
    code, out, _ = run(capsys, "inspect", str(artifact))
    assert code == 0 and "integrity    MODIFIED: bitedge.json was edited" in out
    assert digests(artifact) == before


def test_inspect_shows_a_changed_file_as_modified(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "inspect", str(artifact))
    assert code == 0 and "integrity    intact" in out
    tamper(artifact)
    code, out, _ = run(capsys, "inspect", str(artifact))
    assert code == 0 and "integrity    MODIFIED: model.onnx changed since the artifact was verified" in out
    code, out, _ = run(capsys, "inspect", str(artifact), "--json")
    assert json.loads(out)["integrity"] == {"changed": ["model.onnx"], "seal": "holds"}


def test_an_older_unsealed_manifest_is_refused_until_verify_seals_it(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((artifact / "bitedge.json").read_text())
    del manifest["seal"]
    (artifact / "bitedge.json").write_text(json.dumps({**manifest, "format_version": 2}, indent=2))
    code, _, err = run(capsys, "predict", str(artifact), str(eval_dir))
    assert code == 1 and "carries no seal (an older bitedge wrote it)" in err and "bitedge verify" in err
    code, _, _ = run(capsys, "verify", str(artifact))
    assert code == 0 and "checked and sealed now" in json.dumps(json.loads((artifact / "parity.json").read_text()))
    assert run(capsys, "predict", str(artifact), str(eval_dir))[0] == 0


# ------------------------------------------------------------------------------- 8. --fallback auto in vain


@pytest.mark.slow
def test_a_fallback_that_would_float_every_layer_says_int8_cannot_meet_the_budget(
    convert_args: list[str], eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    flags = ["--precision", "int8", "--calibration", str(eval_dir), "--fallback", "auto", "--min-cosine", "0.99999999"]
    code, _, err = run(capsys, *convert_args, *flags, "--out", str(out))
    assert code == 1 and "the budget cannot be met with any layer in int8" in err and not out.exists()


# ------------------------------------------------------------------------------------- 10. out of memory


@pytest.mark.slow
def test_running_out_of_memory_is_one_line_saying_what_to_lower(eval_dir: Path, tmp_path: Path) -> None:
    """A real allocation failure: BiT-R152x4 (936 M parameters, 3.7 GB) under a 3 GiB address-space limit."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    out = tmp_path / "out"
    command = [sys.executable, "-m", "bitedge", "convert", "bit-m-r152x4", "--target", "onnx", "--precision", "fp32",
               "--eval", str(eval_dir), "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 1 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "memory ran out; lower --batch or --image-size" in errors[0] and not out.exists()


# ------------------------------------------------------------------------- 11. calibration with no images


@pytest.mark.parametrize("source", ["empty", "unreadable"])
def test_a_calibration_source_without_a_usable_image_is_bad_input(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str
) -> None:
    images = tmp_path / "calibration"
    images.mkdir()
    if source == "unreadable":
        for i in range(3):
            (images / f"{i}.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    code, _, err = run(capsys, *convert_args, "--precision", "int8", "--calibration", str(images), "--out", str(out))
    expected = "no calibration images found" if source == "empty" else "none of the 3 calibration images is usable"
    assert code == 2 and expected in err and not out.exists(), err


# ------------------------------------------------------------------------------------ 9. non-UTF-8 --out


def test_a_non_utf8_out_is_one_clean_line(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / os.fsdecode(b"out\xff")
    code, _, err = run(capsys, *convert_args, "--out", str(out))
    assert code == 2 and err.count("\n") == 1 and "the path is not valid UTF-8" in err and "\\xff" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
