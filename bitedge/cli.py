"""The ``bitedge`` command: a thin argparse adapter over the library API.

Exit codes: 0 ok, 1 parity or runtime failure, 2 bad input (bad arguments, unreadable checkpoint, wrong
config). Errors print one line on stderr, never a traceback; only a bug in bitedge shows one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bitedge import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitedge",
        description="Deploy BiT (Big Transfer) classifiers to edge runtimes, with verified parity.",
    )
    parser.add_argument("--version", action="version", version=f"bitedge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    inspect = commands.add_parser(
        "inspect",
        help="describe a model: architecture, parameters, MACs, source and sha256",
        description="Describe a BiT checkpoint or preset: architecture, parameter count, MACs at a "
        "resolution, checkpoint format and sha256.",
    )
    inspect.add_argument("model", metavar="MODEL", help="transformers dir, timm/.npz file, or preset name")
    inspect.add_argument(
        "--resolution", type=_positive_int, default=None, metavar="PX",
        help="input size for the MAC count (default: the model's preprocessing size, else 224)",
    )  # fmt: skip
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(handler=_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from bitedge.errors import BitEdgeError

    try:
        return int(args.handler(args))
    except BitEdgeError as exc:
        print(f"bitedge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bitedge: interrupted", file=sys.stderr)
        return 130


def _inspect(args: argparse.Namespace) -> int:
    from bitedge.loading import load_model
    from bitedge.presets import PRESETS
    from bitedge.summary import summarize

    if not Path(args.model).exists() and args.model in PRESETS:
        preset = PRESETS[args.model]
        subject = preset.config()  # architecture only: nothing to load, nothing allocated
        default_resolution = preset.resolution
        name = f"{args.model} ({preset.description}, preset: architecture only, no trained weights)"
    else:
        subject = load_model(args.model)
        processor = subject.image_processor
        default_resolution = processor.input_size[0] if processor else 224
        name = args.model
    summary = summarize(name, subject, args.resolution or default_resolution)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print("\n".join(summary.lines()))
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
