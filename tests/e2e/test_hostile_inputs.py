"""Hostile and broken input, generated here: every case gets a clear message, a documented exit code, no
traceback, and the previous good artifact stays untouched. (More checkpoint and config cases live in
test_bad_input.py; interruptions and the lock in test_interruptions.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_fixtures import digests
from PIL import Image
from safetensors.torch import load_file, save_file

from bitedge.cli import main

pytestmark = pytest.mark.slow  # end-to-end runs of seconds each: `pytest` runs them, `-m "not slow"` does not


def _image_corpus(folder: Path) -> dict[str, bool]:
    """File name -> whether it must be classified (True) or refused with a message (False)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
    photo.save(folder / "good.png")
    buffer = (folder / "good.png").read_bytes()
    (folder / "truncated.png").write_bytes(buffer[: len(buffer) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("this is not an image")
    Image.new("L", (20000, 20000)).save(folder / "bomb.png")  # 400 M pixels: past PIL's bomb limit
    Image.fromarray(np.zeros((1, 200_000, 3), np.uint8)).save(folder / "sliver.png")  # 1 x 200000: aspect bomb
    Image.fromarray(np.zeros((20, 4000, 3), np.uint8) + 90).save(folder / "panorama.png")  # 1:200, still fine
    Image.fromarray(rng.integers(0, 65536, (64, 64), dtype=np.uint16)).save(folder / "sixteen-bit.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    photo.convert("P").save(folder / "palette.png")
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:])
    return {
        "good.png": True, "truncated.png": False, "empty.jpg": False, "notes.png": False, "bomb.png": False,
        "sliver.png": False, "panorama.png": True, "sixteen-bit.png": True, "cmyk.jpg": True, "palette.png": True,
        "animated.gif": True,
    }  # fmt: skip


def test_hostile_images_are_refused_one_by_one(
    tiny_hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _image_corpus(tmp_path / "images")
    assert main(["predict", str(tiny_hf_dir), str(tmp_path / "images"), "--json"]) == 2
    captured = capsys.readouterr()
    records = {Path(r["image"]).name: r for r in json.loads(captured.out)}
    assert set(records) == set(expected)
    for name, readable in expected.items():
        assert ("predictions" in records[name]) == readable, records[name]
    assert "decompression bomb" in records["bomb.png"]["error"]
    assert "aspect ratio" in records["sliver.png"]["error"]
    assert "not a readable image" in records["notes.png"]["error"]
    assert "Traceback" not in captured.err


def test_conversion_skips_and_reports_hostile_eval_images(
    tiny_hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = _image_corpus(tmp_path / "images")
    out = tmp_path / "artifact"
    args = ["convert", str(tiny_hf_dir), "--target", "onnx", "--precision", "fp32", "--out", str(out)]
    assert main([*args, "--eval", str(tmp_path / "images")]) == 0
    parity = json.loads((out / "parity.json").read_text())
    assert parity["comparisons"][0]["metrics"]["samples"] == sum(expected.values())
    refused = list(expected.values()).count(False)
    assert any(f"skipped {refused} images that could not be used" in n for n in parity["notes"])
    capsys.readouterr()
    out2 = tmp_path / "strict"
    strict = ["--eval", str(tmp_path / "images"), "--calibration", str(tmp_path / "images"), "--strict-images"]
    assert main([*args[:-1], str(out2), "--precision", "int8", *strict]) == 2
    assert "Traceback" not in capsys.readouterr().err and not out2.exists()


def test_inf_weights_are_refused(tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tensors = load_file(str(tiny_hf_dir / "model.safetensors"))
    tensors["classifier.1.weight"][0, 0] = float("inf")
    save_file(tensors, str(tiny_hf_dir / "model.safetensors"))
    assert main(["inspect", str(tiny_hf_dir)]) == 2
    assert "inf" in capsys.readouterr().err.lower()


def test_a_tensor_shadowed_by_a_second_shard_is_refused(tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tensors = load_file(str(tiny_hf_dir / "model.safetensors"))
    (tiny_hf_dir / "model.safetensors").unlink()
    keys = sorted(tensors)
    first = {k: tensors[k] for k in keys[:10]}
    second = {k: tensors[k] for k in keys[10:]} | {keys[0]: torch.zeros_like(tensors[keys[0]])}
    save_file(first, str(tiny_hf_dir / "a.safetensors"))
    save_file(second, str(tiny_hf_dir / "b.safetensors"))
    index = {"weight_map": {k: "a.safetensors" for k in first} | {k: "b.safetensors" for k in keys[10:]}}
    (tiny_hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    assert main(["inspect", str(tiny_hf_dir)]) == 2
    assert "also appear in an earlier shard" in capsys.readouterr().err


def test_enormous_depths_are_refused_before_allocating(tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((tiny_hf_dir / "config.json").read_text())
    (tiny_hf_dir / "config.json").write_text(json.dumps({**config, "depths": [1, 10**7, 1, 1]}))
    assert main(["inspect", str(tiny_hf_dir)]) == 2
    assert "depths[1]" in capsys.readouterr().err


@pytest.fixture
def good_artifact(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path) -> tuple[Path, list[str], dict[str, str]]:
    out = tmp_path / "artifact"
    args = ["convert", str(tiny_hf_dir), "--target", "onnx", "--precision", "fp32", "--eval", str(eval_dir)]
    assert main([*args, "--out", str(out)]) == 0
    return out, args, digests(out)


def test_a_full_disk_leaves_the_previous_artifact_untouched(
    good_artifact: tuple[Path, list[str], dict[str, str]],
) -> None:
    """A write limit (RLIMIT_FSIZE, the file-size error a full disk gives) in the middle of an overwrite."""
    out, args, before = good_artifact
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from bitedge.cli import main\n"
        f"sys.exit(main({[*args, '--out', str(out), '--overwrite']!r}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr
    assert "File too large" in result.stderr and "free space" in result.stderr
    assert "Traceback" not in result.stderr
    assert digests(out) == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no leftover temp directory


@pytest.mark.parametrize("where", ["model", "eval"])
def test_writing_over_an_input_is_refused(
    good_artifact: tuple[Path, list[str], dict[str, str]], tiny_hf_dir: Path, eval_dir: Path, where: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, args, _ = good_artifact
    target = tiny_hf_dir if where == "model" else eval_dir
    before = digests(target)
    assert main([*args, "--out", str(target), "--overwrite"]) == 2
    assert "an input of this conversion" in capsys.readouterr().err
    assert digests(target) == before


def test_output_on_a_read_only_file_system(
    good_artifact: tuple[Path, list[str], dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """/sys refuses new directories even to root (permission bits alone would not stop root)."""
    _, args, _ = good_artifact
    assert main([*args, "--out", "/sys/bitedge-artifact"]) == 2
    err = capsys.readouterr().err
    assert "/sys" in err and "choose another --out" in err and "Traceback" not in err
