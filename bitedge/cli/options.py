"""The command line's shared option groups (calibration, budget, integrity, each target's own flags) and the
argparse types that check a value where it is typed (bounded integers, positive numbers, batch sizes)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitedge.calibration import DEFAULT_METHOD, METHODS
from bitedge.cli.commands import TARGET_OPTION
from bitedge.converters import converter_classes
from bitedge.limits import BOUNDS, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE


def target_arguments(parser: argparse.ArgumentParser) -> None:
    """Each registered target's own options, as ``--<target>-<field>`` flags in a group of their own."""
    from bitedge.converters import converter_classes

    for converter in converter_classes():
        fields = dataclasses.fields(converter.Options)
        if not fields:
            continue
        group = parser.add_argument_group(f"{converter.name} target ({converter.description})")
        types = typing.get_type_hints(converter.Options)
        for field in fields:
            flags = [f"--{converter.name}-{field.name.replace('_', '-')}", *field.metadata.get("aliases", ())]
            kwargs: dict[str, Any] = {"dest": f"{TARGET_OPTION}{converter.name}.{field.name}",
                                      "default": argparse.SUPPRESS,
                                      "help": str(field.metadata.get("help", "")).replace("%", "%%")}  # fmt: skip
            if types[field.name] is bool:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = int if types[field.name] is int else str
                kwargs["choices"] = field.metadata.get("choices")
                kwargs["metavar"] = None if kwargs["choices"] else field.name.upper()
            group.add_argument(*flags, **kwargs)


def deploy_graph_arguments(parser: argparse.ArgumentParser, *, replaces: str) -> None:
    """What decides the deploy graph (shared by convert and calibrate, whose tables must match it)."""
    parser.add_argument(
        "--image-size", type=bounded_int(*BOUNDS["image_size"]), metavar="PX",
        help=f"input size, {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} (default: checkpoint's)",
    )  # fmt: skip
    parser.add_argument(
        "--raw-pixel-input", action="store_true",
        help="fold normalization into the model: it takes RGB 0..255 (after resize and crop)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="weight seed for preset models (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help=f"replace {replaces} if it exists")


def calibration_arguments(parser: argparse.ArgumentParser, *, with_table: bool, quantizer: bool = True) -> None:
    group = parser.add_argument_group("int8 calibration")
    group.add_argument(
        "--calibration", type=Path, metavar="SOURCE",
        help="images: a folder (recursive), a .txt list of paths, or an .npy/.npz of preprocessed pixels "
        "(required for int8, except for the demo model, which has its own calibration split)",
    )  # fmt: skip
    if with_table:
        group.add_argument("--calibration-table", type=Path, metavar="TABLE.json", help="reuse this table")
    group.add_argument(
        "--calibration-method", choices=METHODS,
        help=f"how activation ranges are chosen (default: {DEFAULT_METHOD}, the best measured)",
    )  # fmt: skip
    group.add_argument(
        "--calibration-size", metavar="N",
        type=bounded_int(*BOUNDS["calibration_size"]),
        help="seeded sample size (default: 512)",
    )  # fmt: skip
    group.add_argument("--calibration-seed", type=int, help="seed of the sample (default: 0)")
    group.add_argument("--exclude", nargs="+", metavar="LAYER", help="keep layers in float: stem, head, …")
    group.add_argument("--strict-images", action="store_true", help="an unreadable image is an error, not a skip")
    if with_table:  # the commands that build int8 models (not ``calibrate``, which only measures ranges)
        group.add_argument(
            "--cpu", choices=("avx2", "vnni", "auto"), default="auto",
            help="the x86 CPU the onnx and openvino int8 is made for: avx2 (7-bit weights, exact on every x86 CPU), "
            "vnni (8-bit weights, for AVX-512 VNNI, AVX-VNNI or AMX) or auto (this machine's; the default)",
        )  # fmt: skip
    if with_table and quantizer:
        group.add_argument(
            "--quantizer", choices=sorted({q for c in converter_classes() for q in c.quantizers}),
            help="int8 quantizer: bitedge's table (every target) or a target's own (default: each target's own "
            "default: " + ", ".join(f"{c.name} {c.quantizers[0]}" for c in converter_classes()) + ")",
        )  # fmt: skip


def budget_arguments(parser: argparse.ArgumentParser) -> None:
    """Limits over the precision's default parity budget (artifact vs float), recorded in the manifest."""
    group = parser.add_argument_group("parity budget (default: the precision's, see docs/design.md)")
    group.add_argument("--min-top1-agreement", type=float, metavar="FRACTION", help="e.g. 0.995 for 99.5 %%")
    group.add_argument("--min-cosine", type=float, metavar="COSINE", help="mean per-image cosine, e.g. 0.999")
    group.add_argument("--max-accuracy-drop", type=float, metavar="POINTS", help="percentage points, e.g. 0.5")


def integrity_arguments(parser: argparse.ArgumentParser) -> None:
    """Artifacts are used only as verified: these flags accept a failed or changed one, and it is said so."""
    parser.add_argument(
        "--allow-failed", action="store_true",
        help="use artifacts whose parity gate failed (refused by default; the output says it was allowed)",
    )  # fmt: skip
    parser.add_argument(
        "--no-verify-hashes", action="store_true",
        help="skip checking artifact files against the sha256 recorded in bitedge.json (checked by default)",
    )  # fmt: skip


def batch_or_dynamic(text: str) -> int | None:
    return None if text == "dynamic" else batch_size(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected a number of seconds in (0, 3600], got {value}")
    return value


def bounded_int(low: int, high: int, reason: str) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]; the error gives the reason for the bound."""

    def parse(text: str) -> int:
        value = positive_int(text) if low > 0 else int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low}..{high}, got {value}: {reason}")
        return value

    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


batch_size = bounded_int(*BOUNDS["batch"])
threads = bounded_int(*BOUNDS["threads"])
workers = bounded_int(*BOUNDS["workers"])
