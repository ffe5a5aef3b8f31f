"""The ``bitedge`` command line's parser: commands, their options, and each target's own options.

Target options come from the registry: every field of a target's ``Options`` dataclass is a flag
``--<target>-<field>`` in its own argument group, so a new target brings its flags without touching this file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bitedge import __version__
from bitedge.cli.commands import (
    run_bench,
    run_build_engine,
    run_calibrate,
    run_convert,
    run_diagnose,
    run_inspect,
    run_predict,
    run_report,
    run_sensitivity,
    run_verify,
)
from bitedge.cli.options import (
    batch_or_dynamic,
    batch_size,
    bounded_int,
    budget_arguments,
    calibration_arguments,
    deploy_graph_arguments,
    integrity_arguments,
    positive_float,
    positive_int,
    target_arguments,
    threads,
    workers,
)
from bitedge.converters import target_names
from bitedge.engines import Engine
from bitedge.limits import BOUNDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitedge",
        description="Deploy BiT (Big Transfer) classifiers to edge runtimes, with verified parity.",
    )
    parser.add_argument("--version", action="version", version=f"bitedge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)  # --debug also after the command name
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    inspect = commands.add_parser(
        "inspect",
        parents=[common],
        help="describe a model (architecture, parameters, MACs, sha256) or an artifact (its manifest)",
        description="Describe a BiT checkpoint or preset: architecture, parameter count, MACs at a "
        "resolution, checkpoint format and sha256.",
    )
    inspect.add_argument("model", metavar="MODEL", help="transformers dir, timm/.npz file, or preset name")
    inspect.add_argument(
        "--resolution", type=positive_int, default=None, metavar="PX",
        help="input size for the MAC count (default: the model's preprocessing size, else 224)",
    )  # fmt: skip
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    inspect.set_defaults(handler=run_inspect)

    convert = commands.add_parser(
        "convert",
        parents=[common],
        help="convert a model for target runtimes and verify each artifact there",
        description="Fold, convert and verify. With no arguments: the bundled demo model, to every target "
        "installed here, at every precision each supports, verified on the bundled evaluation images. "
        "One artifact is written to OUT; several to OUT/<target>-<precision>/. Each holds the runtime's "
        "files, bitedge.json and a parity report. Exit 0 when every artifact passes parity, 1 when one "
        "fails (it is kept, marked failed), 2 on bad input.",
    )
    convert.add_argument(
        "model", metavar="MODEL", nargs="?", default="bitedge/demo",
        help="transformers dir, timm/.npz file, preset name (default: bitedge/demo, the bundled model)",
    )  # fmt: skip
    convert.add_argument(
        "--target", nargs="+", metavar="TARGET",
        help=f"{', '.join(target_names())} or all (default: every target usable here)",
    )  # fmt: skip
    convert.add_argument(
        "--precision", nargs="+", metavar="PRECISION",
        help="fp32, fp16, int8 (weights and activations), w8 (int8 weights only, where a target offers it) "
        "(default: all each target supports)",
    )  # fmt: skip
    convert.add_argument(
        "--out", type=Path, default=Path("bitedge-artifacts"), metavar="DIR",
        help="where to write (default: ./bitedge-artifacts)",
    )  # fmt: skip
    convert.add_argument(
        "--eval", type=Path, metavar="IMAGES", dest="eval_images",
        help="evaluation images for the parity gate; class subfolders named like the labels give accuracy "
        "(required, except for the demo model, which has its own held-out split)",
    )  # fmt: skip
    convert.add_argument(
        "--batch", type=batch_or_dynamic, default=None, metavar="dynamic|N", help="batch dimension (default: dynamic)"
    )
    deploy_graph_arguments(convert, replaces="OUT (only once the new one is complete)")
    convert.add_argument("--threads", type=threads, help="runtime threads for verification")
    convert.add_argument("--bench", action="store_true", help="also time every artifact (short protocol)")
    calibration_arguments(convert, with_table=True)
    convert.add_argument(
        "--fallback", choices=("none", "auto"), default="none",
        help="int8: when the simulated int8 model misses the budget, keep the fewest, most harmful layers in "
        "float until it meets it with a margin, in every target (default: none, the artifact fails)",
    )  # fmt: skip
    budget_arguments(convert)
    target_arguments(convert)
    convert.set_defaults(handler=run_convert)

    calibrate = commands.add_parser(
        "calibrate",
        parents=[common],
        help="compute an int8 calibration table to reuse across targets",
        description="Run calibration images through the folded model and write the int8 ranges of every "
        "quantized layer as a JSON table (reuse it with bitedge convert --calibration-table).",
    )
    calibrate.add_argument("model", metavar="MODEL", nargs="?", default="bitedge/demo", help="model (default: demo)")
    calibrate.add_argument("--out", type=Path, required=True, metavar="TABLE.json", help="table to write")
    deploy_graph_arguments(calibrate, replaces="TABLE.json")
    calibration_arguments(calibrate, with_table=False)
    calibrate.set_defaults(handler=run_calibrate)

    sensitivity = commands.add_parser(
        "sensitivity",
        parents=[common],
        help="rank layers by what int8 costs when only that layer is quantized",
        description="Calibrate (or reuse a table), then score every quantizable layer quantized alone in the "
        "simulated int8 model against the float model on the evaluation images: top-1 agreement, cosine, SNR, "
        "per int8 placement of the targets. Writes sensitivity.json, .md and .png into --out; bitedge report "
        "shows the ranking when it is in the report's directory.",
    )
    sensitivity.add_argument("model", metavar="MODEL", nargs="?", default="bitedge/demo", help="model (default: demo)")
    sensitivity.add_argument(
        "--eval", type=Path, metavar="IMAGES", dest="eval_images",
        help="images to score on (required, except for the demo model)",
    )  # fmt: skip
    sensitivity.add_argument(
        "--out", type=Path, default=Path("bitedge-sensitivity"), metavar="DIR",
        help="where to write (default: ./bitedge-sensitivity)",
    )  # fmt: skip
    sensitivity.add_argument(
        "--target", nargs="+", metavar="TARGET",
        help="score in these targets' int8 placements (default: every target's)",
    )  # fmt: skip
    sensitivity.add_argument(
        "--ranking-images", type=bounded_int(*BOUNDS["ranking_images"]), metavar="N",
        help="score on the N images int8 gets most wrong (default: all; at most 1000, spread over the set)",
    )  # fmt: skip
    deploy_graph_arguments(sensitivity, replaces="the sensitivity files in DIR")
    calibration_arguments(sensitivity, with_table=True, quantizer=False)
    sensitivity.set_defaults(handler=run_sensitivity)

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="time artifacts (and float models) under one latency protocol",
        description="Time each TARGET (an artifact directory, or a model: the float PyTorch reference, "
        "eager) on real preprocessed images: warm-up, then interleaved timed runs until both --runs and "
        "--duration are reached; reports median, p90, p99, mean, min, throughput and ratios to the first. "
        "With --bundle: write, per artifact, a folder that times it on a device without bitedge or torch "
        "(--remote: over ssh, and bring the results back); --import: a device's results, checked against "
        "the float model and shown beside the host's in bitedge report.",
    )
    bench.add_argument("targets", nargs="*", metavar="TARGET", help="artifact directories or models")
    bench.add_argument("--batch", nargs="+", type=batch_size, default=[1], metavar="N", help="batch sizes")
    bench.add_argument("--threads", type=threads, default=None, help="runtime threads (default: runtime's)")
    bench.add_argument(
        "--runs", type=bounded_int(1, 1_000_000, "the protocol's medians settle long before"), default=50,
        help="minimum timed runs (default 50)",
    )  # fmt: skip
    bench.add_argument("--duration", type=positive_float, default=3.0, help="minimum timed seconds (default 3)")
    bench.add_argument("--out", type=Path, metavar="DIR", help="write bench.json, bench.md and bench.png here "
                       "(--import: device-bench.json; default: the folder holding the artifact)")  # fmt: skip
    device = bench.add_argument_group("on a device")
    device.add_argument("--bundle", type=Path, metavar="DIR", help="write a device bundle per ARTIFACT into DIR "
                        "instead of timing here")  # fmt: skip
    device.add_argument(
        "--images",
        type=bounded_int(*BOUNDS["images"]),
        default=16,
        metavar="N",
        help="real images in each bundle, from the artifact's evaluation set (default 16)",
    )
    device.add_argument(
        "--eval",
        type=Path,
        metavar="IMAGES",
        dest="eval_images",
        help="take the bundle's images from here instead of the recorded evaluation images",
    )
    device.add_argument("--model", type=Path, metavar="PATH", help="where the source checkpoint is now, if it moved")
    device.add_argument("--remote", metavar="ssh://USER@HOST[:PORT]", help="with --bundle: copy each bundle there "
                        "over ssh, run it, fetch and import its results")  # fmt: skip
    device.add_argument(
        "--remote-python",
        default="python3",
        metavar="PYTHON",
        help="the interpreter on the device (default python3; needs numpy and the runtime)",
    )
    device.add_argument(
        "--import",
        dest="import_files",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="a bundle's results.json, or a native tool's output, from inside its bundle folder",
    )
    integrity_arguments(bench)
    bench.set_defaults(handler=run_bench)

    predict = commands.add_parser(
        "predict",
        parents=[common],
        help="classify images with an artifact (in its runtime) or a model",
        description="Run an artifact (or the float model) on images with its own preprocessing and labels "
        "and print the top-k labels with scores. Exit 2 if an image could not be used (the others are "
        "still classified).",
    )
    predict.add_argument("target", metavar="ARTIFACT_OR_MODEL", help="artifact directory or model")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of images")
    predict.add_argument("--top-k", type=positive_int, default=5, help="labels to show per image (default 5)")
    predict.add_argument("--json", action="store_true", help="print JSON records")
    predict.add_argument("--threads", type=threads, help="runtime threads")
    integrity_arguments(predict)
    predict.set_defaults(handler=run_predict)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="rebuild report.html and report.md from the artifacts in a directory",
        description="One page across all artifacts under DIR: sizes, parity, accuracy, plots, flipped images.",
    )
    report.add_argument("root", type=Path, metavar="DIR", help="a convert --out directory")
    integrity_arguments(report)
    report.set_defaults(handler=run_report)

    build_engine = commands.add_parser(
        "build-engine",
        parents=[common],
        help="build what an artifact needs on the device that will run it (a TensorRT bundle's engine)",
        description="Build, on this machine, what the artifact's target builds on the device (a TensorRT "
        "engine, from the bundle's ONNX and build spec), record it in the manifest, then verify the artifact "
        "again with it.",
    )
    build_engine.add_argument("artifact", type=Path, metavar="DIR", help="an artifact from bitedge convert")
    build_engine.set_defaults(handler=run_build_engine)

    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="re-run the parity gate on an existing artifact",
        description="Re-run the parity gate of an artifact from its manifest; updates parity.json/.md.",
    )
    verify.add_argument("artifact", type=Path, metavar="DIR", help="artifact directory (with bitedge.json)")
    verify.add_argument("--eval", type=Path, metavar="IMAGES", dest="eval_images", help="other evaluation images")
    verify.add_argument("--model", type=Path, metavar="PATH", help="where the source checkpoint is now, if it moved "
                        "(it must be the one bitedge.json records: its sha256 is checked)")  # fmt: skip
    verify.add_argument("--threads", type=threads, help="threads of the runtime and of the torch models (shards "
                        "side by side on one machine: cores / shards)")  # fmt: skip
    verify.add_argument("--shard", metavar="I/N", help="run only shard I of N (from 0) of the sorted images; "
                        "needs --partial-out")  # fmt: skip
    verify.add_argument("--partial-out", type=Path, metavar="FILE", help="where a shard writes its partial result")
    verify.add_argument(
        "--engine",
        choices=[e.value for e in Engine],
        default=Engine.LOCAL.value,
        help="ray: run --workers shards as Ray actors (RAY_ADDRESS: an existing cluster), then merge",
    )
    verify.add_argument("--workers", type=workers, metavar="N", help="Ray workers (shards), default 2")
    verify.add_argument("--merge", type=Path, nargs="+", metavar="FILE",
                        help="record the verdict from the partial results of all shards")  # fmt: skip
    budget_arguments(verify)
    verify.set_defaults(handler=run_verify)

    diagnose = commands.add_parser(
        "diagnose",
        parents=[common],
        help="find the first layer where an artifact diverges, in its own runtime",
        description="Tap every layer's output (each conv, GroupNorm and unit) of the artifact in its runtime and "
        "compare it with the float deploy graph and, for int8, the simulated-quantized model on the same images; "
        "name the first layer where the artifact falls off the model it should compute (a conversion or "
        "runtime fault) and, for int8, where quantization itself does. Writes diagnose.json, .md and .png.",
    )
    diagnose.add_argument("artifact", type=Path, metavar="ARTIFACT", help="artifact directory (with bitedge.json)")
    diagnose.add_argument("--eval", type=Path, metavar="IMAGES", dest="eval_images",
                          help="images to compare on (default: the artifact's recorded evaluation images)")  # fmt: skip
    diagnose.add_argument("--images", type=bounded_int(*BOUNDS["images"]), default=32, metavar="N",
                          help="how many of them, spread over the sorted set (default 32)")  # fmt: skip
    diagnose.add_argument("--out", type=Path, metavar="DIR", help="where to write (default: the artifact's directory)")
    diagnose.add_argument("--model", type=Path, metavar="PATH", help="where the source checkpoint is now, if it moved")
    diagnose.add_argument("--threads", type=threads, help="runtime threads")
    diagnose.add_argument("--no-verify-hashes", action="store_true",
                          help="diagnose an artifact whose files changed since it was verified (refused by "
                          "default)")  # fmt: skip
    diagnose.set_defaults(handler=run_diagnose)
    return parser
