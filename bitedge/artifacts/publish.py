"""Artifact directories: the runtime's files plus ``bitedge.json``, written atomically.

An artifact is built in a hidden temp directory beside its destination and renamed into place only when
complete, so an interrupted or failed run leaves either the previous artifact or nothing — never a half
directory that looks whole. An existing destination is replaced only when asked (``overwrite``), only if
bitedge wrote it (``ownership``), and only after the new one is complete; a failing artifact never replaces
a passing one (it goes beside it, ``<name>.failed``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bitedge import interrupts
from bitedge.artifacts.ownership import MANIFEST_NAME, artifact_status, check_replaceable, foreign_entries
from bitedge.errors import BadInputError

PARTIAL_MARKER = ".bitedge-partial"  # in every temp directory bitedge builds an artifact in, until it is published


def failed_sibling(final: Path) -> Path:
    """Where a failing rebuild of ``final`` is published when ``final`` holds a passing artifact."""
    return final.with_name(f"{final.name}.failed")


def check_destination(final: Path, *, overwrite: bool) -> None:
    """Fail early, before any work, when ``final`` cannot receive an artifact.

    An existing ``final`` is replaced only with ``overwrite`` and only if it is bitedge's own (see
    ``ownership``); an empty directory is used as is. ``final.failed``, where a failing rebuild of a passing
    artifact goes, must be bitedge's own too if it exists.
    """
    try:
        os.fsencode(final.absolute()).decode("utf-8")
    except UnicodeDecodeError:  # onnxruntime, OpenVINO and others take paths only as UTF-8 strings
        raise BadInputError(
            f"{final}: the path is not valid UTF-8, and the runtimes cannot open files under it; choose an --out "
            "whose name (and folders) are UTF-8"
        ) from None
    if final.exists() or final.is_symlink():
        if final.is_symlink() or not final.is_dir():
            raise BadInputError(f"{final}: exists and is not a directory; choose another --out")
        check_replaceable(final)  # names the user's files, with or without --overwrite
        if not overwrite and any(final.iterdir()):
            raise BadInputError(f"{final}: already exists; pass --overwrite to replace it, or choose another --out")
    check_replaceable(failed_sibling(final))
    parent = final.parent
    if not parent.is_dir():
        raise BadInputError(f"{parent}: output parent directory does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{parent}: not writable; choose an --out where you can write")


@contextlib.contextmanager
def exclusive(final: Path, *, log: Callable[[str], None] = lambda _: None) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``final`` so two runs cannot write the same artifact at once.

    Holding the lock proves that temp and backup directories of ``final`` left beside it are stale (their
    writer held this lock and is gone, e.g. killed with SIGKILL): they are cleaned up, and a previous artifact
    caught between its two renames is put back.
    """
    import fcntl

    final = final.absolute()
    lock_path = final.with_name(f".{final.name}.lock")
    try:
        handle = lock_path.open("a")
    except OSError as exc:
        raise BadInputError(f"{final.parent}: cannot write there ({exc.strerror}); choose another --out") from None
    acquired = False
    token = interrupts.on_abort(lambda: _remove_lock(lock_path) if acquired else None)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            acquired = True
        except BlockingIOError:
            raise BadInputError(
                f"{final}: another bitedge run is writing it right now; wait for it to finish or choose another --out"
            ) from None
        for message in clean_stale(final):
            log(message)
        yield
    finally:
        interrupts.done(token)
        if acquired:
            _remove_lock(lock_path)
        handle.close()


def _remove_lock(path: Path) -> None:
    """bitedge's lock files are always empty: a ``.NAME.lock`` with content is someone else's, and stays."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            path.unlink()


def clean_stale(final: Path) -> list[str]:
    """Remove what a killed writer of ``final`` left beside it; call only while holding ``final``'s lock.

    Only what bitedge can prove it wrote goes: a temp directory holding ``PARTIAL_MARKER``, a backup that is a
    bitedge artifact holding nothing else. Anything else with such a name is reported and left alone.
    """
    messages = []
    for destination in (final, failed_sibling(final)):
        for backup in sorted(destination.parent.glob(f".{glob.escape(destination.name)}.old-*")):
            if not _is_own_artifact(backup):
                messages.append(f"left {backup} in place: it has a backup's name but is not a bitedge artifact")
            elif not destination.exists():
                backup.rename(destination)  # killed between its two renames: the previous artifact goes back
                messages.append(f"restored {destination} from {backup.name}, left by an interrupted run")
            else:
                shutil.rmtree(backup, ignore_errors=True)
                messages.append(f"removed {backup}, a backup left by an interrupted run")
    for partial in sorted(final.parent.glob(f".{glob.escape(final.name)}.partial-*")):
        if (partial / PARTIAL_MARKER).is_file():
            shutil.rmtree(partial, ignore_errors=True)
            messages.append(f"removed {partial}, a half-written artifact left by an interrupted run")
        else:
            messages.append(f"left {partial} in place: it has a temp directory's name but bitedge did not make it")
    return messages


def _is_own_artifact(directory: Path) -> bool:
    """A bitedge artifact (a readable manifest) holding nothing bitedge did not write."""
    try:
        return directory.is_dir() and (directory / MANIFEST_NAME).is_file() and not foreign_entries(directory)
    except OSError:
        return False


@dataclass
class Staged:
    """An artifact being built in ``path`` (a hidden temp directory).

    Set ``passed`` before the block ends: a failing artifact never replaces a passing one, it is published
    beside it (``final.failed``). ``published`` says where it went.
    """

    path: Path
    passed: bool = True
    published: Path | None = None


@contextlib.contextmanager
def atomic_directory(final: Path, *, overwrite: bool) -> Iterator[Staged]:
    """Yield a temp directory that becomes ``final`` when the block completes, and vanishes if it fails."""
    final = final.absolute()
    check_destination(final, overwrite=overwrite)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    (tmp / PARTIAL_MARKER).touch()  # what proves a stale temp directory bitedge's (clean_stale)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the artifact should get the usual permissions
    token = interrupts.on_abort(lambda: shutil.rmtree(tmp, ignore_errors=True))
    staged = Staged(tmp)
    try:
        yield staged
        interrupts.check()  # a signal a runtime swallowed still stops the artifact from being published
        destination = final
        if not staged.passed and artifact_status(final) == "passed":
            destination = failed_sibling(final)
        _replace(destination, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        interrupts.done(token)
    staged.published = destination


def _replace(destination: Path, tmp: Path) -> None:
    """Rename ``tmp`` to ``destination``; a previous directory there is kept until the rename succeeded."""
    check_replaceable(destination)  # again: the user may have put a file there while we worked
    (tmp / PARTIAL_MARKER).unlink(missing_ok=True)  # complete now: it is an artifact, not a temp directory
    backup = None
    if destination.exists():
        backup = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        destination.rename(backup)
    try:
        tmp.rename(destination)
    except BaseException:
        if backup is not None:
            backup.rename(destination)  # put the previous artifact back
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
