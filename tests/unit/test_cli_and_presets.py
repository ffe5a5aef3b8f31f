"""`bitedge inspect`, `--version`, the fast `--help`, and the released-architecture presets."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitedge import PRESETS, __version__
from bitedge.cli import main
from bitedge.model.summary import count_macs, count_parameters


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bitedge {__version__}"


def test_console_script_help_does_not_import_torch() -> None:
    done = subprocess.run(["bitedge", "--help"], capture_output=True, text=True, check=True)
    assert "inspect" in done.stdout
    probe = "import sys, bitedge.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_inspect_preset_r50x1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "bit-s-r50x1", "--resolution", "224"]) == 0
    out = capsys.readouterr().out
    assert "25,549,352" in out  # BiT-S R50x1 with its 1000-way head
    assert "4.09 G" in out
    assert "architecture only" in out


def test_inspect_checkpoint_reports_format_and_sha256(tiny_hf_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny_hf_dir), "--json", "--resolution", "64"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["source_format"] == "transformers"
    assert summary["sha256"] == hashlib.sha256((tiny_hf_dir / "model.safetensors").read_bytes()).hexdigest()
    assert summary["depths"] == [1, 2, 1, 1] and summary["num_labels"] == 5
    assert summary["macs"] > 0 and summary["resolution"] == 64


def test_macs_scale_with_resolution_squared() -> None:
    config = PRESETS["bit-s-r50x1"].config()
    assert count_macs(config, 448) == pytest.approx(4 * count_macs(config, 224), rel=0.01)


@pytest.mark.parametrize(
    ("name", "millions", "labels"),
    [
        ("bit-s-r50x1", 25.549352, 1000),
        ("bit-m-r50x1", 25.549352 + 2048 * (21843 - 1000) / 1e6 + (21843 - 1000) / 1e6, 21843),
        ("bit-m-r152x4-ilsvrc2012", 936.5, 1000),
    ],
)
def test_preset_sizes(name: str, millions: float, labels: int) -> None:
    preset = PRESETS[name]
    config = preset.config()
    assert config.num_labels == labels
    assert count_parameters(config) / 1e6 == pytest.approx(millions, abs=0.05)


def test_width_factor_reaches_stem_and_head() -> None:
    config = PRESETS["bit-m-r50x3"].config()
    assert config.embedding_size == 192 and config.hidden_sizes[-1] == 6144
    assert PRESETS["bit-m-r152x4-ilsvrc2012"].resolution == 480
    assert PRESETS["bit-m-r50x1-ilsvrc2012"].image_processor().crop_size == {"height": 448, "width": 448}


def test_preset_loads_seeded_and_runs() -> None:
    from bitedge import load_model

    preset = PRESETS["bit-s-r50x1"]
    a, b = load_model("bit-s-r50x1", seed=1), load_model("bit-s-r50x1", seed=1)
    assert a.source.format == "preset" and a.image_processor == preset.image_processor()
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert (x == y).all(), name
