"""The handlers behind each ``bitedge`` command: parse nothing, call the library, print, return an exit code.

``cli.parser`` builds the parser, ``cli.main`` maps errors to exit codes; each function here is one command.
Heavy imports (torch, runtimes) happen inside the handlers, so ``bitedge --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bitedge.errors import BadInputError


def run_inspect(args: argparse.Namespace) -> int:
    from bitedge.artifacts.manifest import Manifest
    from bitedge.artifacts.ownership import MANIFEST_NAME

    if (Path(args.model) / MANIFEST_NAME).is_file():
        from bitedge.artifacts.integrity import changed_files, describe_changes
        from bitedge.artifacts.manifest import seal_state

        manifest = Manifest.read(args.model)
        changed = changed_files(Path(args.model), manifest)
        integrity = {"changed": changed, "seal": seal_state(Path(args.model))}
        if args.json:
            print(json.dumps({**manifest.to_dict(), "integrity": integrity}, indent=2, default=str))
            return 0
        if changed:
            verdict = f"MODIFIED: {describe_changes(changed)}"
        elif integrity["seal"] == "missing":
            verdict = "files intact; bitedge.json unsealed (an older bitedge wrote it: bitedge verify seals it)"
        else:
            verdict = f"intact ({len(manifest.files)} files match their sha256, bitedge.json sealed)"
        print("\n".join([*_artifact_lines(manifest), f"{'integrity':<12} {verdict}"]))
        return 0
    from bitedge.model.loading import load_model
    from bitedge.model.presets import PRESETS
    from bitedge.model.summary import summarize

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


TARGET_OPTION = "target_option:"  # argparse dest prefix of a target's own option: "target_option:onnx.group_norm"


def _calibration_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The calibration options as the library takes them (None: not given)."""
    return {
        "calibration": args.calibration,
        "calibration_method": args.calibration_method,
        "calibration_size": args.calibration_size,
        "calibration_seed": args.calibration_seed,
        "exclude": args.exclude,
        "strict_images": args.strict_images,
    }


