"""A request checked at the boundary (``bitedge.api``): the calibration options given and their defaults,
``--fallback``, the evaluation images, a calibration table's destination. Every refusal is a
``BadInputError`` naming the fix, raised before any heavy work."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bitedge.converters import get_converter
from bitedge.errors import BadInputError
from bitedge.limits import check_positive
from bitedge.model.demo import DEMO_CALIBRATION, DEMO_EVAL, is_demo
from bitedge.pipeline.options import CalibrationOptions, ConvertRequest, Fallback
from bitedge.pipeline.plan import Job
from bitedge.precisions import Precision


def check_table_destination(out: Path, *, overwrite: bool) -> None:
    from bitedge.calibration.table import CalibrationTable

    if out.is_dir():
        raise BadInputError(f"{out}: is a directory; give the table's file name, e.g. {out}/table.json")
    if out.exists() and not overwrite:
        raise BadInputError(f"{out}: already exists; pass --overwrite to replace it")
    if out.exists():
        try:
            CalibrationTable.load(out)
        except BadInputError:
            raise BadInputError(
                f"{out}: exists and is not a bitedge calibration table; it is left untouched: choose another --out"
            ) from None
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: directory does not exist; create it first")


def eval_images_for(model: str | Path, given: str | Path | None) -> Path:
    if given is not None:
        return Path(given)
    if is_demo(model):
        return DEMO_EVAL
    raise BadInputError(
        f"{model}: name the evaluation images for the parity gate with --eval IMAGES (eval_images= in the "
        "library); the bundled images belong to the demo model and say nothing about this one"
    )


def calibration_given(
    images: str | Path | None,
    table: str | Path | None,
    method: str | None,
    size: int | None,
    seed: int | None,
    exclude: Sequence[str] | None,
    strict_images: bool,
) -> CalibrationOptions | None:
    """The calibration options the user gave (None when none), with conflicts refused."""
    calibrating = {"--calibration-method": method, "--calibration-size": size, "--calibration-seed": seed,
                   "--exclude": exclude or None, "--strict-images": strict_images or None}  # fmt: skip
    if table is not None:
        ignored = [flag for flag, value in calibrating.items() if value is not None]
        if ignored:
            raise BadInputError(
                f"--calibration-table {table} fixes the calibration; {', '.join(ignored)} would be ignored: drop "
                "them, or drop --calibration-table to calibrate anew"
            )
    if images is None and table is None and all(v is None for v in calibrating.values()):
        return None
    options = CalibrationOptions(
        images=Path(images) if images is not None else None,
        table=Path(table) if table is not None else None,
        size=check_positive("calibration_size", size) if size is not None else 512,
        seed=seed or 0,
        exclude=tuple(exclude or ()),
        strict_images=strict_images,
    )
    if method is not None:
        from bitedge.calibration import METHODS

        if method not in METHODS:
            raise BadInputError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
        options = replace(options, method=method)
    return options


def check_fallback(request: ConvertRequest, jobs: list[Job]) -> None:
    """``fallback="auto"`` needs an int8 artifact built from bitedge's table (a target's own quantizer, such as
    NNCF, chooses its own float layers)."""
    if request.fallback is Fallback.NONE:
        return
    int8 = [job.target for job in jobs if job.precision == Precision.INT8]
    if not int8:
        raise BadInputError(
            "--fallback auto chooses which layers stay float in int8, and no int8 artifact is planned: add "
            "--precision int8, or use --fallback none (the choices: none, auto)"
        )
    own = [t for t in int8 if (request.quantizer or get_converter(t).quantizers[0]) != "bitedge"]
    if own:
        raise BadInputError(
            f"--fallback auto decides float layers in bitedge's calibration table; {', '.join(own)} int8 uses its "
            "own quantizer here, which would ignore them: pass --quantizer bitedge"
        )


def with_calibration_defaults(request: ConvertRequest, *, int8: list[str]) -> ConvertRequest:
    """int8 needs calibration images or a table; a target's own quantizer (NNCF) needs images even with a
    table. The demo model has its own; any other model must name them."""
    if not int8:
        return request
    options = request.calibration or CalibrationOptions()
    own = [t for t in int8 if (request.quantizer or get_converter(t).quantizers[0]) != "bitedge"]
    needs_images = options.images is None and (options.table is None or own)
    if needs_images and is_demo(request.model):
        options = replace(options, images=DEMO_CALIBRATION)
    elif needs_images and options.table is not None:
        raise BadInputError(
            f"{request.model}: {', '.join(own)} int8 calibrates with its own quantizer, which needs images beside "
            "the table: pass --calibration IMAGES as well, or --quantizer bitedge to use the table everywhere"
        )
    elif needs_images:
        raise BadInputError(
            f"{request.model}: int8 needs calibration images: pass --calibration IMAGES (calibration= in the "
            "library) or --calibration-table TABLE.json; the bundled images belong to the demo model only"
        )
    elif options.table is not None and options.images is not None and not own:
        raise BadInputError(
            f"--calibration-table {options.table} fixes the calibration; --calibration would be ignored (no "
            "planned target calibrates with its own quantizer): drop one of them"
        )
    return replace(request, calibration=options)


def calibration_or_demo(model: str | Path, given: CalibrationOptions | None) -> CalibrationOptions:
    """The calibration options of a command that always calibrates (or reads a table): the demo model's own
    images when none are named; any other model must name them."""
    options = given or CalibrationOptions()
    if options.images is not None or options.table is not None:
        return options
    if not is_demo(model):
        raise BadInputError(
            f"{model}: name the calibration images with --calibration IMAGES (calibration= in the library); "
            "the bundled images belong to the demo model only"
        )
    return replace(options, images=DEMO_CALIBRATION)


def check_partial_destination(out: Path) -> None:
    """A partial result replaces only a partial result: never a user's file, never into a missing folder."""
    from bitedge.parity.shards import read_partial

    if out.is_dir():
        raise BadInputError(f"{out}: is a directory; give the partial result's file name, e.g. {out}/shard-0.npz")
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: no such directory for --partial-out")
    if out.exists():
        read_partial(out)  # raises, naming it, unless it is one of ours
