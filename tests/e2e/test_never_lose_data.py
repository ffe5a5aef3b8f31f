"""Hostile and careless use (issue 22): every case asserts the exit code, the message, and that nothing of the
user's was lost — their files, a passing artifact, a verdict.

Ownership of --out, a failing rebuild beside a passing artifact, stale partial directories, integrity on every
use, the config beside a checkpoint, validation before work, one-line errors, verdicts that survive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import demo_eval_subset, hf_classifier
from safetensors.torch import save_file

from bitedge.cli import main
from bitedge.hashing import sha256_file


def digests(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or ``path`` itself) with its sha256: 'nothing was lost' is equality."""
    if path.is_file():
        return {path.name: sha256_file(path)}
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tiny") / "tiny-bit"
    hf_classifier().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def convert_args(tiny: Path, eval_dir: Path) -> list[str]:
    """One tiny ONNX fp32 artifact (a second or two); add --out."""
    return [
        "convert",
        str(tiny),
        "--target",
        "onnx",
        "--precision",
        "fp32",
        "--eval",
        str(eval_dir),
        "--image-size",
        "64",
    ]


@pytest.fixture(scope="module")
def template(convert_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("template") / "artifact"
    assert main([*convert_args, "--out", str(out)]) == 0
    return out


@pytest.fixture
def artifact(template: Path, tmp_path: Path) -> Path:
    """A passing artifact of the user's own, to be protected."""
    copy = tmp_path / "artifact"
    shutil.copytree(template, copy)
    return copy


# ------------------------------------------------------------------------------------------------- ownership


def test_overwrite_refuses_a_directory_bitedge_did_not_write(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "notes.txt").write_text("important")
    before = digests(scratch)
    code, _, err = run(capsys, *convert_args, "--out", str(scratch), "--overwrite")
    assert code == 2 and "notes.txt" in err and "not a bitedge artifact" in err
    assert digests(scratch) == before


def test_overwrite_refuses_the_current_directory_holding_a_project(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')\n")
    (project / "README.md").write_text("# mine\n")
    before = digests(project)
    monkeypatch.chdir(project)
    code, _, err = run(capsys, *convert_args, "--out", ".", "--overwrite")
    assert code == 2 and "README.md" in err and "nothing was touched" in err
    assert digests(project) == before


def test_overwrite_refuses_an_artifact_holding_a_file_of_the_users(
    convert_args: list[str], artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (artifact / "my-notes.md").write_text("measured on my phone: 12 ms")
    before = digests(artifact)
    code, _, err = run(capsys, *convert_args, "--out", str(artifact), "--overwrite")
    assert code == 2 and "my-notes.md" in err and "did not write" in err
    assert digests(artifact) == before


def test_overwrite_replaces_bitedges_own_artifact(
    convert_args: list[str], artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(capsys, *convert_args, "--out", str(artifact), "--overwrite", "--precision", "fp16")
    assert code == 0 and json.loads((artifact / "bitedge.json").read_text())["precision"] == "fp16"
    assert [p.name for p in artifact.parent.iterdir() if p.name.startswith(".")] == []


def test_existing_artifact_needs_overwrite(
    convert_args: list[str], artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(artifact)
    code, _, err = run(capsys, *convert_args, "--out", str(artifact))
    assert code == 2 and "pass --overwrite" in err
    assert digests(artifact) == before


def test_an_empty_directory_is_used_as_is(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    code, _, _ = run(capsys, *convert_args, "--out", str(out))
    assert code == 0 and (out / "bitedge.json").is_file()


def test_out_that_is_a_file(convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"my own model")
    code, _, err = run(capsys, *convert_args, "--out", str(target), "--overwrite")
    assert code == 2 and "not a directory" in err and target.read_bytes() == b"my own model"


def test_a_symlink_out_is_not_followed_into_the_users_directory(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("\\section{}")
    link = tmp_path / "out"
    link.symlink_to(mine)
    before = digests(mine)
    code, _, err = run(capsys, *convert_args, "--out", str(link), "--overwrite")
    assert code == 2 and "not a directory" in err
    assert link.is_symlink() and digests(mine) == before


@pytest.mark.parametrize("name", ["report.md", "report.html"])
def test_several_artifacts_never_overwrite_the_users_report(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / name).write_text("my own report")
    code, _, err = run(capsys, *convert_args, "--precision", "fp32", "fp16", "--out", str(root), "--overwrite")
    assert code == 2 and name in err and "not written by bitedge" in err
    assert (root / name).read_text() == "my own report" and sorted(p.name for p in root.iterdir()) == [name]


def test_several_artifacts_do_not_go_into_an_artifact(
    convert_args: list[str], artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(artifact)
    code, _, err = run(capsys, *convert_args, "--precision", "fp32", "fp16", "--out", str(artifact), "--overwrite")
    assert code == 2 and "is an artifact directory" in err
    assert digests(artifact) == before


def test_bitedges_own_report_is_rebuilt_beside_new_artifacts(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "out"
    assert run(capsys, *convert_args, "--precision", "fp32", "fp16", "--out", str(root))[0] == 0
    code, out, _ = run(capsys, *convert_args, "--precision", "fp32", "fp16", "--out", str(root), "--overwrite")
    assert code == 0 and "report:" in out


def test_failed_sibling_of_the_users_is_protected(
    convert_args: list[str], artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sibling = artifact.with_name(f"{artifact.name}.failed")
    sibling.mkdir()
    (sibling / "keep.txt").write_text("mine")
    code, _, err = run(capsys, *convert_args, "--out", str(artifact), "--overwrite")
    assert code == 2 and "keep.txt" in err and (sibling / "keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def demo_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 of the demo's held-out digits, in their class folders: a quick but real int8 gate."""
    return demo_eval_subset(tmp_path_factory.mktemp("demo-eval"), per_class=4)


def test_a_failing_rebuild_never_replaces_a_passing_artifact(
    demo_subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, broken = tmp_path / "table.json", tmp_path / "broken.json"
    assert run(capsys, "calibrate", "--out", str(table), "--calibration-size", "32")[0] == 0
    data = json.loads(table.read_text())
    data["amax"] = dict.fromkeys(data["amax"], 1e-6)  # every range collapsed: int8 says nothing useful
    broken.write_text(json.dumps(data))
    out = tmp_path / "int8"
    args = ["convert", "--target", "onnx", "--precision", "int8", "--eval", str(demo_subset), "--out", str(out)]
    assert run(capsys, *args, "--calibration-table", str(table))[0] == 0
    before = digests(out)
    code, out_text, err = run(capsys, *args, "--calibration-table", str(broken), "--overwrite")
    failed = out.with_name("int8.failed")
    assert code == 1 and str(failed) in err and str(out) in err and "kept as it was" in err
    assert "FAIL" in out_text
    assert digests(out) == before and json.loads((out / "bitedge.json").read_text())["status"] == "passed"
    assert json.loads((failed / "bitedge.json").read_text())["status"] == "failed"


def test_bench_refuses_to_overwrite_the_users_results_before_timing(
    artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "bench.json").write_text('{"mine": true}')
    start = time.monotonic()
    code, _, err = run(capsys, "bench", str(artifact), "--out", str(results))
    assert code == 2 and "bench.json" in err and time.monotonic() - start < 5
    assert (results / "bench.json").read_text() == '{"mine": true}'


def test_report_refuses_to_overwrite_the_users_report(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (artifact / "report.md").write_text("my notes")  # also makes the artifact hold a file of the user's
    code, _, err = run(capsys, "report", str(artifact))
    assert code == 2 and "report.md" in err and (artifact / "report.md").read_text() == "my notes"


def test_calibrate_overwrite_replaces_only_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": 1}')
    code, _, err = run(capsys, "calibrate", "--out", str(mine), "--overwrite")
    assert code == 2 and "not a bitedge calibration table" in err and mine.read_text() == '{"mine": 1}'


# -------------------------------------------------------------------------------- stale partial directories


def test_stale_partial_directory_of_a_killed_run_is_cleaned(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "artifact"
    partial = tmp_path / ".artifact.partial-x1y2"  # what SIGKILL leaves: no handler ran
    partial.mkdir()
    (partial / "model.onnx").write_bytes(b"half")
    (tmp_path / ".artifact.lock").touch()
    code, _, err = run(capsys, *convert_args, "--out", str(out))
    assert code == 0 and f"removed {partial}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_artifact_caught_between_two_renames_is_restored(
    convert_args: list[str], artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = digests(artifact)
    backup = artifact.with_name(".artifact.old-12345")  # killed after moving the old one aside
    artifact.rename(backup)
    code, _, err = run(capsys, *convert_args, "--out", str(artifact))
    assert code == 2 and f"restored {artifact}" in err and "pass --overwrite" in err
    assert digests(artifact) == before and not backup.exists()


# ------------------------------------------------------------------------------------------ integrity on use


def _tamper(artifact: Path) -> None:
    """Negate the head's weights: a confident, wrong model with the same file size."""
    proto = onnx.load(str(artifact / "model.onnx"))
    for tensor in proto.graph.initializer:
        if tensor.name == "classifier.1.weight":
            tensor.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(tensor), tensor.name))
    onnx.save(proto, str(artifact / "model.onnx"))


def _mark_failed(artifact: Path) -> None:
    manifest = json.loads((artifact / "bitedge.json").read_text())
    (artifact / "bitedge.json").write_text(json.dumps({**manifest, "status": "failed"}))


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_a_tampered_artifact_is_refused(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    _tamper(artifact)
    extra = [str(eval_dir)] if command == "predict" else ["--runs", "2", "--duration", "0.01"]
    code, out, err = run(capsys, command, str(artifact), *extra)
    assert code == 1 and "model.onnx changed since the artifact was verified" in err and "--no-verify-hashes" in err
    assert "LABEL_" not in out  # nothing was classified


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_a_failed_artifact_is_refused(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    _mark_failed(artifact)
    extra = [str(eval_dir)] if command == "predict" else ["--runs", "2", "--duration", "0.01"]
    code, _, err = run(capsys, command, str(artifact), *extra)
    assert code == 1 and "failed its parity gate" in err and "--allow-failed" in err


def test_allowed_failed_and_unchecked_artifacts_are_stated(
    artifact: Path, eval_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _mark_failed(artifact)
    code, out, err = run(capsys, "predict", str(artifact), str(eval_dir), "--allow-failed")
    assert code == 0 and "LABEL_" in out and "using an artifact that failed its parity gate" in err
    _tamper(artifact)
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
    _tamper(artifact)
    code, _, err = run(capsys, "report", str(artifact))
    assert code == 1 and "changed since the artifact was verified" in err
    assert "MODIFIED" in (artifact / "report.md").read_text()


# ----------------------------------------------------------------------------------------- the model you mean


def test_a_checkpoint_file_uses_the_config_beside_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """8 GroupNorm groups: loaded with BiT's default 32 it would be a different model that still converts."""
    import torch

    from bitedge import load_model

    oracle = hf_classifier(num_groups=8, embedding_size=32, hidden_sizes=[32, 64, 64, 128])
    folder = tmp_path / "ckpt"
    oracle.save_pretrained(folder)
    loaded = load_model(folder / "model.safetensors")
    assert loaded.config.num_groups == 8
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded(pixels).logits, oracle(pixels).logits, atol=1e-5)
    code, out, _ = run(capsys, "inspect", str(folder / "model.safetensors"))
    assert code == 0 and "config.json" not in out


def test_a_config_that_contradicts_the_weights_names_both(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(tiny / "model.safetensors", folder / "weights.safetensors")
    config = json.loads((tiny / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_sizes": [16, 32, 64, 64]}))
    code, _, err = run(capsys, "inspect", str(folder / "weights.safetensors"))
    assert code == 2 and "weights.safetensors" in err and str(folder / "config.json") in err


def test_a_foreign_config_beside_a_checkpoint_is_refused(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(tiny / "model.safetensors", folder / "weights.safetensors")
    (folder / "config.json").write_text(json.dumps({"model_type": "resnet", "depths": [3, 4, 6, 3]}))
    code, _, err = run(capsys, "inspect", str(folder / "weights.safetensors"))
    assert code == 2 and "'resnet'" in err


# ------------------------------------------------------------------------------------ validate before work


def test_repeated_precisions_are_merged(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = run(
        capsys, *convert_args, "--precision", "fp32", "fp32", "--target", "onnx", "onnx", "--out", str(out)
    )
    assert code == 0 and "another bitedge run" not in err and (out / "bitedge.json").is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--precision", "int8", "--calibration-table", "T", "--exclude", "stem"], "--exclude would be ignored"),
        (["--calibration", "X"], "only apply to int8"),
        (["--quantizer", "bitedge"], "only apply to int8"),
        (["--coreml-target", "iOS17"], "options of the coreml target were given, but no coreml artifact"),
        (["--tensor-input"], "options of the coreml target were given"),
        (["--target", "openvino", "--onnx-group-norm", "native"], "options of the onnx target were given"),
        (["--precision", "int8", "--quantizer", "nncf"], "--quantizer nncf is not available for onnx"),
        (["--precision", "int8", "--calibration-table", "T", "--calibration", "X"], "--calibration would be"),
        (["--image-size", "100000"], "2048 px"),
        (["--image-size", "8"], "32..2048"),
        (["--batch", "0"], "positive integer"),
        (["--batch", "100000"], "must fit in memory"),
        (["--threads", "0"], "positive integer"),
        (["--calibration-size", "0"], "positive integer"),
    ],
)
def test_conflicting_or_out_of_bounds_flags_fail_before_any_work(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = tmp_path / "out"
    start = time.monotonic()
    try:
        code = main([*convert_args, "--out", str(out), *flags])
    except SystemExit as exc:  # argparse's own bounds: usage line and exit 2
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert time.monotonic() - start < 10 and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_absurd_preprocessing_size_is_refused_with_the_reason(
    tiny: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    (model / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 16384}, "crop_size": 16384}))
    out = tmp_path / "out"
    args = ["convert", str(model), "--target", "onnx", "--precision", "fp32", "--eval", str(eval_dir)]
    code, _, err = run(capsys, *args, "--out", str(out))
    assert code == 2 and "preprocessing" in err and "16384x16384" in err and not out.exists()


@pytest.mark.parametrize("problem", ["nan", "size"])
def test_bad_calibration_arrays_fail_before_the_reference_pass(
    convert_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    pixels = np.zeros((4, 3, 64 if problem == "nan" else 32, 64 if problem == "nan" else 32), np.float32)
    if problem == "nan":
        pixels[2, 0, 5, 5] = np.nan
    np.save(tmp_path / "pixels.npy", pixels)
    out = tmp_path / "out"
    flags = ["--precision", "int8", "--calibration", str(tmp_path / "pixels.npy"), "--out", str(out)]
    code, _, err = run(capsys, *convert_args, *flags)
    assert code == 2 and ("sample 2 holds NaN" in err if problem == "nan" else "model takes 64x64" in err)
    assert "float reference" not in err and not out.exists()


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
        (MemoryError(), "out of memory", 1),
    ],
)
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
    if isinstance(error, RuntimeError):
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