def _target_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``{target: {option: value}}`` from the target flags the user gave (the others are not in ``args``)."""
    options: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if key.startswith(TARGET_OPTION):
            target, _, name = key.removeprefix(TARGET_OPTION).partition(".")
            options.setdefault(target, {})[name] = value
    return options


def run_calibrate(args: argparse.Namespace) -> int:
    from bitedge.api import calibrate

    table = calibrate(
        args.model, args.out, image_size=args.image_size, raw_pixel_input=args.raw_pixel_input, seed=args.seed,
        overwrite=args.overwrite, log=_log, **_calibration_kwargs(args),
    )  # fmt: skip
    used = table.calibration["used"]
    print(f"calibration table: {args.out} ({table.method}, {len(table.layers)} layers, {used} images)")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from bitedge.api import convert

    if args.bench:
        from bitedge.bench.run import check_out

        check_out(args.out)
    results = convert(
        args.model, args.out, targets=args.target, precisions=args.precision, eval_images=args.eval_images,
        calibration_table=args.calibration_table, quantizer=args.quantizer, image_size=args.image_size,
        batch=args.batch, raw_pixel_input=args.raw_pixel_input, overwrite=args.overwrite, threads=args.threads,
        seed=args.seed, target_options=_target_options(args), fallback=args.fallback, cpu=args.cpu,
        report=not args.bench, log=_log, **_calibration_kwargs(args), **_budget_kwargs(args),
    )  # fmt: skip
    for result in results:
        print("\n".join(result.report.summary_lines()))
    print(_table(results, [(s.target, s.reason) for s in results.skipped], results.failures))
    for failure in results.failures:
        print(f"bitedge: error: {failure.target} {failure.precision}: {failure.reason}", file=sys.stderr)
    _suggest_diagnose(list(results))
    root = args.out if results and len(results) + len(results.failures) > 1 else None
    if args.bench and results:
        from bitedge.artifacts.integrity import Allowances
        from bitedge.bench.protocol import Protocol
        from bitedge.bench.run import bench, table, write

        _log("timing every artifact (batch 1, short protocol)")
        protocol = Protocol(5, 0.5, 20, 1.0)
        # this run's artifacts were just verified; a failed one is timed and reported as such (the exit code says it)
        untimed: list[str] = []  # a runtime that cannot run here (Core ML off macOS): said, the others timed
        timed = bench([str(r.directory) for r in results], batches=[1], threads=args.threads, protocol=protocol,
                      allow=Allowances(failed=True), untimed=untimed)  # fmt: skip
        for line in untimed:
            _log(f"not timed here: {line}")
        if timed:
            print(table(timed))
            write(timed, root or results[0].directory, protocol)
        if root is not None:
            from bitedge.api import write_report

            write_report(root, log=_log)  # with the latencies
    if root is not None:
        print(f"report: {root / 'report.html'}")
    return 0 if results.passed else 1


def run_sensitivity(args: argparse.Namespace) -> int:
    from bitedge.api import sensitivity
    from bitedge.pipeline.sensitivity import markdown

    result = sensitivity(
        args.model, args.out, eval_images=args.eval_images, targets=args.target, ranking_images=args.ranking_images,
        calibration_table=args.calibration_table, image_size=args.image_size, raw_pixel_input=args.raw_pixel_input,
        seed=args.seed, overwrite=args.overwrite, cpu=args.cpu, log=_log, **_calibration_kwargs(args),
    )  # fmt: skip
    print("\n".join(markdown(result.to_dict(), limit=10)))
    print(f"results: {args.out}/sensitivity.json, sensitivity.md, sensitivity.png")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from bitedge.report import build_report

    built = build_report(args.root, allow=_allowances(args))
    print(f"report: {built.html} and {built.markdown}")
    for problem in built.problems:
        print(f"bitedge: error: {problem} (shown in the report; pass --allow-failed/--no-verify-hashes to accept)",
              file=sys.stderr)  # fmt: skip
    return 1 if built.problems else 0


def _allowances(args: argparse.Namespace) -> Any:
    from bitedge.artifacts.integrity import Allowances

    return Allowances(failed=args.allow_failed, modified=args.no_verify_hashes)


def _warn(warnings: Any) -> None:
    for warning in warnings:
        print(f"bitedge: warning: {warning}", file=sys.stderr)


def run_bench(args: argparse.Namespace) -> int:
    from bitedge.bench.protocol import Protocol
    from bitedge.bench.run import bench, check_out, table, write

    if args.import_files or args.bundle:
        return _run_device(args)
    if args.remote:
        raise BadInputError("--remote runs device bundles: add --bundle DIR")
    if not args.targets:
        raise BadInputError("bitedge bench needs TARGETs (artifact directories or models), or --import FILE")
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


def _run_device(args: argparse.Namespace) -> int:
    """``bench --bundle`` (and ``--remote``) or ``bench --import``: every row printed; exit 1 if a device's
    outputs miss the artifact's budget."""
    from bitedge.bench.device import import_device_results, make_device_bundle, run_on_device
    from bitedge.bench.device.results import describe

    if args.import_files and (args.targets or args.bundle):
        raise BadInputError("--import reads results back; give it alone (no TARGETs, no --bundle)")
    if args.bundle and not args.targets:
        raise BadInputError("--bundle DIR writes one bundle per ARTIFACT: name the artifact directories")
    rows = [import_device_results(path, out=args.out) for path in args.import_files or []]
    for target in args.targets if args.bundle else []:
        folder = make_device_bundle(target, args.bundle, eval_images=args.eval_images, images=args.images,
                                    model=args.model, threads=args.threads, runs=args.runs, duration=args.duration,
                                    verify_hashes=not args.no_verify_hashes, allow_failed=args.allow_failed,
                                    log=_log)  # fmt: skip
        print(f"bundle: {folder} (see its README.md)")
        if args.remote:
            rows.append(run_on_device(folder, args.remote, python=args.remote_python, threads=args.threads,
                                      out=args.out, log=_log))  # fmt: skip
    for row in rows:
        print(describe(row))
    return 1 if any(row["parity"] is not None and not row["parity"]["passed"] for row in rows) else 0


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
    from bitedge.api import build_on_device

    return _print_verdict(build_on_device(args.artifact, log=_log))


def run_verify(args: argparse.Namespace) -> int:
    from bitedge.api import merge, verify

    if args.merge:
        flags = (("--eval", args.eval_images), ("--model", args.model), ("--shard", args.shard),
                 ("--partial-out", args.partial_out), ("--threads", args.threads))  # fmt: skip
        given = [flag for flag, value in flags if value is not None]
        given += [f"--{k.replace('_', '-')}" for k, v in _budget_kwargs(args).items() if v is not None]
        if given:
            raise BadInputError(f"--merge records what the shards measured; {', '.join(given)} would be ignored: "
                                "give them to the shards")  # fmt: skip
        return _print_verdict(merge(args.artifact, args.merge, log=_log))
    result = verify(args.artifact, args.eval_images, model=args.model, threads=args.threads, shard=args.shard,
                    partial_out=args.partial_out, engine=args.engine, workers=args.workers, log=_log,
                    **_budget_kwargs(args))  # fmt: skip
    if args.shard is not None:  # a shard's numbers are its own: the artifact's verdict comes from --merge
        print("\n".join(result.report.summary_lines()))
        for line in result.warnings:
            print(f"bitedge: {line}", file=sys.stderr)
        return 0
    return _print_verdict(result)


