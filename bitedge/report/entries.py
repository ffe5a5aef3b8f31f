"""What a report is built from, read back from the artifacts' own files: each artifact's manifest, parity
report and stored outputs, its diagnosis (``bitedge diagnose``), and the latency rows measured for it here
(``bench.json``) and on devices (``device-bench.json``, from ``bitedge bench --import``)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bitedge.artifacts.integrity import changed_files
from bitedge.artifacts.manifest import Manifest
from bitedge.artifacts.ownership import DEVICE_BENCH_FILE, DIAGNOSE_FILES, MANIFEST_NAME, OUTPUTS_FILE, is_own_file
from bitedge.errors import BadInputError
from bitedge.fileio import read_json_file


@dataclass(frozen=True)
class Timing:
    """One latency row of an artifact: measured on this machine (bitedge bench) or on a device (a bundle)."""

    where: str  # "host: <CPU>" or "device: <CPU or model>"
    runtime: str  # what ran it
    runs: str  # the precision that ran ("f32", "bf16", "int8", ... as the runtime says it)
    batch: int
    median_ms: float | None
    p90_ms: float | None
    trimmed_mean_ms: float | None
    first_ms: float | None
    verdict: str  # the device's outputs against the budget ("-" on the host: its gate is the parity report)


@dataclass
class Entry:
    directory: Path
    manifest: Manifest
    parity: dict[str, Any]
    outputs: dict[str, np.ndarray] | None
    timings: list[Timing] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)  # files changed since the artifact was verified
    diagnosis: dict[str, Any] | None = None  # its diagnose.json (bitedge diagnose), when there is one

    @property
    def name(self) -> str:
        return f"{self.manifest.target} {self.manifest.precision}"

    @property
    def verdict(self) -> str:
        if self.modified:
            return "MODIFIED"
        return "PASS" if self.manifest.status == "passed" else "FAIL"

    @property
    def host_latency_ms(self) -> float | None:
        """The first host row's median (batch 1 first), for the artifacts table."""
        host = sorted((t for t in self.timings if t.where.startswith("host")), key=lambda t: t.batch)
        return host[0].median_ms if host else None


def find_artifacts(root: Path) -> list[Path]:
    if (root / MANIFEST_NAME).is_file():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / MANIFEST_NAME).is_file()) if root.is_dir() else []
    if not found:
        raise BadInputError(f"{root}: no artifacts here (no bitedge.json in it or its subdirectories)")
    return found


def load_entries(root: Path, *, verify_hashes: bool = True) -> list[Entry]:
    host, devices = _host_rows(root), _device_rows(root)
    entries = []
    for directory in find_artifacts(root):
        manifest = Manifest.read(directory)
        parity_file = directory / "parity.json"
        parity = read_json_file(parity_file, "parity report") if parity_file.is_file() else {}
        if not isinstance(parity, dict):
            raise BadInputError(f"{parity_file}: not a bitedge parity report; run bitedge verify {directory}")
        key = directory.resolve()
        timings = host.get(key, []) + devices.get(key, [])
        modified = changed_files(directory, manifest) if verify_hashes else []
        entries.append(
            Entry(directory, manifest, parity, _outputs(directory), timings, modified, _diagnosis(directory))
        )
    return entries


def _outputs(directory: Path) -> dict[str, np.ndarray] | None:
    if not (directory / OUTPUTS_FILE).is_file():
        return None
    try:
        with np.load(directory / OUTPUTS_FILE, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise BadInputError(f"{directory / OUTPUTS_FILE}: unreadable ({exc}); run bitedge verify") from None


def _diagnosis(directory: Path) -> dict[str, Any] | None:
    """The artifact's diagnose.json, if ``bitedge diagnose`` wrote one there."""
    path = directory / DIAGNOSE_FILES[0]
    if not path.is_file():
        return None
    if not is_own_file(path):
        raise BadInputError(f"{path}: not written by bitedge diagnose; remove it or run bitedge diagnose {directory}")
    data: dict[str, Any] = read_json_file(path, "diagnosis")
    return data


def _host_rows(root: Path) -> dict[Path, list[Timing]]:
    """``bench.json``'s artifact rows (from ``convert --bench`` or ``bench --out``), by artifact directory."""
    path = root / "bench.json"
    if not path.is_file():
        return {}
    data = read_json_file(path, "bench results")
    rows: dict[Path, list[Timing]] = {}
    try:
        cpu = data["machine"]["cpu"]
        for run in data["runs"]:
            for name, stats in run["stats"].items():
                info = data["targets"].get(name, {})
                spec = name.rsplit(" (", 1)[0] if name.endswith(")") else name
                directory = Path(spec) if Path(spec).is_absolute() else (Path.cwd() / spec)
                if not (directory / MANIFEST_NAME).is_file():
                    directory = root / Path(spec).name  # bench ran elsewhere: the artifact by its folder name
                timing = Timing(f"host: {cpu}", str(info.get("runtime", "?")), str(info.get("runs", "?")),
                                int(run["batch"]), float(stats["median_ms"]), float(stats["p90_ms"]), None, None,
                                "-")  # fmt: skip
                rows.setdefault(directory.resolve(), []).append(timing)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadInputError(f"{path}: not bitedge bench results; remove it") from None
    return rows


def _device_rows(root: Path) -> dict[Path, list[Timing]]:
    """``device-bench.json``'s rows (``bitedge bench --import``), by artifact directory."""
    path = root / DEVICE_BENCH_FILE
    if not path.is_file():
        return {}
    if not is_own_file(path):
        raise BadInputError(f"{path}: not written by bitedge bench --import; remove it")
    rows: dict[Path, list[Timing]] = {}
    try:
        for row in read_json_file(path, "device results")["rows"]:
            device, runtime, latency = row["device"], row["runtime"], row["latency_ms"]
            where = (device.get("cpu") or device.get("gpu") or device.get("model") or device.get("device")
                     or f"not recorded by {row['source']}")  # fmt: skip
            ran = " ".join(str(v) for v in (runtime.get("name"), runtime.get("version")) if v)
            runs = str(
                runtime.get("inference_precision") or runtime.get("compute_units") or row["artifact"]["precision"]
            )
            parity = row["parity"]
            verdict = "latency only" if parity is None else ("PASS" if parity["passed"] else "FAIL")
            timing = Timing(f"device: {where}", f"{ran} ({row['source']})", runs, int(row.get("batch") or 1),
                            latency.get("median"), latency.get("p90"), latency.get("trimmed_mean"),
                            row.get("first_inference_ms"), verdict)  # fmt: skip
            rows.setdefault(Path(row["artifact"]["directory"]).resolve(), []).append(timing)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise BadInputError(f"{path}: not bitedge device results; remove it and import them again") from None
    return rows
