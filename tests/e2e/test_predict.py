"""`bitedge predict` on real photos with each CPU-runnable target, and `bitedge inspect` on artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from bitedge.cli import main

pytestmark = pytest.mark.slow  # end-to-end runs of seconds each: `pytest` runs them, `-m "not slow"` does not


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict") / "demo"
    args = ["convert", "--target", "onnx", "openvino", "--precision", "fp32", "int8", "--out", str(root)]
    assert main(args) == 0
    return root


@pytest.fixture
def images(tmp_path: Path, photos: dict[str, Image.Image]) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, photo in photos.items():
        photo.save(folder / f"{name}.png")
    return folder


@pytest.mark.parametrize("target", ["onnx-fp32", "onnx-int8", "openvino-fp32", "openvino-int8", "bitedge/demo"])
def test_predict_real_photos_and_digits(
    artifacts: Path, images: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = target if target == "bitedge/demo" else str(artifacts / target)
    digit = next((Path(__file__).parents[2] / "bitedge" / "demo" / "eval" / "4").iterdir())
    assert main(["predict", spec, str(images), str(digit), "--top-k", "3", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 5  # the four photos of the directory, then the digit
    for record in records:
        scores = [p["score"] for p in record["predictions"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    assert records[-1]["predictions"][0]["label"] == "4"  # a held-out "4" the model classifies right


def test_predict_reports_a_corrupt_image_and_goes_on(
    artifacts: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["predict", str(artifacts / "onnx-fp32"), str(images)])
    out, err = capsys.readouterr()
    assert code == 2 and "1 of 5 images could not be used" in err
    assert "corrupt.png: ERROR" in out and out.count(": ERROR") == 1 and "astronaut.png:" in out


def test_predict_bad_arguments(artifacts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(artifacts / "onnx-fp32"), str(tmp_path / "empty")]) == 2
    assert "no images" in capsys.readouterr().err


def test_inspect_artifact(artifacts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(artifacts / "openvino-int8")]) == 0
    out = capsys.readouterr().out
    assert "openvino int8" in out and "status       passed" in out and "calibration  entropy" in out
    assert main(["inspect", str(artifacts / "onnx-fp32"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "onnx"
