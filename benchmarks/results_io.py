"""Shared by the benchmark scripts: their command line, the quick protocol, and how results are written (JSON +
Markdown, printed) and plotted."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bitedge.bench.protocol import Protocol, machine_info
from bitedge.cpu import detect_cpu

RESULTS = Path(__file__).parent / "results"
QUICK = Protocol(3, 0.3, 15, 0.5)  # --quick: a smoke run, not for results


def script_arguments(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring as the help, ``--out`` (the results folder) and ``--quick``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="short protocol (a smoke run, not for results)")
    return parser


def latency_protocol(quick: bool) -> Protocol:
    """The latency protocol: bitedge's, or ``QUICK`` for a smoke run."""
    return QUICK if quick else Protocol()


def machine_with_isa() -> dict[str, Any]:
    """``machine_info()`` with the ISA ``--cpu auto`` picks here, printed first (the int8 benchmarks)."""
    machine = {**machine_info(), "isa": detect_cpu().value}
    print(f"ISA found: {machine['isa']} (flags: {', '.join(machine['flags'])})", flush=True)
    return machine


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_json(out: Path, name: str, data: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def save_markdown(out: Path, name: str, lines: list[str]) -> None:
    """Write ``name.md`` and print it: the table a reader sees first."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def machine_line(machine: dict[str, Any]) -> str:
    """'AMD EPYC, 2 cores, 23.5 GiB, flags avx2 ...': ``bench.machine_info()`` for a results header."""
    flags = " ".join(machine["flags"])
    return f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, flags {flags}"


_FRESH_CLI = """
import json, sys, time
from bitedge.memory import peak_rss_mb
from bitedge.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
print(json.dumps({"exit_code": code, "seconds": time.perf_counter() - start, "peak_rss_mib": peak_rss_mb()}))
"""


def start_cli_process(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``bitedge ARGS`` in its own process, started (several can run at once); `cli_process_result` waits."""
    return subprocess.Popen([sys.executable, "-c", _FRESH_CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip


def cli_process_result(process: subprocess.Popen[str]) -> dict[str, Any]:
    """A `start_cli_process` process's exit code, seconds and peak RSS (MiB).

    Adds ``error`` (the end of stderr) when the process died before reporting, and ``stderr`` always.
    """
    out, err = process.communicate()
    lines = out.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        return {"error": err[-2000:], "stderr": err}
    return {**json.loads(lines[-1]), "stderr": err}


def convert_in_fresh_process(args: list[str]) -> dict[str, Any]:
    """``bitedge convert ARGS`` in its own process (`cli_process_result`'s record)."""
    return cli_process_result(start_cli_process(["convert", *args]))
