"""Ctrl-C and kills, honoured even when a native runtime swallows, rewraps or stalls on them.

The CLI turns SIGINT and SIGTERM into ``KeyboardInterrupt`` so temp directories unwind. Native runtimes
can turn that exception into a ``RuntimeError`` (OpenVINO's pybind11 layer), drop it, or stall after it
(NNCF's quantization, seen in the interruption tests). So a signal is also recorded here:

- ``check`` raises again at safe points; an artifact is never published after a signal (``check`` runs
  right before the rename that publishes it), and the CLI reports the run as interrupted (exit 130)
  whatever exception came out;
- a watchdog gives the unwinding ``GRACE_SECONDS``; if the process is still alive then, it removes the temp
  directories registered with ``on_abort`` itself and exits 130.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

GRACE_SECONDS = 20.0
_received = threading.Event()
_aborts: dict[int, Callable[[], None]] = {}
_lock = threading.Lock()


def note_signal(*, on_forced_exit: Callable[[str], None] = lambda _: None) -> None:
    """Record that the user (or a supervisor) asked the process to stop; start the watchdog once.

    ``on_forced_exit`` is told why, should the watchdog have to end the process.
    """
    if _received.is_set():
        return
    _received.set()
    watchdog = threading.Timer(GRACE_SECONDS, _abort, args=(on_forced_exit,))
    watchdog.daemon = True
    watchdog.start()


def received() -> bool:
    return _received.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if a stop signal arrived, even one a library swallowed."""
    if _received.is_set():
        raise KeyboardInterrupt


def reset() -> None:
    """Forget an earlier signal (a new CLI invocation in the same process, as in tests)."""
    _received.clear()


def on_abort(cleanup: Callable[[], None]) -> int:
    """Register what the watchdog must undo if unwinding stalls; returns a token for ``done``."""
    with _lock:
        token = id(cleanup)
        _aborts[token] = cleanup
    return token


def done(token: int) -> None:
    with _lock:
        _aborts.pop(token, None)


def end_children() -> None:
    """Kill the processes runtimes forked through multiprocessing (OpenVINO's telemetry sender does, from a
    worker thread; such a child can deadlock). Exiting without finalization would leave them orphaned,
    holding the parent's stdout and stderr open."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.kill()


def _abort(on_forced_exit: Callable[[str], None]) -> None:
    with _lock:
        cleanups = list(_aborts.values())
    for cleanup in cleanups:
        cleanup()
    end_children()
    on_forced_exit(f"interrupted; a runtime did not stop within {GRACE_SECONDS:.0f} s, forced exit")
    os._exit(130)
