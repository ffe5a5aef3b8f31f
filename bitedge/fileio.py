"""Small files: the JSON checkpoints carry (config.json, preprocessor_config.json), and atomic writes of
bitedge's own (manifests, reports), so an interrupted run never leaves half a file."""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Any

from bitedge.errors import BadInputError, ConfigError

ESCAPE = "bitedge.escape"  # codec error handler: a non-UTF-8 file name's bytes shown as \\xNN escapes


def _escape(error: UnicodeError) -> tuple[str, int]:
    """Characters that cannot be encoded, as escapes: a file name's undecodable byte (``os.fsdecode`` keeps it
    as a lone surrogate U+DC80..U+DCFF) becomes ``\\xNN``, any other character ``\\uNNNN``."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start : error.end]
    shown = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}" for c in bad)
    return shown, error.end


codecs.register_error(ESCAPE, _escape)


def read_json_object(path: str | Path, filename: str) -> dict[str, Any]:
    """Read ``filename`` from directory ``path`` (or ``path`` itself if it is a file) as a JSON object."""
    path = Path(path)
    file = path / filename if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no {filename} at {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}; it must be a JSON object") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{file} must hold a JSON object, not {type(data).__name__}")
    return data


def write_json(directory: str | Path, filename: str, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON to ``directory/filename`` (directory created); returns the file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / filename
    file.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return file


def read_json_file(path: Path, what: str) -> Any:
    """Parse a JSON file bitedge wrote earlier (a report, bench results); a broken one is a BadInputError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"{path}: unreadable {what} ({exc}); remove it or run the command that writes it") from None


def write_atomic(path: Path, content: str | bytes) -> Path:
    """Write through a temp file and ``os.replace``: readers (and an interrupted run) never leave half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            tmp.write_text(content, encoding="utf-8", errors=ESCAPE)  # non-UTF-8 file names, escaped
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: Path, data: Any) -> Path:
    """``write_atomic`` of indented JSON."""
    return write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
