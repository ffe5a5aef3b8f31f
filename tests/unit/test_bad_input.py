"""Broken and hostile input: each case is a clear one-line error and exit code 2 from the CLI, no traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_32_GROUPS, hf_classifier
from safetensors.torch import save_file
from test_checkpoint_formats import to_npz

from bitedge import load_model
from bitedge.cli import main
from bitedge.errors import CheckpointError, ConfigError


def _cli_fails_cleanly(path: Path, capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    code = main(["inspect", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("bitedge: error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    return err


def test_config_that_is_not_bit(tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = json.loads((tiny_hf_dir / "config.json").read_text())
    (tiny_hf_dir / "config.json").write_text(json.dumps({**config, "model_type": "resnet"}))
    _cli_fails_cleanly(tiny_hf_dir, capsys, "'resnet'", "not BiT")


def test_config_that_is_not_json(tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_hf_dir / "config.json").write_text("{ this is not json")
    _cli_fails_cleanly(tiny_hf_dir, capsys, "config.json")


def test_truncated_safetensors(tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = tiny_hf_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _cli_fails_cleanly(tiny_hf_dir, capsys, "model.safetensors", "truncated")


def test_state_dict_of_another_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "bn1.weight": torch.ones(64), "fc.weight": torch.zeros(10, 64)}
    path = tmp_path / "resnet50.safetensors"
    save_file(resnet, str(path))
    _cli_fails_cleanly(path, capsys, "not look like a BiT checkpoint", "conv1.weight")


def test_transformers_weights_of_another_bit_shape(
    tiny_hf_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weights that do not fit their config: the error lists the first offending keys."""
    config = json.loads((tiny_hf_dir / "config.json").read_text())
    (tiny_hf_dir / "config.json").write_text(json.dumps({**config, "depths": [1, 1, 1, 1]}))
    err = _cli_fails_cleanly(tiny_hf_dir, capsys, "unexpected keys", "stages.1.layers.1")
    assert "does not fit" in err


def test_npz_with_missing_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arrays = to_npz(hf_classifier(num_groups=32, **TINY_32_GROUPS).state_dict())
    del arrays["resnet/block2/unit01/b/group_norm/gamma"]
    path = tmp_path / "broken.npz"
    np.savez(path, **arrays)
    _cli_fails_cleanly(path, capsys, "missing keys", "stages.1.layers.0.norm2.weight")


def test_pickle_with_non_tensor_objects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "weights.pth"
    torch.save({"stem.conv.weight": torch.zeros(1), "note": "trained on my laptop"}, path)
    _cli_fails_cleanly(path, capsys, "not tensors", "note")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"stem.conv.weight": torch.zeros(1), "payload": _Exploit(marker)}, path)
    _cli_fails_cleanly(path, capsys, "refused")
    assert not marker.exists()


def test_nan_weights_are_refused(tiny_hf_dir: Path) -> None:
    from safetensors.torch import load_file

    weights = tiny_hf_dir / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["bit.norm.weight"][0] = float("nan")
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match="NaN"):
        load_model(tiny_hf_dir)


def test_directory_without_weights(tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_hf_dir / "model.safetensors").unlink()
    _cli_fails_cleanly(tiny_hf_dir, capsys, "no weights found")


def test_unknown_file_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07")
    _cli_fails_cleanly(path, capsys, "unknown checkpoint type")


def test_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    _cli_fails_cleanly(Path("bit-m-r51x1"), capsys, "no such file", "bit-m-r50x1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"depths": [1, 2, 1]}, "3 depths but 4 hidden_sizes"),
        ({"layer_type": "resnet"}, "layer_type"),
        ({"global_padding": "reflect"}, "global_padding"),
        ({"depths": [1, -2, 1, 1]}, "depths[1]"),
        ({"hidden_sizes": [16, 32, 32, 10**9]}, "hidden_sizes[3]"),
        ({"num_groups": 5}, "cannot split"),
        ({"out_features": ["stage9"]}, "out_features"),
        ({"depths": "deep"}, "depths"),
    ],
)
def test_invalid_config_values(
    tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str], change: dict[str, object], message: str
) -> None:
    config = json.loads((tiny_hf_dir / "config.json").read_text())
    (tiny_hf_dir / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConfigError):
        load_model(tiny_hf_dir)
    _cli_fails_cleanly(tiny_hf_dir, capsys, message)


def test_bad_resolution_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "bit-s-r50x1", "--resolution", "-3"])
    assert exit_info.value.code == 2
