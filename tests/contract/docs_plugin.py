"""The plugin example of docs/design.md ("Adding a target"), taken out of the page as printed: each fenced
block whose first line is ``# file: NAME`` is a file of the example package."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DESIGN = Path(__file__).parents[2] / "docs" / "design.md"
BLOCK = re.compile(r"```\w+\n# file: (\S+)\n(.*?)```", re.DOTALL)


def write_example_package(root: Path) -> Path:
    """The example's files under ``root`` (a package folder pip can install)."""
    root.mkdir(parents=True, exist_ok=True)
    files = BLOCK.findall(DESIGN.read_text(encoding="utf-8"))
    assert {name for name, _ in files} == {"bitedge_torchscript.py", "pyproject.toml"}, files
    for name, text in files:
        (root / name).write_text(text, encoding="utf-8")
    return root


def pip_install(package: Path, site: Path) -> Path:
    """``pip install`` the package into the folder ``site`` (no dependencies: bitedge is installed already)."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
               "--target", str(site), str(package)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=package)
    assert done.returncode == 0, done.stderr[-3000:]
    return site
