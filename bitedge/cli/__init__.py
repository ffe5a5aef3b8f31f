"""The ``bitedge`` command: a thin argparse adapter over the library API.

Exit codes: 0 ok, 1 parity or runtime failure, 2 bad input (bad arguments, unreadable checkpoint, wrong
config), 130 interrupted. Errors print one line on stderr, never a traceback: an unexpected one says so and
points at ``--debug``, which shows it.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Sequence

from bitedge import interrupts
from bitedge.cli.parser import build_parser
from bitedge.fileio import ESCAPE

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main(argv: Sequence[str] | None = None, *, restore_signals: bool = True) -> int:
    """Run the CLI; returns the process exit code.

    ``restore_signals=False`` (the ``bitedge`` process) keeps bitedge's handler after the run: a signal then
    is only recorded (the work is over), and ``run`` exits 130 without interpreter teardown.
    """
    for stream in (sys.stdout, sys.stderr):  # file names need not be UTF-8: print them escaped, never crash
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=ESCAPE)
    parser = build_parser()
    from bitedge.converters.registry import problems

    for problem in problems():  # an outside target left out: said once, in one line, and nothing breaks
        print(f"bitedge: warning: {problem}", file=sys.stderr)
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    from bitedge.errors import BitEdgeError

    # Ctrl-C and SIGTERM (a kill, a CI timeout) unwind the same way: temp directories are removed, nothing
    # half-written; the signal is also recorded, in case a native runtime swallows or rewraps the exception.
    interrupts.reset()
    previous = {sig: signal.signal(sig, _interrupt) for sig in _STOP_SIGNALS}
    try:
        code = int(args.handler(args))
        interrupts.check()
        return code
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:
        if interrupts.received():  # whatever a runtime made of the interrupt (OpenVINO: a RuntimeError)
            return _interrupted()
        if isinstance(exc, BitEdgeError):
            print(f"bitedge: error: {exc}", file=sys.stderr)
            return exc.exit_code
        if debug:
            raise
        from bitedge.memory import is_out_of_memory

        if is_out_of_memory(exc):  # torch, onnxruntime and OpenVINO say it in their own words
            print(
                "bitedge: error: memory ran out; lower --batch or --image-size, use fewer --workers or --threads, or "
                "a smaller model, or free memory (nothing was left half-written)", file=sys.stderr,
            )  # fmt: skip
            return 1
        if isinstance(exc, OSError):  # the machine, not the input: a full disk, a file-size limit, ...
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"bitedge: error: {where}{exc.strerror or exc}; {_os_error_hint(exc)}", file=sys.stderr)
            return 1
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        print(
            f"bitedge: error: unexpected {type(exc).__name__}{': ' + first if first else ''} (a bug in bitedge; "
            "nothing was left half-written; run again with --debug for the traceback)", file=sys.stderr,
        )  # fmt: skip
        return 1
    finally:
        interrupts.finish()  # from here on a signal is recorded, never raised
        if restore_signals and not interrupts.received():  # after a signal, stay deaf to repeats
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run() -> None:
    """The ``bitedge`` command: ``main``, then an exit that no signal or runtime teardown can derail.

    Interpreter finalization is skipped: cleanup already ran inside ``main``, and a runtime's worker thread
    can re-deliver a signal there (NNCF's, measured: death by SIGINT instead of exit 130). Forked runtime
    helpers are ended instead of joined. A signal that arrives after the work is done still makes the exit
    130: the user asked to stop. Signals reach only the main thread (``interrupts.route_to_main``).
    """
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _interrupt)
    interrupts.route_to_main(_STOP_SIGNALS, on_forced_exit=_say)
    try:
        code = main(restore_signals=False)
    except KeyboardInterrupt:  # a signal before main's try block began, or as it ended
        code = 130
    if interrupts.received() and code != 130:
        code = _interrupted()
    interrupts.end_children()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _interrupted() -> int:
    print("bitedge: interrupted; nothing was left half-written", file=sys.stderr)
    return 130


def _os_error_hint(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return "free space (or raise the limit) or choose another --out; nothing was left half-written"
    return "check the path and its permissions; nothing was left half-written"


def _default_signals() -> None:
    """In a process a runtime forks (OpenVINO's telemetry sender does): default handling, so it can be
    terminated; with bitedge's handler (which ignores repeats) its parent would wait for it forever."""
    for sig in _STOP_SIGNALS:
        if signal.getsignal(sig) in (_interrupt, signal.SIG_IGN):
            signal.signal(sig, signal.SIG_DFL)
    interrupts.unblock(_STOP_SIGNALS)


os.register_at_fork(after_in_child=_default_signals)


def _say(message: str) -> None:
    print(f"bitedge: {message}", file=sys.stderr)


def _interrupt(signum: int, frame: object) -> None:
    interrupts.note_signal(on_forced_exit=_say)
    if interrupts.finished():  # the run is over: nothing left to unwind, run() exits with 130
        return
    # Native runtimes can re-deliver the signal; one unwinding is enough (a second would escape main()).
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt
