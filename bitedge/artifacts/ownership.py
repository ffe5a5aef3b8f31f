"""What bitedge may replace or delete: only what it can prove it wrote.

bitedge replaces a path only when it is

- missing, or an empty directory (nothing to lose);
- an artifact directory: its ``bitedge.json`` reads, and every entry in it is a file that manifest lists,
  one of the records bitedge writes beside them (parity reports), or one of bitedge's own report files;
- one of bitedge's own report or bench files (``report.html``, ``bench.json``, ...), recognised by what
  bitedge writes into each.

Anything else is the user's: :func:`check_replaceable` and :func:`check_own_file` raise a ``BadInputError``
naming the file, and they run before any work, so nothing is touched.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitedge.errors import BadInputError

MANIFEST_NAME = "bitedge.json"
OUTPUTS_FILE = "parity_outputs.npz"
# Written by the parity gate beside every artifact's runtime files.
RECORD_FILES = (MANIFEST_NAME, "parity.json", "parity.md", OUTPUTS_FILE)
REPORT_TITLE = "bitedge conversion report"
DIAGNOSE_TITLE = "bitedge diagnose"
DIAGNOSE_FORMAT = "bitedge-diagnose-1"
DEVICE_BENCH_FILE, DEVICE_BENCH_FORMAT = "device-bench.json", "bitedge-device-bench-1"
BENCH_TITLE = "bitedge bench"
GENERATOR = "bitedge"  # the PNG "Software" text and the HTML generator meta tag bitedge writes


def _head(path: Path) -> str:
    """The first 4 KiB of a file as text ("" if unreadable): where bitedge's reports say who wrote them."""
    try:
        with path.open("rb") as handle:
            return handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""


def _json_object(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _bench_json(path: Path) -> bool:
    data = _json_object(path)
    return data is not None and "bitedge" in data and "runs" in data


def _bench_png(path: Path) -> bool:
    """bitedge's plot carries ``Software: bitedge`` in its PNG text; older ones are vouched for by bench.json."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            software = str(getattr(image, "text", {}).get("Software", ""))
    except (OSError, ValueError, SyntaxError):
        return False
    return software.startswith(GENERATOR) or _bench_json(path.with_name("bench.json"))


# The files bitedge writes at the top of an output directory, each with how to recognise bitedge's own.
OWN_FILES: dict[str, Callable[[Path], bool]] = {
    "report.html": lambda p: f"<title>{REPORT_TITLE}</title>" in _head(p),
    "report.md": lambda p: _head(p).lstrip().startswith(f"# {REPORT_TITLE}"),
    "bench.json": _bench_json,
    "bench.md": lambda p: _head(p).lstrip().startswith(f"# {BENCH_TITLE}"),
    "bench.png": _bench_png,
    DEVICE_BENCH_FILE: lambda p: (_json_object(p) or {}).get("format") == DEVICE_BENCH_FORMAT,
    "diagnose.json": lambda p: (_json_object(p) or {}).get("format") == DIAGNOSE_FORMAT,
    "diagnose.md": lambda p: _head(p).lstrip().startswith(f"# {DIAGNOSE_TITLE}"),
    "diagnose.png": lambda p: _bench_png(p) or is_own_file(p.with_name("diagnose.json")),
}


REPORT_FILES = ("report.html", "report.md")
BENCH_FILES = ("bench.json", "bench.md", "bench.png")
DIAGNOSE_FILES = ("diagnose.json", "diagnose.md", "diagnose.png")


def is_own_file(path: Path) -> bool:
    """Whether ``path`` is one of bitedge's report/bench files, written by bitedge."""
    recognise = OWN_FILES.get(path.name)
    return recognise is not None and path.is_file() and recognise(path)


def check_own_file(path: Path) -> None:
    """Raise unless ``path`` is missing or one of bitedge's own report/bench files (which it may rebuild)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not is_own_file(path):
        raise BadInputError(
            f"{path}: exists and was not written by bitedge; it is left untouched: move it or choose another --out"
        )


def foreign_entries(directory: Path) -> list[str]:
    """Entries of ``directory`` that bitedge cannot prove it wrote (all of them, if it is not an artifact)."""
    entries = sorted(directory.iterdir(), key=lambda p: p.name)
    if not entries:
        return []
    listed = _listed_files(directory)
    if listed is None:
        return [p.name for p in entries]
    own = set(listed) | set(RECORD_FILES)
    own |= {f".{name}.tmp" for name in own}  # an interrupted write_atomic's temp file
    return [p.name for p in entries if p.name not in own and not (p.name in OWN_FILES and is_own_file(p))]


def _listed_files(directory: Path) -> set[str] | None:
    """Top-level names of the files the artifact's manifest lists; None when it is not a bitedge artifact."""
    files = (_json_object(directory / MANIFEST_NAME) or {}).get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return {Path(f).parts[0] for f in files if Path(f).parts}


def check_replaceable(path: Path) -> None:
    """Raise unless ``path`` is missing, an empty directory, or a bitedge artifact holding only its own files."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise BadInputError(f"{path}: exists and is not a directory; choose another --out")
    try:
        foreign = foreign_entries(path)
    except OSError as exc:
        raise BadInputError(f"{path}: cannot look inside ({exc.strerror}); choose another --out") from None
    if not foreign:
        return
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    if (path / MANIFEST_NAME).is_file() and _listed_files(path) is not None:
        what = f"an artifact directory that also holds files bitedge did not write ({shown})"
    else:
        what = f"not a bitedge artifact (it holds {shown})"
    raise BadInputError(
        f"{path}: {what}; bitedge replaces only what it wrote, so nothing was touched: "
        "move those files or choose another --out"
    )


def artifact_status(directory: Path) -> str | None:
    """The ``status`` recorded in an artifact directory's manifest ("passed", "failed", ...), or None."""
    status = (_json_object(directory / MANIFEST_NAME) or {}).get("status")
    return status if isinstance(status, str) else None
