"""The conversion report, rendered and checked in a real browser (Debian's headless Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bitedge.cli import main

pytestmark = pytest.mark.slow  # end-to-end runs of seconds each: `pytest` runs them, `-m "not slow"` does not

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report") / "demo"
    args = ["convert", "--target", "onnx", "openvino", "--precision", "fp32", "int8", "--out", str(root), "--bench"]
    assert main(args) == 0
    return root


def test_report_files_and_rebuild(converted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = (converted / "report.html").read_text()
    assert page.count('class="artifact-row"') == 4
    for part in ("plot-error", "plot-latency", "id='per-class'"):
        assert part in page
    assert "latency-note" not in page  # timed: the latency section, not the note
    assert "http://" not in page and "https://" not in page  # self-contained
    markdown = (converted / "report.md").read_text()
    assert "| onnx int8 |" in markdown and "| openvino fp32 |" in markdown
    (converted / "report.html").unlink()
    assert main(["report", str(converted)]) == 0
    assert (converted / "report.html").is_file() and "report.html" in capsys.readouterr().out
    assert main(["report", str(converted / "onnx-fp32" / "parity.md")]) == 2


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get install chromium (.ci/run installs it)")
def test_report_renders_in_chromium(converted: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    url = (converted / "report.html").as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [CHROMIUM, *FLAGS, *profile, "--virtual-time-budget=5000", "--enable-logging=stderr", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    images = re.search(r'data-images="(\d+)"', dom.stdout)
    broken = re.search(r'data-broken-images="(\d+)"', dom.stdout)
    assert images and broken, "the page's load check did not run"
    assert int(images.group(1)) >= 3 and broken.group(1) == "0"
    assert dom.stdout.count('class="artifact-row"') == 4
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr.replace("CONSOLE(0)", "")
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, *FLAGS, *profile, "--window-size=1400,2600", f"--screenshot={shot}", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1400, 2600)
        colors = image.convert("L").getextrema()
    assert colors[0] < 50 and colors[1] > 200  # text and plots on a white page, not a blank screen
