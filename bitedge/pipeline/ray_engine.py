"""``verify --engine ray``: the shards of a verification run as Ray Data actors, then merged.

Each of ``--workers`` actors runs one shard exactly as ``verify --shard I/N --partial-out`` does (its own
float reference, simulated model and runtime session, loaded once in the actor) and returns the partial
result's bytes; the driver merges them as ``verify --merge`` does. The merged report therefore equals the
local engine's. Ray is started for the run on this machine (with ``--workers`` CPUs), or joins the cluster
``RAY_ADDRESS`` names; the artifact and the images must be at the same paths on every node (a shared file
system). Ray 2.59+ protects clusters with token authentication, and bitedge keeps it on (``_token_auth``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bitedge.errors import BadInputError, MissingRuntimeError
from bitedge.parity.metrics import BudgetOverride
from bitedge.pipeline.ray_address import RAY_JOIN_LIMITS, check_ray_address
from bitedge.pipeline.result import Result

INSTALL = "pip install 'bitedge[ray]'"


def verify_on_ray(
    directory: Path,
    *,
    model_path: Path | None,
    eval_images: Path | None,
    workers: int,
    threads: int | None,
    budget: BudgetOverride,
    log: Callable[[str], None],
) -> Result:
    from bitedge.pipeline.verify import merge_partials

    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_ray_address(address)
    log(f"starting Ray ({'cluster ' + address if address else f'on this machine, {workers} CPUs'})")
    with _token_auth(local=not address), tempfile.TemporaryDirectory(prefix="bitedge-ray-") as session:
        try:
            import ray
        except ImportError as exc:
            raise MissingRuntimeError(f"--engine ray needs Ray ({exc}); install it with: {INSTALL}") from None
        _reload_auth()
        try:  # quiet: bitedge reports progress and errors itself
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
            else:  # "local": a new instance, never one a `ray start` left running; its files in our temp dir
                ray.init(address="local", num_cpus=workers, include_dashboard=False, _temp_dir=session,
                         log_to_driver=False, logging_level=logging.ERROR)  # fmt: skip
        except Exception as exc:  # ConnectionError, ray's AuthenticationError, ValueError: all about the address
            if not address:
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BadInputError(
                f"RAY_ADDRESS={address}: cannot connect to the Ray cluster ({first}); if it uses token "
                "authentication, set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to its token"
            ) from None
        try:
            rows = _run_shards(ray, directory, model_path, eval_images, workers, threads, budget)
        finally:
            ray.shutdown()
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for row in sorted(rows, key=lambda r: int(r["index"])):
            if row["error"]:
                raise BadInputError(f"shard {row['index']}/{workers} failed on a Ray worker: {row['error']}")
            path = Path(scratch) / f"shard-{row['index']}.npz"
            path.write_bytes(row["partial"])
            paths.append(path)
        return merge_partials(directory, paths, log=log)


@contextlib.contextmanager
def _token_auth(*, local: bool) -> Iterator[None]:
    """Ray's token authentication, on, and its patience joining a cluster bounded (``RAY_JOIN_LIMITS``). A local
    instance gets a fresh token for this run only, in the environment (``ray.init`` would otherwise write a
    lasting, world-readable ``~/.ray/auth_token``); a cluster is joined in token mode with the token the user
    provides (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). A cluster without authentication
    accepts such a client too."""
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", *RAY_JOIN_LIMITS)}
    for name, limit in RAY_JOIN_LIMITS.items():
        os.environ.setdefault(name, limit)
    if saved["RAY_AUTH_MODE"] is None:
        os.environ["RAY_AUTH_MODE"] = "token"
    if local and os.environ.get("RAY_AUTH_MODE") == "token" and saved["RAY_AUTH_TOKEN"] is None:
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # this run's, never written to disk
    try:
        yield
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before
        if "ray" in sys.modules:
            _reload_auth()


def _reload_auth() -> None:
    """Ray caches the authentication mode and token the first time it reads them (when it is imported, for a
    process that imported it earlier): make it read the environment again."""
    with contextlib.suppress(ImportError, AttributeError):  # private in Ray 2.59/2.60; without it, as cached
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def _run_shards(
    ray: Any, directory: Path, model_path: Path | None, eval_images: Path | None, workers: int, threads: int | None,
    budget: BudgetOverride,
) -> list[dict[str, Any]]:  # fmt: skip
    from tqdm import tqdm

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # bitedge shows its own, per shard
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # e.g. "progress bars disabled"
    # each actor has one CPU: one thread per runtime unless told otherwise (two spinning pools per core thrash)
    settings = {"directory": str(directory.absolute()), "workers": workers, "threads": threads or 1,
                "eval_images": str(eval_images.absolute()) if eval_images is not None else None,
                "model_path": str(model_path.absolute()) if model_path is not None else None,
                "budget": budget}  # fmt: skip
    shards = ray.data.from_items([{"index": i} for i in range(workers)], override_num_blocks=workers)
    pool = ray.data.ActorPoolStrategy(size=workers)  # one actor per shard, each loads its models once
    with warnings.catch_warnings():  # max_restarts=0 (a failed shard is reported, not retried) is a "remote arg"
        warnings.simplefilter("ignore", DeprecationWarning)
        results = shards.map_batches(ShardWorker, fn_constructor_kwargs=settings, batch_size=1, compute=pool,
                                     num_cpus=1, max_restarts=0)  # fmt: skip
    return list(tqdm(results.iter_rows(), total=workers, desc="shards on Ray", unit="shard", leave=False))


class ShardWorker:
    """One Ray actor: runs the shards it is given (one per actor) as ``verify --shard`` would."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from bitedge.errors import BitEdgeError
        from bitedge.parity.shards import ShardSpec
        from bitedge.pipeline.verify import verify

        s = self.settings
        indices = [int(i) for i in batch["index"]]
        partials, errors = [], []
        for index in indices:
            with tempfile.TemporaryDirectory() as scratch:
                out = Path(scratch) / "partial.npz"
                try:
                    verify(Path(s["directory"]), model_path=Path(s["model_path"]) if s["model_path"] else None,
                           eval_images=Path(s["eval_images"]) if s["eval_images"] else None,
                           threads=s["threads"], budget=s["budget"], shard=ShardSpec(index, s["workers"]),
                           partial_out=out)  # fmt: skip
                    partials.append(out.read_bytes())
                    errors.append("")
                except BitEdgeError as exc:  # reported by the driver, as the local engine would report it
                    partials.append(b"")
                    errors.append(str(exc))
        return {"index": np.asarray(indices), "partial": np.asarray(partials, dtype=object),
                "error": np.asarray(errors, dtype=object)}  # fmt: skip
