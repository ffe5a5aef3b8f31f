"""Integrity on every use: an artifact is run only if it is the one that was verified, and it passed.

``predict``, ``bench`` and ``report`` call :func:`check_artifact` before they use an artifact. It compares
every file with the sha256 recorded in ``bitedge.json`` when the artifact was written, checks the manifest's
own seal (its labels, preprocessing, status... as bitedge wrote them), and reads the status its parity gate
recorded. Hashing a multi-GB model on every call would be slow, so digests are cached per
file, keyed by path, size, mtime, ctime and inode (ctime cannot be set back by a user, so an edit that
restores the mtime still invalidates the entry). The cache lives in ``$BITEDGE_CACHE_DIR`` (default
``$XDG_CACHE_HOME/bitedge`` or ``~/.cache/bitedge``); if it cannot be written, files are simply hashed again.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitedge.artifacts.manifest import Manifest, seal_state
from bitedge.artifacts.ownership import MANIFEST_NAME
from bitedge.errors import ArtifactRefusedError
from bitedge.hashing import sha256_file

CACHE_FILE = "file-sha256.json"
MAX_CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class Allowances:
    """What the user accepted explicitly (``--allow-failed``, ``--no-verify-hashes``)."""

    failed: bool = False  # use an artifact whose parity gate failed (or never ran)
    modified: bool = False  # skip the file-hash check


STRICT = Allowances()  # the default: a failed or modified artifact is refused


def cache_dir() -> Path:
    if os.environ.get("BITEDGE_CACHE_DIR"):
        return Path(os.environ["BITEDGE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bitedge"


def _key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def cached_sha256(paths: list[Path]) -> dict[Path, str | None]:
    """sha256 of each file (None if missing), hashing only files that changed since they were last hashed."""
    cache_path = cache_dir() / CACHE_FILE
    try:
        cache: dict[str, Any] = json.loads(cache_path.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    digests: dict[Path, str | None] = {}
    changed = False
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            digests[path] = None
            continue
        name = os.fsdecode(path.absolute()).encode("utf-8", "surrogateescape").hex()  # any file name, as JSON
        entry = cache.get(name)
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == _key(stat):
            digests[path] = str(entry[1])
            continue
        digests[path] = sha256_file(path)
        cache[name] = [_key(stat), digests[path]]
        changed = True
    if changed:
        if len(cache) > MAX_CACHE_ENTRIES:  # keep the newest entries (dicts keep insertion order)
            cache = dict(list(cache.items())[-MAX_CACHE_ENTRIES:])
        _save(cache_path, cache)
    return digests


def _save(path: Path, cache: dict[str, Any]) -> None:
    """Best effort: a read-only home only costs hashing again next time."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache), encoding="utf-8")
        os.replace(tmp, path)


def changed_files(directory: Path, manifest: Manifest) -> list[str]:
    """Files whose content differs from the sha256 recorded in the manifest (missing ones included), and
    ``bitedge.json`` itself if a field of it was edited since bitedge wrote it (its seal is broken)."""
    paths = {name: directory / name for name in manifest.files if name in manifest.file_sha256}
    digests = cached_sha256(list(paths.values()))
    changed = [name for name, path in paths.items() if digests[path] != manifest.file_sha256[name]]
    return [*changed, MANIFEST_NAME] if seal_state(directory) == "broken" else changed


def check_artifact(directory: Path, manifest: Manifest, allow: Allowances) -> list[str]:
    """Refuse (``ArtifactRefusedError``) a failed or modified artifact unless allowed; returns the warnings to
    state when it was allowed."""
    warnings = []
    if manifest.status != "passed":
        what = "failed its parity gate" if manifest.status == "failed" else f"has status {manifest.status!r}"
        if not allow.failed:
            raise ArtifactRefusedError(
                f"{directory}: this artifact {what} (see its parity.md); convert again, or pass --allow-failed "
                "to use it anyway"
            )
        warnings.append(f"{directory}: using an artifact that {what} (--allow-failed)")
    if allow.modified:
        warnings.append(f"{directory}: file hashes not checked (--no-verify-hashes)")
        return warnings
    if seal_state(directory) == "missing":
        raise ArtifactRefusedError(
            f"{directory}: bitedge.json carries no seal (an older bitedge wrote it), so its labels and settings "
            f"cannot be checked; run `bitedge verify {directory}` to check and seal it, or pass --no-verify-hashes"
        )
    unrecorded = [name for name in manifest.files if name not in manifest.file_sha256]
    if unrecorded:
        raise ArtifactRefusedError(
            f"{directory}: bitedge.json records no sha256 for {', '.join(unrecorded[:3])}, so the files cannot "
            "be checked; convert again, or pass --no-verify-hashes"
        )
    changed = changed_files(directory, manifest)
    if changed:
        raise ArtifactRefusedError(
            f"{directory}: {describe_changes(changed)}; convert again, or pass --no-verify-hashes to use it anyway"
        )
    return warnings


def describe_changes(changed: list[str]) -> str:
    """What ``changed_files`` found, in words."""
    files = [name for name in changed if name != MANIFEST_NAME]
    parts = [f"{', '.join(files[:3])} changed since the artifact was verified (sha256 differs from bitedge.json)"]
    if MANIFEST_NAME in changed:
        parts.append("bitedge.json was edited since bitedge wrote it (its seal does not hold: its labels, "
                     "preprocessing or status may not be the verified ones)")  # fmt: skip
    return "; ".join(parts[0 if files else 1 :])
