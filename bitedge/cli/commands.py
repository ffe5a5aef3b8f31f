"""The handlers behind each ``bitedge`` command: parse nothing, call the library, print, return an exit code.

``bitedge.cli`` (the package's __init__) builds the parser and maps errors to exit codes; each function
here is one command.
Heavy imports (torch, runtimes) happen inside the handlers, so ``bitedge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def run_inspect(args: argparse.Namespace) -> int:
    from bitedge.manifest import Manifest
    from bitedge.ownership import MANIFEST_NAME

    if (Path(args.model) / MANIFEST_NAME).is_file():
        manifest = Manifest.read(args.model)
        if args.json:
            print(json.dumps(manifest.to_dict(), indent=2, default=str))
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


# Flags that choose how a table is calibrated: a reused table (--calibration-table) has fixed all of them.
_CALIBRATING_FLAGS = ("calibration", "calibration_method", "calibration_size", "calibration_seed", "exclude",
                      "strict_images")  # fmt: skip


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _calibration_options(args: argparse.Namespace) -> Any:
    from bitedge.calibration import DEFAULT_METHOD
    from bitedge.errors import BadInputError
    from bitedge.loading import DEMO_CALIBRATION
    from bitedge.quantize import CalibrationOptions

    table = getattr(args, "calibration_table", None)
    if table is not None:
        given = [_flag(name) for name in _CALIBRATING_FLAGS if getattr(args, name)]
        if given:
            raise BadInputError(
                f"--calibration-table {table} fixes the calibration; {', '.join(given)} would be ignored: drop "
                "them, or drop --calibration-table to calibrate anew"
            )
    return CalibrationOptions(
        images=args.calibration or DEMO_CALIBRATION,
        table=table,
        method=args.calibration_method or DEFAULT_METHOD,
        size=args.calibration_size or 512,
        seed=args.calibration_seed or 0,
        exclude=tuple(args.exclude or ()),
        strict_images=args.strict_images,
    )


def _check_flags_apply(args: argparse.Namespace, jobs: list[Any]) -> None:
    """A flag that no planned artifact uses is a mistake, not something to ignore silently."""
    from bitedge.converters import get_converter
    from bitedge.errors import BadInputError
    from bitedge.targets import Precision, Target

    int8 = [job for job in jobs if job.precision == Precision.INT8]
    planned = ", ".join(f"{job.target} {job.precision}" for job in jobs)
    if not int8:
        given = [_flag(n) for n in (*_CALIBRATING_FLAGS, "calibration_table", "quantizer") if getattr(args, n)]
        if given:
            raise BadInputError(
                f"{', '.join(given)} only apply to int8, and none of the planned artifacts is int8 ({planned}); "
                "add --precision int8 or drop them"
            )
    for flag, target in (("onnx_group_norm", Target.ONNX), ("coreml_target", Target.COREML),
                         ("tensor_input", Target.COREML)):  # fmt: skip
        if getattr(args, flag) and not any(job.target == target for job in jobs):
            raise BadInputError(
                f"{_flag(flag)} only applies to the {target} target, which is not planned ({planned}); "
                f"add --target {target} or drop it"
            )
    if args.quantizer:
        refusing = sorted({str(j.target) for j in int8 if args.quantizer not in get_converter(j.target).quantizers})
        if refusing:
            raise BadInputError(
                f"--quantizer {args.quantizer} is not available for {', '.join(refusing)} (they quantize with "
                "bitedge's table); name the targets that offer it with --target, e.g. --target openvino"
            )


def run_calibrate(args: argparse.Namespace) -> int:
    from bitedge.calibration.table import CalibrationTable
    from bitedge.errors import BadInputError
    from bitedge.fold import fold
    from bitedge.loading import load_model
    from bitedge.pipeline import resolve_processor
    from bitedge.quantize import calibration_table

    if args.out.is_dir():
        raise BadInputError(f"{args.out}: is a directory; give the table's file name, e.g. {args.out}/table.json")
    if args.out.exists() and not args.overwrite:
        raise BadInputError(f"{args.out}: already exists; pass --overwrite to replace it")
    if args.out.exists():
        try:
            CalibrationTable.load(args.out)
        except BadInputError:
            raise BadInputError(
                f"{args.out}: exists and is not a bitedge calibration table; it is left untouched: choose another --out"
            ) from None
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


def run_convert(args: argparse.Namespace) -> int:
    from bitedge.integrity import Allowances
    from bitedge.jobs import plan_jobs
    from bitedge.loading import DEMO_EVAL
    from bitedge.pipeline import ConvertOptions, convert
    from bitedge.targets import ONNX_GROUP_NORMS, parse_precision, parse_target

    named = args.target and args.target != ["all"]
    # each named once: a repeated name would otherwise plan the same artifact twice
    targets = list(dict.fromkeys(parse_target(t) for t in args.target)) if named else None
    precisions = list(dict.fromkeys(parse_precision(p) for p in args.precision)) if args.precision else None
    jobs, skipped = plan_jobs(targets, precisions, args.out)
    _check_flags_apply(args, jobs)
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
        onnx_group_norm=args.onnx_group_norm or ONNX_GROUP_NORMS[0],
        coreml_target=args.coreml_target,
        tensor_input=args.tensor_input,
    )
    if args.bench:
        from bitedge.benchrun import check_out

        check_out(args.out)
    for skip in skipped:
        _log(f"skipping {skip.target}: {skip.reason}")
    results = convert(args.model, jobs, options, log=_log)
    for result in results:
        print("\n".join(result.report.summary_lines()))
    print(_table(results, [(s.target, s.reason) for s in skipped]))
    root = args.out if len(results) > 1 else None
    # this run's artifacts were just verified; a failed one is timed and reported as such (the exit code says it)
    own = Allowances(failed=True)
    if args.bench:
        from bitedge.bench import Protocol
        from bitedge.benchrun import bench, table, write

        _log("timing every artifact (batch 1, short protocol)")
        protocol = Protocol(5, 0.5, 20, 1.0)
        timed = bench([str(r.directory) for r in results], batches=[1], threads=args.threads, protocol=protocol,
                      allow=own)  # fmt: skip
        print(table(timed))
        write(timed, root or results[0].directory, protocol)
    if root is not None:
        from bitedge.report import build_report

        _log(f"writing the report in {root}")
        built = build_report(root, allow=own)
        _warn(built.problems)
        print(f"report: {built.html}")
    return 0 if all(r.report.passed for r in results) else 1


def run_report(args: argparse.Namespace) -> int:
    from bitedge.report import build_report

    built = build_report(args.root, allow=_allowances(args))
    print(f"report: {built.html} and {built.markdown}")
    for problem in built.problems:
        print(f"bitedge: error: {problem} (shown in the report; pass --allow-failed/--no-verify-hashes to accept)",
              file=sys.stderr)  # fmt: skip
    return 1 if built.problems else 0


def _allowances(args: argparse.Namespace) -> Any:
    from bitedge.integrity import Allowances

    return Allowances(failed=args.allow_failed, modified=args.no_verify_hashes)


def _warn(warnings: Any) -> None:
    for warning in warnings:
        print(f"bitedge: warning: {warning}", file=sys.stderr)


def run_bench(args: argparse.Namespace) -> int:
    from bitedge.bench import Protocol
    from bitedge.benchrun import bench, check_out, table, write

    protocol = Protocol(min_runs=args.runs, min_seconds=args.duration)
    if args.out:
        check_out(args.out)
    _log(f"timing {len(args.targets)} target(s), interleaved, batch {args.batch}")
    results = bench(args.targets, batches=args.batch, threads=args.threads, protocol=protocol, allow=_allowances(args))
    print(table(results))
    if args.out:
        write(results, args.out, protocol)
        print(f"results: {args.out}/bench.json, bench.md, bench.png")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from bitedge.predict import expand_images, open_classifier, predict

    classifier = open_classifier(args.target, threads=args.threads, allow=_allowances(args))
    _warn(classifier.warnings)
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
        print(f"bitedge: error: {len(failed)} of {len(records)} images could not be used", file=sys.stderr)
        return 2
    return 0


def run_build_engine(args: argparse.Namespace) -> int:
    from bitedge.converters.tensorrt_engine import HOW_TO, build_engine, engine_unavailable
    from bitedge.errors import BadInputError
    from bitedge.manifest import Manifest

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
    return run_verify(argparse.Namespace(artifact=args.artifact, eval_images=None, threads=None))


def run_verify(args: argparse.Namespace) -> int:
    from bitedge.pipeline import verify

    result = verify(args.artifact, eval_images=args.eval_images, threads=args.threads, log=_log)
    print("\n".join(result.report.summary_lines()))
    print(_table([result], []))
    _warn(result.warnings)
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


def _artifact_lines(manifest: Any) -> list[str]:
    """What an artifact is, where it came from and how it did, one fact per line."""
    parity = manifest.parity or {}
    rows = [
        ("artifact", f"{manifest.target} {manifest.precision} ({', '.join(manifest.files)})"),
        ("status", manifest.status),
        ("input", f"{manifest.input.name} {manifest.input.shape}, raw pixels: {manifest.input.raw_pixels}"),
        ("source", f"{manifest.source.path} ({manifest.source.format}, sha256 {manifest.source.sha256})"),
        (
            "labels",
            f"{len(manifest.labels)}: {', '.join(manifest.labels[:5])}{' …' if len(manifest.labels) > 5 else ''}",
        ),
        ("created", f"{manifest.created} with bitedge {manifest.tool_versions.get('bitedge')}"),
    ]
    if manifest.calibration:
        c = manifest.calibration
        rows.append(("calibration", f"{c.method} on {c.used} images, quantizer {c.quantizer}"))
    if parity:
        accuracy = ""
        if parity.get("reference_accuracy") is not None:
            accuracy = f", accuracy {parity['reference_accuracy']:.2f}% -> {parity['artifact_accuracy']:.2f}%"
        rows.append(("parity", f"top-1 agreement {parity['top1_agreement']:.2%}, max |Δ| {parity['max_abs_diff']:.3g}"
                     f"{accuracy} on {parity['eval']['images']} images"))  # fmt: skip
    return [f"{key:<12} {value}" for key, value in rows]
