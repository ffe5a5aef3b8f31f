"""Ctrl-C and kills, honoured even when a native runtime swallows, rewraps or stalls on them.

The CLI turns SIGINT and SIGTERM into ``KeyboardInterrupt`` so temp directories unwind. Native runtimes
can turn that exception into a ``RuntimeError`` (OpenVINO's pybind11 layer), drop it, or stall after it
(NNCF's quantization, seen in the interruption tests). So a signal is also recorded here:

- ``check`` raises again at safe points; an artifact is never published after a signal (``check`` runs
  right before the rename that publishes it), and the CLI reports the run as interrupted (exit 130)
  whatever exception came out;
- a watchdog gives the unwinding ``GRACE_SECONDS``; if the process is still alive then, it removes the temp
  directories registered with ``on_abort`` itself and exits 130.

In the ``bitedge`` process the signals are also kept away from the runtimes' threads (``route_to_main``).
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
from collections.abc import Callable, Collection

GRACE_SECONDS = 20.0
_received = threading.Event()
_finished = threading.Event()
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


def route_to_main(signals: Collection[signal.Signals], *, on_forced_exit: Callable[[str], None]) -> None:
    """Block ``signals`` in every thread; one waiting thread records each and raises it in the main thread.

    The kernel hands a process-directed signal to any thread that does not block it, and a conversion runs
    dozens (OpenVINO's, onnxruntime's, torch's pools). Delivered that way, a signal while the report was being
    written crashed CPython's garbage collector (SIGSEGV, reproduced by tests/test_interruptions.py); routed
    through one waiting thread, it does not. Call this in the main thread before any runtime starts a
    thread: threads inherit the signal mask of the thread that creates them. The main thread's Python
    handlers still run, through ``_thread.interrupt_main``.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    waiter = threading.Thread(target=_forward, args=(set(signals), on_forced_exit), name="bitedge-signals", daemon=True)
    waiter.start()


def unblock(signals: Collection[signal.Signals]) -> None:
    """Undo ``route_to_main``'s mask (in a forked child, which has no waiting thread)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


def _forward(signals: set[signal.Signals], on_forced_exit: Callable[[str], None]) -> None:
    while True:
        signum = signal.sigwait(signals)
        note_signal(on_forced_exit=on_forced_exit)  # recorded even while the main thread is stuck in a runtime
        # The main thread's handler runs at its next bytecode (it does nothing once it ignores repeats).
        _thread.interrupt_main(signal.Signals(signum))


def received() -> bool:
    return _received.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if a stop signal arrived, even one a library swallowed."""
    if _received.is_set():
        raise KeyboardInterrupt


def reset() -> None:
    """Forget an earlier signal and start a run (a new CLI invocation in the same process, as in tests)."""
    _received.clear()
    _finished.clear()


def finish() -> None:
    """The run's work is over (published or unwound): from now on a signal is recorded, not raised."""
    _finished.set()


def finished() -> bool:
    return _finished.is_set()


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
