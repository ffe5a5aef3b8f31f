"""``bitedge bench --import FILE``: a device's results, checked and kept beside the host's bench rows.

FILE is a bundle's ``results.json`` (from its ``run.py``), or the output of the runtime's own benchmark tool
(``native``). It is read beside its bundle (the folder holding it, or ``--bundle DIR``); a results.json of
another bundle is refused. Its outputs on the bundle's real images are held to the artifact's parity budget
against the float model's (``reference.npy``) and compared with the host's (``host.npy``: how far the device's
kernels are from this machine's). The row goes into ``device-bench.json`` in the report's folder (the one
holding the artifact, or ``--out``), where ``bitedge report`` shows it beside the host's latency.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bitedge.artifacts.ownership import DEVICE_BENCH_FILE, DEVICE_BENCH_FORMAT, check_own_file
from bitedge.bench.device import native
from bitedge.bench.device.bundle import BUNDLE_FORMAT
from bitedge.bench.device.run import RESULTS_FORMAT
from bitedge.errors import BadInputError
from bitedge.fileio import read_json_file, write_json_atomic
from bitedge.parity.metrics import Budget, Comparison, compare


def import_results(path: Path, *, bundle: Path | None = None, out: Path | None = None) -> dict[str, Any]:
    """The device row ``path`` gives (see the module docstring), stored; returns it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read it ({exc})") from None
    folder = bundle or path.parent
    record = _bundle(folder)
    results = _results(path, text)
    if results.get("bundle", {}).get("id", record["id"]) != record["id"]:
        raise BadInputError(f"{path}: results of another bundle than {folder} (its id differs); import it with "
                            "--bundle pointing at the folder it came from")  # fmt: skip
    row: dict[str, Any] = {
        "artifact": record["artifact"], "bundle": str(folder.resolve()), "bundle_id": record["id"],
        "source": results.get("source", "results.json"), "results": str(path.resolve()),
        "device": results.get("device", {}),
        "runtime": results.get("runtime", {}), "batch": results.get("batch", record["batch"]),
        "threads": results.get("threads"), "latency_ms": results["latency_ms"],
        "load_seconds": results.get("load_seconds"), "first_inference_ms": results.get("first_inference_ms"),
        "peak_rss_mib": results.get("peak_rss_mib", results.get("memory_mib")),
        "imported": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    row["parity"] = _parity(folder, record, results, path) if "outputs" in results else None
    _store(out or Path(record["report_root"]), row)
    return row


def _bundle(folder: Path) -> dict[str, Any]:
    file = folder / "bundle.json"
    if not file.is_file():
        raise BadInputError(f"{folder}: not a bitedge device bundle (no bundle.json); give --bundle DIR, the "
                            "folder bitedge bench --bundle wrote")  # fmt: skip
    record = read_json_file(file, "device bundle")
    if not isinstance(record, dict) or record.get("format") != BUNDLE_FORMAT:
        raise BadInputError(f"{file}: not a bundle of this bitedge ({BUNDLE_FORMAT}); make it again")
    return record


def _results(path: Path, text: str) -> dict[str, Any]:
    tool = native.detect(text)
    if tool is not None:
        return native.parse(tool, text, str(path))
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise BadInputError(f"{path}: neither a bundle's results.json ({RESULTS_FORMAT}) nor the output of "
                            "benchmark_app, trtexec or Minibench")  # fmt: skip
    for key in ("bundle", "latency_ms", "device", "runtime"):  # outputs too, unless only latency came back
        if not isinstance(data.get(key), dict):
            raise BadInputError(f"{path}: results.json without {key}; run the bundle's run.py again")
    return data


def _outputs(results: dict[str, Any], where: Path) -> np.ndarray:
    encoded = results["outputs"]
    try:
        values = np.frombuffer(base64.b64decode(encoded["base64"], validate=True), "<f4")
        return values.reshape([int(n) for n in encoded["shape"]]).astype(np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: its outputs do not decode ({exc}); run the bundle's run.py again") from None


def _parity(folder: Path, record: dict[str, Any], results: dict[str, Any], where: Path) -> dict[str, Any]:
    """The device's outputs held to the artifact's budget against the float model; and next to the host's."""
    device = _outputs(results, where)
    reference = np.load(folder / "reference.npy", allow_pickle=False)
    host = np.load(folder / "host.npy", allow_pickle=False)
    labels = np.load(folder / "labels.npy", allow_pickle=False) if (folder / "labels.npy").is_file() else None
    if device.shape != reference.shape:
        raise BadInputError(f"{where}: {device.shape} outputs for a bundle of {reference.shape}; run it again")
    budget = Budget(**record["budget"])
    gate = Comparison.of("device vs float reference", compare(reference, device, labels), budget)
    host_metrics = compare(host, device)
    return {"passed": gate.passed, "failures": gate.failures, "budget": asdict(budget),
            "vs_float": asdict(gate.metrics), "vs_host": asdict(host_metrics), "images": len(device)}  # fmt: skip


def _store(root: Path, row: dict[str, Any]) -> None:
    """Add ``row`` to ``root/device-bench.json`` (bitedge's own; a row of the same results file is replaced)."""
    file = root / DEVICE_BENCH_FILE
    check_own_file(file)
    rows = read_json_file(file, "device results").get("rows") if file.is_file() else []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BadInputError(f"{file}: its rows are not bitedge's device results; remove it and import them again")
    rows = [r for r in rows if r.get("results") != row["results"]] + [row]
    write_json_atomic(file, {"format": DEVICE_BENCH_FORMAT, "rows": rows})


def describe(row: dict[str, Any]) -> str:
    """A device row in one line: where, what ran, how fast, and whether its outputs hold."""
    device, runtime, latency = row["device"], row["runtime"], row["latency_ms"]
    where = device.get("cpu") or device.get("gpu") or device.get("model") or device.get("device") or "device"
    speed = " ".join(f"{key} {latency[key]:.2f} ms" for key in ("median", "trimmed_mean", "mean") if latency.get(key))
    parity = row["parity"]
    if parity is None:
        verdict = "latency only (a native tool returns no outputs to check)"
    elif parity["passed"]:
        agreement = parity["vs_float"]["top1_agreement"]
        verdict = f"outputs within budget on {parity['images']} images (top-1 agreement {agreement:.2%})"
    else:
        verdict = "outputs FAIL the budget: " + "; ".join(parity["failures"])
    ran = f"{runtime.get('name', '?')} {runtime.get('version') or ''}".strip()
    return f"{row['artifact']['name']} on {where} ({ran}): {speed}; {verdict}"