def run_diagnose(args: argparse.Namespace) -> int:
    from bitedge.api import diagnose
    from bitedge.diagnose.write import verdict_lines

    result = diagnose(args.artifact, args.eval_images, images=args.images, out=args.out, model=args.model,
                      threads=args.threads, verify_hashes=not args.no_verify_hashes, log=_log)  # fmt: skip
    data = result.to_dict()
    print(f"{result.directory}: {data['target']} {data['precision']}, {len(result.layers)} layers on "
          f"{data['images']} images")  # fmt: skip
    print("\n".join(f"  {line}" for line in verdict_lines(data)))
    if result.untapped:
        print(f"  not observable in this runtime: {', '.join(result.untapped)}")
    _warn(result.notes)
    out = args.out or args.artifact
    print(f"diagnosis: {out}/diagnose.json, diagnose.md, diagnose.png")
    return 0


def _budget_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in ("min_top1_agreement", "min_cosine", "max_accuracy_drop")}


def _print_verdict(result: Any) -> int:
    print("\n".join(result.report.summary_lines()))
    print(_table([result], []))
    _warn(result.warnings)
    if not result.passed:
        _suggest_diagnose([result])
    return 0 if result.passed else 1


def _suggest_diagnose(results: list[Any]) -> None:
    """Failing artifacts: point at the command that finds where they diverge (targets that can be tapped)."""
    from bitedge.converters import get_converter
    from bitedge.converters.base import Converter

    for result in results:
        if not result.passed and type(get_converter(result.manifest.target)).tap_runner is not Converter.tap_runner:
            print(
                f"bitedge: to find the first layer where it diverges: bitedge diagnose {result.directory}",
                file=sys.stderr,
            )


def _table(results: list[Any], skipped: list[tuple[str, str]], failures: Any = ()) -> str:
    """The closing summary: one line per artifact (and per skipped target, per artifact not built)."""
    rows = [("artifact", "status", "top-1 agree", "max |Δ|", "accuracy (float -> artifact)")]
    for r in results:
        m = r.report.comparisons[0].metrics
        accuracy = "-"
        if m.reference_accuracy is not None and m.artifact_accuracy is not None:
            accuracy = f"{m.reference_accuracy:.2f}% -> {m.artifact_accuracy:.2f}%"
        status = "pass" if r.report.passed else "FAIL (kept, marked failed)"
        rows.append((str(r.directory), status, f"{m.top1_agreement:.2%}", f"{m.max_abs_diff:.2e}", accuracy))
    rows += [(str(f.directory), "FAILED to build (nothing published)", "-", "-", "-") for f in failures]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines + [f"skipped {target}: {reason}" for target, reason in skipped] + _cpu_lines(results))


def _cpu_lines(results: list[Any]) -> list[str]:
    """Which CPUs the int8 artifacts are made for, where that changed them (``--cpu``), and how to choose otherwise."""
    made: dict[tuple[str, str], list[str]] = {}
    for r in results:
        c = r.manifest.calibration
        if c is not None and c.cpu is not None:
            made.setdefault((c.cpu, str(c.cpu_note())), []).append(r.manifest.target)
    from bitedge.cpu import OTHER_CHOICE

    return [
        f"int8 of {', '.join(names)} made for {note}; {OTHER_CHOICE.get(cpu, '')}"
        for (cpu, note), names in made.items()
    ]


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
        if c.cpu_note():
            rows.append(("int8 for", c.cpu_note()))
    if parity:
        rows.append(("parity", _parity_line(parity)))
    return [f"{key:<12} {value}" for key, value in rows]


def _parity_line(parity: dict[str, Any]) -> str:
    try:
        accuracy = ""
        if parity.get("reference_accuracy") is not None:
            accuracy = f", accuracy {parity['reference_accuracy']:.2f}% -> {parity['artifact_accuracy']:.2f}%"
        return (f"top-1 agreement {parity['top1_agreement']:.2%}, max |Δ| {parity['max_abs_diff']:.3g}{accuracy} "
                f"on {parity['eval']['images']} images")  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return "the summary in bitedge.json is unreadable; run bitedge verify to record it again"
