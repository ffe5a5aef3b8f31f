"""Hostile and careless use, part 4 (issue 22): errors, not tracebacks, and verdicts that survive.

Malformed manifests and reports, non-UTF-8 file names, unexpected exceptions, read-only places.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hostile_fixtures import digests, run
from safetensors.torch import save_file

from bitedge.cli import main

# ----------------------------------------------------------------------------- malformed manifests and files


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input": {"name": "x", "shape": "NCHW", "dtype": "float32"}}, "input.shape: expected a list"),
        ({"status": None}, "status: expected a string, got null"),
        ({"status": "great"}, "status 'great' is not one of"),
        ({"labels": [1, 2, 3]}, "labels[0]: expected a string"),
        ({"files": ["../../../etc/passwd"]}, "outside the artifact directory"),
        ({"format_version": 99}, "written by a newer bitedge"),
        ({"source": None}, "source: expected an object, got null"),
        ({"calibration": {"method": 3}}, "calibration.method"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "verify", "inspect"])
def test_malformed_manifests_are_one_line_errors(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], message: str,
    command: str,
) -> None:  # fmt: skip
    manifest = json.loads((artifact / "bitedge.json").read_text())
    (artifact / "bitedge.json").write_text(json.dumps({**manifest, **change}))
    before = digests(artifact)
    extra = [str(eval_dir)] if command == "predict" else []
    code, _, err = run(capsys, command, str(artifact), *extra)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert digests(artifact) == before


def test_a_manifest_missing_fields(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((artifact / "bitedge.json").read_text())
    del manifest["input"], manifest["labels"]
    (artifact / "bitedge.json").write_text(json.dumps(manifest))
    code, _, err = run(capsys, "verify", str(artifact))
    assert code == 2 and "missing input, labels" in err


def test_a_broken_parity_report_in_a_report_directory(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (artifact / "parity.json").write_text("[1, 2")
    code, _, err = run(capsys, "report", str(artifact), "--no-verify-hashes")
    assert code == 2 and "parity.json" in err


def test_non_utf8_file_names_work_everywhere(
    tiny: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    shutil.copytree(eval_dir, images)
    odd = os.fsdecode(b"\xff\xfe-photo.png")
    shutil.copy(next((images / "LABEL_0").iterdir()), images / "LABEL_0" / odd)
    out = tmp_path / "out"
    args = ["convert", str(tiny), "--target", "onnx", "--precision", "fp32", "fp16", "--eval", str(images)]
    code, _, _ = run(capsys, *args, "--image-size", "64", "--out", str(out))
    assert code == 0 and (out / "report.html").is_file()
    code, text, _ = run(capsys, "predict", str(out / "onnx-fp32"), str(images / "LABEL_0"))
    assert code == 0 and "\\xff\\xfe-photo.png" in text


# ------------------------------------------------------------------------------------ errors, not tracebacks


@pytest.mark.parametrize(
    ("error", "message", "code"),
    [
        (RuntimeError("boom"), "unexpected RuntimeError: boom", 1),
        (MemoryError(), "memory ran out; lower --batch or --image-size", 1),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                      "tried to allocate 4000000000000 bytes. Error code 12 (Cannot allocate memory)"),
         "memory ran out", 1),  # torch's words for it
        (RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running MatMul node. "
                      "BFCArena::AllocateRawInternal Failed to allocate memory for requested buffer of size 16000"),
         "memory ran out", 1),  # onnxruntime's
    ],
    ids=["unexpected", "memory-error", "torch-alloc", "onnxruntime-alloc"],
)  # fmt: skip
def test_unexpected_errors_are_one_line_with_a_pointer_to_debug(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    error: BaseException, message: str, code: int,
) -> None:  # fmt: skip
    import bitedge.pipeline.convert

    def broken(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(bitedge.pipeline.convert, "fold", broken)
    out = tmp_path / "out"
    got, _, err = run(capsys, *convert_args, "--out", str(out))
    last = err.strip().splitlines()[-1]
    assert got == code and message in last and err.count("bitedge: error:") == 1 and not out.exists()
    if "boom" in str(error):
        assert "--debug" in err
        with pytest.raises(RuntimeError, match="boom"):
            main(["--debug", *convert_args, "--out", str(out)])


# --------------------------------------------------------------------------------------- verdicts survive


def test_verify_of_a_read_only_artifact_still_gives_its_verdict(
    artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only bind mount: file permissions alone do not stop root, and the suite runs as root here."""
    if os.geteuid() != 0:
        artifact.chmod(0o555)
    else:
        mounted = subprocess.run(["mount", "--bind", str(artifact), str(artifact)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot make a read-only mount here: {mounted.stderr.decode().strip()}")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(artifact)], check=True)
    try:
        before = digests(artifact)
        code, out, err = run(capsys, "verify", str(artifact))
        assert code == 0 and "PASS" in out and "the verdict above was not recorded" in err
        assert digests(artifact) == before
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(artifact)], check=True)
        else:
            artifact.chmod(0o755)


def test_a_read_only_output_parent_is_refused_before_work(
    convert_args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, *convert_args, "--out", "/proc/bitedge-out")
    assert (code == 2 and "choose an --out where you can write" in err) or "choose another --out" in err


def test_a_checkpoint_with_nan_weights_is_refused(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(tiny / "model.safetensors"))
    tensors["bit.norm.bias"][0] = torch.nan
    save_file(tensors, str(tmp_path / "weights.safetensors"))
    shutil.copy(tiny / "config.json", tmp_path / "config.json")
    code, _, err = run(capsys, "inspect", str(tmp_path / "weights.safetensors"))
    assert code == 2 and "NaN or inf" in err
