"""On-device latency: a benchmark bundle per artifact that runs without bitedge or torch, and its results
brought back.

    run.py      the runner copied into every bundle (numpy and the artifact's runtime only)
    bundle.py   ``bitedge bench --bundle``: model files, real preprocessed inputs, the float model's and the
                host's outputs on them, the protocol, run.py, the native tools' commands, a README
    native.py   what benchmark_app, trtexec and Minibench print, read into the results schema
    results.py  ``bitedge bench --import``: a device's results checked against the float model, kept as
                device rows beside the host's bench rows for ``bitedge report``
    remote.py   ``--remote ssh://user@host``: copy, run and fetch over ssh
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bitedge.arguments import checked

Log = Callable[[str], None]


@checked
def make_device_bundle(
    artifact: str | Path,
    out: str | Path,
    *,
    eval_images: str | Path | None = None,
    images: int = 16,
    model: str | Path | None = None,
    threads: int | None = None,
    runs: int = 50,
    duration: float = 3.0,
    verify_hashes: bool = True,
    allow_failed: bool = False,
    log: Log | None = None,
) -> Path:
    """A device bundle of ``artifact`` in ``out/<its name>`` (``bundle``): returns its folder. A failed or
    modified artifact is refused unless ``allow_failed`` / ``verify_hashes=False``."""
    from bitedge.artifacts.integrity import Allowances
    from bitedge.bench.device.bundle import make_bundle
    from bitedge.bench.protocol import Protocol
    from bitedge.limits import check_positive

    protocol = Protocol(min_runs=runs, min_seconds=duration)
    return make_bundle(Path(artifact), Path(out), eval_images=Path(eval_images) if eval_images else None,
                       images=check_positive("images", images) or 16, model_path=Path(model) if model else None,
                       threads=check_positive("threads", threads), protocol=protocol,
                       allow=Allowances(failed=allow_failed, modified=not verify_hashes),
                       log=log or (lambda _: None))  # fmt: skip


@checked
def run_on_device(
    bundle: str | Path,
    remote: str,
    *,
    python: str = "python3",
    threads: int | None = None,
    out: str | Path | None = None,
    log: Log | None = None,
) -> dict[str, Any]:
    """Copy ``bundle`` to ``remote`` (``ssh://user@host[:port]``), run it there, fetch its results.json into it
    and import them (``import_device_results``): the device row."""
    from bitedge.bench.device.remote import Remote, run_remote
    from bitedge.bench.device.results import import_results

    target = Remote.parse(remote)
    (log or (lambda _: None))(f"running {bundle} on {target.target}")
    results = run_remote(Path(bundle), target, python=python, threads=threads)
    return import_results(results, out=Path(out) if out is not None else None)


@checked
def import_device_results(path: str | Path, *, out: str | Path | None = None) -> dict[str, Any]:
    """A device's results (a bundle's results.json, or benchmark_app / trtexec / Minibench output, inside its
    bundle folder), checked against the float model and stored beside the host's bench rows: the device row."""
    from bitedge.bench.device.results import import_results

    return import_results(Path(path), out=Path(out) if out is not None else None)
