"""The library API (``bitedge.convert``, ``bitedge.verify``) and the CLI over it: honest defaults, errors as
exceptions, a command line that imports no runtime to show its help."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import bitedge
from bitedge.cli import main
from bitedge.errors import BadInputError, BitEdgeError


def test_convert_and_verify_from_python(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path) -> None:
    results = bitedge.convert(
        tiny_hf_dir, tmp_path / "out", targets=["onnx"], precisions=["fp32", "fp16"], eval_images=eval_dir,
        image_size=64,
    )  # fmt: skip
    assert [r.directory.name for r in results] == ["onnx-fp32", "onnx-fp16"] and results.passed
    assert all(r.passed and r.manifest.status == "passed" for r in results)
    assert results[0].report.comparisons[0].metrics.samples == 10
    assert (tmp_path / "out" / "report.html").is_file()  # several artifacts: a report beside them
    again = bitedge.verify(results[0].directory)
    assert again.passed and again.manifest.target == "onnx"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": None}, "convert(): model must be a string or a path, got None"),
        ({"out": 3}, "convert(): out must be a string or a path, got int 3"),
        ({"precisions": []}, "convert(): precisions is empty, so it names nothing; leave it out (None)"),
        ({"targets": []}, "convert(): targets is empty"),
        ({"targets": ["onnx", None]}, "convert(): targets[1] must be a string, got None"),
        ({"batch": "4"}, "convert(): batch must be an integer, got str '4'"),
        ({"batch": True}, "convert(): batch must be an integer, got bool True"),
        ({"overwrite": "yes"}, "convert(): overwrite must be True or False"),
        ({"min_cosine": "0.9"}, "convert(): min_cosine must be a number, got str '0.9'"),
        ({"target_options": ["onnx"]}, "convert(): target_options must be a mapping"),
        ({"log": print, "report": None}, "convert(): report must be True or False, got None"),
    ],
)
def test_every_argument_is_checked_at_the_boundary(
    eval_dir: Path, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {"eval_images": eval_dir, "out": tmp_path / "out", **kwargs}
    with pytest.raises(BadInputError, match=re.escape(message)):
        bitedge.convert(**arguments)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()
    with pytest.raises(BadInputError, match=re.escape("verify(): directory must be a string or a path, got None")):
        bitedge.verify(None)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match=re.escape("merge(): partials is empty")):
        bitedge.merge(tmp_path, [])


def test_one_target_as_a_string_is_that_target(tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path) -> None:
    (result,) = bitedge.convert(tiny_hf_dir, tmp_path / "out", targets="onnx", precisions="fp32", eval_images=eval_dir,
                                image_size=64)  # fmt: skip
    assert result.passed and (result.manifest.target, result.manifest.precision) == ("onnx", "fp32")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "--eval IMAGES (eval_images= in the library)"),
        ({"eval_images": "E", "precisions": ["int8"]}, "--calibration IMAGES (calibration= in the library)"),
        ({"eval_images": "E", "targets": ["tflite"]}, "unknown target 'tflite'"),
        ({"eval_images": "E", "precisions": ["int4"]}, "unknown precision 'int4'"),
        ({"eval_images": "E", "batch": 0}, "batch must be an integer in 1..1024"),
        ({"eval_images": "E", "target_options": {"onnx": {"group_norm": "x"}}}, "'x' is not one of"),
        ({"eval_images": "E", "target_options": {"onnx": {"speed": 1}}}, "target onnx has no option speed"),
        (
            {
                "eval_images": "E",
                "targets": ["openvino"],
                "precisions": ["int8"],
                "calibration_table": "T",
                "quantizer": "nncf",
            },
            "openvino int8 calibrates with its own quantizer, which needs images beside the table",
        ),
        ({"eval_images": "E", "precisions": ["int8"], "calibration_table": "T", "exclude": ["stem"]}, "--exclude"),
    ],
)
def test_bad_requests_raise_before_any_work(
    tiny_hf_dir: Path, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bitedge.convert(tiny_hf_dir, tmp_path / "out", targets=kwargs.pop("targets", ["onnx"]), **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_the_demos_images_are_for_the_demo_only(
    tiny_hf_dir: Path, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-demo model is never verified or calibrated on the demo's 64-px digits, silently."""
    args = ["convert", str(tiny_hf_dir), "--target", "onnx", "--out", str(tmp_path / "o")]
    assert main([*args, "--precision", "fp32"]) == 2
    assert "name the evaluation images for the parity gate with --eval" in capsys.readouterr().err
    assert main([*args, "--precision", "int8", "--eval", str(eval_dir)]) == 2
    assert "needs calibration images: pass --calibration" in capsys.readouterr().err
    assert main(["calibrate", str(tiny_hf_dir), "--out", str(tmp_path / "t.json")]) == 2
    assert "--calibration IMAGES" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "t.json").exists()


def test_errors_are_exceptions_of_one_family_never_system_exit(tmp_path: Path) -> None:
    with pytest.raises(BitEdgeError):
        bitedge.verify(tmp_path)  # not an artifact
    with pytest.raises(BadInputError, match="no such file, directory or preset"):
        bitedge.convert(tmp_path / "missing-model", tmp_path / "o", eval_images=tmp_path)


def test_help_imports_no_runtime_and_no_torch() -> None:
    code = (
        "import sys\n"
        "from bitedge.cli.parser import build_parser\n"
        "text = build_parser().parse_known_args(['convert'])[0] and build_parser().format_help()\n"
        "heavy = sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'coremltools', 'nncf') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout
