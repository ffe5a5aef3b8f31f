"""Reading and writing the small JSON files checkpoints carry (config.json, preprocessor_config.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bitedge.errors import BadInputError, ConfigError


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
