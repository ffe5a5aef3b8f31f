"""The ``bitedge`` command: a thin argparse adapter over the library API.

Exit codes: 0 ok, 1 parity or runtime failure, 2 bad input (bad arguments, unreadable checkpoint, wrong
config). Errors print one line on stderr, never a traceback; only a bug in bitedge shows one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bitedge import __version__
from bitedge.calibration import DEFAULT_METHOD, METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitedge",
        description="Deploy BiT (Big Transfer) classifiers to edge runtimes, with verified parity.",
    )
    parser.add_argument("--version", action="version", version=f"bitedge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    inspect = commands.add_parser(
        "inspect",
        help="describe a model (architecture, parameters, MACs, sha256) or an artifact (its manifest)",
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

    convert = commands.add_parser(
        "convert",
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
        help="onnx, openvino, coreml, tensorrt or all (default: every target usable here)",
    )  # fmt: skip
    convert.add_argument(
        "--precision", nargs="+", metavar="PRECISION", help="fp32, fp16, int8 (default: all each target supports)"
    )
    convert.add_argument(
        "--out", type=Path, default=Path("bitedge-artifacts"), metavar="DIR",
        help="where to write (default: ./bitedge-artifacts)",
    )  # fmt: skip
    convert.add_argument(
        "--eval", type=Path, metavar="IMAGES", dest="eval_images",
        help="evaluation images for the parity gate; class subfolders named like the labels give accuracy "
        "(default: the demo model's bundled held-out split)",
    )  # fmt: skip
    convert.add_argument("--image-size", type=_positive_int, metavar="PX", help="input size (default: checkpoint's)")
    convert.add_argument(
        "--batch", type=_batch, default=None, metavar="dynamic|N", help="batch dimension (default: dynamic)"
    )
    convert.add_argument(
        "--raw-pixel-input", action="store_true",
        help="fold normalization into the model: it takes RGB 0..255 (after resize and crop)",
    )  # fmt: skip
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (only once complete)")
    convert.add_argument("--threads", type=_positive_int, help="runtime threads for verification")
    convert.add_argument("--seed", type=int, default=0, help="weight seed for preset models (default: 0)")
    convert.add_argument("--bench", action="store_true", help="also time every artifact (short protocol)")
    _calibration_arguments(convert, with_table=True)
    convert.set_defaults(handler=_convert)

    calibrate = commands.add_parser(
        "calibrate",
        help="compute an int8 calibration table to reuse across targets",
        description="Run calibration images through the folded model and write the int8 ranges of every "
        "quantized layer as a JSON table (reuse it with bitedge convert --calibration-table).",
    )
    calibrate.add_argument("model", metavar="MODEL", nargs="?", default="bitedge/demo", help="model (default: demo)")
    calibrate.add_argument("--out", type=Path, required=True, metavar="TABLE.json", help="table to write")
    calibrate.add_argument("--image-size", type=_positive_int, metavar="PX", help="input size (default: checkpoint's)")
    calibrate.add_argument("--raw-pixel-input", action="store_true", help="calibrate the raw-pixel deploy graph")
    calibrate.add_argument("--seed", type=int, default=0, help="weight seed for preset models (default: 0)")
    calibrate.add_argument("--overwrite", action="store_true", help="replace TABLE.json if it exists")
    _calibration_arguments(calibrate, with_table=False)
    calibrate.set_defaults(handler=_calibrate)

    bench = commands.add_parser(
        "bench",
        help="time artifacts (and float models) under one latency protocol",
        description="Time each TARGET (an artifact directory, or a model: the float PyTorch reference, "
        "eager) on real preprocessed images: warm-up, then interleaved timed runs until both --runs and "
        "--duration are reached; reports median, p90, p99, mean, min, throughput and ratios to the first.",
    )
    bench.add_argument("targets", nargs="+", metavar="TARGET", help="artifact directories or models")
    bench.add_argument("--batch", nargs="+", type=_positive_int, default=[1], metavar="N", help="batch sizes")
    bench.add_argument("--threads", type=_positive_int, default=None, help="runtime threads (default: runtime's)")
    bench.add_argument("--runs", type=_positive_int, default=50, help="minimum timed runs (default 50)")
    bench.add_argument("--duration", type=_positive_float, default=3.0, help="minimum timed seconds (default 3)")
    bench.add_argument("--out", type=Path, metavar="DIR", help="write bench.json, bench.md and bench.png here")
    bench.set_defaults(handler=_bench)

    predict = commands.add_parser(
        "predict",
        help="classify images with an artifact (in its runtime) or a model",
        description="Run an artifact (or the float model) on images with its own preprocessing and labels "
        "and print the top-k labels with scores. Exit 2 if an image could not be read (the others are "
        "still classified).",
    )
    predict.add_argument("target", metavar="ARTIFACT_OR_MODEL", help="artifact directory or model")
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files or directories of images")
    predict.add_argument("--top-k", type=_positive_int, default=5, help="labels to show per image (default 5)")
    predict.add_argument("--json", action="store_true", help="print JSON records")
    predict.add_argument("--threads", type=_positive_int, help="runtime threads")
    predict.set_defaults(handler=_predict)

    report = commands.add_parser(
        "report",
        help="rebuild report.html and report.md from the artifacts in a directory",
        description="One page across all artifacts under DIR: sizes, parity, accuracy, plots, flipped images.",
    )
    report.add_argument("root", type=Path, metavar="DIR", help="a convert --out directory")
    report.set_defaults(handler=_report)

    build_engine = commands.add_parser(
        "build-engine",
        help="build the TensorRT engine of a tensorrt bundle, on the device that will run it",
        description="Build model.engine from a tensorrt bundle's ONNX and build spec (needs tensorrt and an "
        "NVIDIA GPU), record the TensorRT version and GPU, then re-verify parity with the engine.",
    )
    build_engine.add_argument("artifact", type=Path, metavar="DIR", help="a tensorrt bundle from bitedge convert")
    build_engine.set_defaults(handler=_build_engine)

    verify = commands.add_parser(
        "verify",
        help="re-run the parity gate on an existing artifact",
        description="Re-run the parity gate of an artifact from its manifest; updates parity.json/.md.",
    )
    verify.add_argument("artifact", type=Path, metavar="DIR", help="artifact directory (with bitedge.json)")
    verify.add_argument("--eval", type=Path, metavar="IMAGES", dest="eval_images", help="other evaluation images")
    verify.add_argument("--threads", type=_positive_int, help="runtime threads")
    verify.set_defaults(handler=_verify)
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
    from bitedge.artifact import MANIFEST_NAME, Manifest

    if (Path(args.model) / MANIFEST_NAME).is_file():
        manifest = Manifest.read(args.model)
        if args.json:
            print(json.dumps(asdict(manifest), indent=2, default=str))
        else:
            print("\n".join(_artifact_lines(manifest)))
        return 0
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


def _calibration_arguments(parser: argparse.ArgumentParser, *, with_table: bool) -> None:
    group = parser.add_argument_group("int8 calibration")
    group.add_argument(
        "--calibration", type=Path, metavar="SOURCE",
        help="images: a folder (recursive), a .txt list of paths, or an .npy/.npz of preprocessed pixels "
        "(default: the demo model's bundled calibration split)",
    )  # fmt: skip
    if with_table:
        group.add_argument("--calibration-table", type=Path, metavar="TABLE.json", help="reuse this table")
    group.add_argument(
        "--calibration-method", default=DEFAULT_METHOD, choices=METHODS,
        help=f"how activation ranges are chosen (default: {DEFAULT_METHOD}, the best measured)",
    )  # fmt: skip
    group.add_argument("--calibration-size", type=_positive_int, default=512, metavar="N", help="seeded sample size")
    group.add_argument("--calibration-seed", type=int, default=0, help="seed of the sample (default: 0)")
    group.add_argument("--exclude", nargs="+", default=[], metavar="LAYER", help="keep layers in float: stem, head, …")
    group.add_argument("--strict-images", action="store_true", help="an unreadable image is an error, not a skip")
    if with_table:
        group.add_argument(
            "--quantizer", choices=["bitedge", "nncf"],
            help="int8 quantizer: bitedge's table (every target) or nncf (openvino's default; measured faster there)",
        )  # fmt: skip


def _calibration_options(args: argparse.Namespace) -> Any:
    from bitedge.loading import DEMO_CALIBRATION
    from bitedge.quantize import CalibrationOptions

    return CalibrationOptions(
        images=args.calibration or DEMO_CALIBRATION,
        table=getattr(args, "calibration_table", None),
        method=args.calibration_method,
        size=args.calibration_size,
        seed=args.calibration_seed,
        exclude=tuple(args.exclude),
        strict_images=args.strict_images,
    )


def _calibrate(args: argparse.Namespace) -> int:
    from bitedge.errors import BadInputError
    from bitedge.fold import fold
    from bitedge.loading import load_model
    from bitedge.pipeline import resolve_processor
    from bitedge.quantize import calibration_table

    if args.out.is_dir():
        raise BadInputError(f"{args.out}: is a directory; give the table's file name, e.g. {args.out}/table.json")
    if args.out.exists() and not args.overwrite:
        raise BadInputError(f"{args.out}: already exists; pass --overwrite to replace it")
    if not args.out.parent.is_dir():
        raise BadInputError(f"{args.out.parent}: directory does not exist; create it first")
    model = load_model(args.model, seed=args.seed)
    processor = resolve_processor(model.image_processor, args.image_size)
    deploy = fold(model, raw_pixel_input=args.raw_pixel_input, processor=processor)
    options = _calibration_options(args)
    table = calibration_table(model, deploy, processor, options, raw_pixels=args.raw_pixel_input, log=_log)
    table.save(args.out)
    used = table.calibration["used"]
    print(f"calibration table: {args.out} ({table.method}, {len(table.amax)} layers, {used} images)")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from bitedge.jobs import plan_jobs
    from bitedge.loading import DEMO_EVAL
    from bitedge.pipeline import ConvertOptions, convert
    from bitedge.targets import parse_precision, parse_target

    named = args.target and args.target != ["all"]
    targets = [parse_target(t) for t in args.target] if named else None
    precisions = [parse_precision(p) for p in args.precision] if args.precision else None
    jobs, skipped = plan_jobs(targets, precisions, args.out)
    options = ConvertOptions(
        eval_images=args.eval_images or DEMO_EVAL,
        image_size=args.image_size,
        batch=args.batch,
        raw_pixel_input=args.raw_pixel_input,
        overwrite=args.overwrite,
        threads=args.threads,
        seed=args.seed,
        calibration=_calibration_options(args),
        quantizer=args.quantizer,
    )
    for skip in skipped:
        _log(f"skipping {skip.target}: {skip.reason}")
    results = convert(args.model, jobs, options, log=_log)
    for result in results:
        print("\n".join(result.report.summary_lines()))
    print(_table(results, [(s.target, s.reason) for s in skipped]))
    root = args.out if len(results) > 1 else None
    if args.bench:
        from bitedge.bench import Protocol
        from bitedge.benchrun import bench, table, write

        _log("timing every artifact (batch 1, short protocol)")
        timed = bench([str(r.directory) for r in results], batches=[1], threads=args.threads,
                      protocol=Protocol(5, 0.5, 20, 1.0))  # fmt: skip
        print(table(timed))
        write(timed, root or args.out, Protocol(5, 0.5, 20, 1.0))
    if root is not None:
        from bitedge.report import build_report

        html_path, _ = build_report(root)
        print(f"report: {html_path}")
    return 0 if all(r.report.passed for r in results) else 1


def _report(args: argparse.Namespace) -> int:
    from bitedge.report import build_report

    html_path, md_path = build_report(args.root)
    print(f"report: {html_path} and {md_path}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from bitedge.bench import Protocol
    from bitedge.benchrun import bench, table, write

    protocol = Protocol(min_runs=args.runs, min_seconds=args.duration)
    _log(f"timing {len(args.targets)} target(s), interleaved, batch {args.batch}")
    results = bench(args.targets, batches=args.batch, threads=args.threads, protocol=protocol)
    print(table(results))
    if args.out:
        write(results, args.out, protocol)
        print(f"results: {args.out}/bench.json, bench.md, bench.png")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from bitedge.predict import expand_images, open_classifier, predict

    classifier = open_classifier(args.target, threads=args.threads)
    records = predict(classifier, expand_images(args.images), top_k=args.top_k)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for record in records:
            if "error" in record:
                print(f"{record['image']}: ERROR {record['error']}")
            else:
                best = ", ".join(f"{p['label']} {p['score']:.3f}" for p in record["predictions"])
                print(f"{record['image']}: {best}")
    failed = [r for r in records if "error" in r]
    if failed:
        print(f"bitedge: error: {len(failed)} of {len(records)} images could not be read", file=sys.stderr)
        return 2
    return 0


def _build_engine(args: argparse.Namespace) -> int:
    from bitedge.artifact import Manifest
    from bitedge.converters.tensorrt_engine import HOW_TO, build_engine, engine_unavailable
    from bitedge.errors import BadInputError

    manifest = Manifest.read(args.artifact)
    if manifest.target != "tensorrt":
        raise BadInputError(f"{args.artifact}: a {manifest.target} artifact, not a tensorrt bundle")
    reason = engine_unavailable()
    if reason is not None:
        raise BadInputError(f"cannot build here: {reason}; {HOW_TO}")
    files = build_engine(args.artifact)
    manifest.files = sorted(set(manifest.files) | set(files))
    manifest.write(args.artifact)
    _log(f"engine built: {args.artifact / files[0]}; verifying it")
    return _verify(argparse.Namespace(artifact=args.artifact, eval_images=None, threads=None))


def _verify(args: argparse.Namespace) -> int:
    from bitedge.pipeline import verify

    result = verify(args.artifact, eval_images=args.eval_images, threads=args.threads, log=_log)
    print("\n".join(result.report.summary_lines()))
    print(_table([result], []))
    return 0 if result.report.passed else 1


def _table(results: list[Any], skipped: list[tuple[str, str]]) -> str:
    """The closing summary: one line per artifact (and per skipped target)."""
    rows = [("artifact", "status", "top-1 agree", "max |Δ|", "accuracy (float -> artifact)")]
    for r in results:
        m = r.report.comparisons[0].metrics
        accuracy = "-"
        if m.reference_accuracy is not None and m.artifact_accuracy is not None:
            accuracy = f"{m.reference_accuracy:.2f}% -> {m.artifact_accuracy:.2f}%"
        status = "pass" if r.report.passed else "FAIL (kept, marked failed)"
        rows.append((str(r.directory), status, f"{m.top1_agreement:.2%}", f"{m.max_abs_diff:.2e}", accuracy))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines + [f"skipped {target}: {reason}" for target, reason in skipped])


def _log(message: str) -> None:
    print(f"bitedge: {message}", file=sys.stderr, flush=True)


def _batch(text: str) -> int | None:
    return None if text == "dynamic" else _positive_int(text)


def _artifact_lines(manifest: Any) -> list[str]:
    """What an artifact is, where it came from and how it did, one fact per line."""
    parity = manifest.parity or {}
    rows = [
        ("artifact", f"{manifest.target} {manifest.precision} ({', '.join(manifest.files)})"),
        ("status", manifest.status),
        ("input", f"{manifest.input['name']} {manifest.input['shape']}, raw pixels: {manifest.input['raw_pixels']}"),
        ("source", f"{manifest.source['path']} ({manifest.source['format']}, sha256 {manifest.source['sha256']})"),
        (
            "labels",
            f"{len(manifest.labels)}: {', '.join(manifest.labels[:5])}{' …' if len(manifest.labels) > 5 else ''}",
        ),
        ("created", f"{manifest.created} with bitedge {manifest.tool_versions.get('bitedge')}"),
    ]
    if manifest.calibration:
        c = manifest.calibration
        rows.append(("calibration", f"{c.get('method')} on {c.get('used')} images, quantizer {c.get('quantizer')}"))
    if parity:
        accuracy = ""
        if parity.get("reference_accuracy") is not None:
            accuracy = f", accuracy {parity['reference_accuracy']:.2f}% -> {parity['artifact_accuracy']:.2f}%"
        rows.append(("parity", f"top-1 agreement {parity['top1_agreement']:.2%}, max |Δ| {parity['max_abs_diff']:.3g}"
                     f"{accuracy} on {parity['eval']['images']} images"))  # fmt: skip
    return [f"{key:<12} {value}" for key, value in rows]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
