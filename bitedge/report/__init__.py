"""One conversion report across all artifacts: report.html (self-contained) and report.md.

Which artifact should I ship, and what does it cost in accuracy, size and speed? One row per artifact
(target, precision, size, agreement with float, accuracy, cosine/SNR, int8 conversion fidelity, pass/fail,
latency here), then how close each artifact's logits are to float (one distribution per artifact), latency
on this machine and on devices (with a note saying how to measure it when nothing was), per-class accuracy as
a heat map, the int8 tables, each diagnosis, and the images whose prediction flipped. Everything is read back
from the artifacts' own files (``entries``), so ``bitedge report DIR`` rebuilds it at any time.

    entries.py  what the report reads: manifests, parity reports, outputs, diagnoses, latency rows
    tables.py   int8 tables (fallback, sensitivity) and per-class accuracy
    plots.py    error distribution, latency, diagnosis plots
    page.py     HTML and Markdown
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitedge.artifacts.integrity import STRICT, Allowances
from bitedge.artifacts.ownership import REPORT_FILES, check_own_file
from bitedge.fileio import write_atomic
from bitedge.report.entries import load_entries
from bitedge.report.page import render_html, render_markdown
from bitedge.report.tables import int8_tables


@dataclass(frozen=True)
class Built:
    html: Path
    markdown: Path
    problems: list[str]  # failed or modified artifacts in the report that the user did not allow


def build_report(root: Path, *, allow: Allowances = STRICT) -> Built:
    """Write ``report.html`` and ``report.md`` into ``root``.

    Failed and modified artifacts are shown as such (FAIL, MODIFIED); unless ``allow`` accepts them they are
    also returned as problems, for the caller's exit code.
    """
    entries = load_entries(root, verify_hashes=not allow.modified)
    html_path, md_path = (root / name for name in REPORT_FILES)
    for path in (html_path, md_path):
        check_own_file(path)  # rebuild bitedge's own report, never a file of the user's
    tables = int8_tables(root, [e.manifest for e in entries])
    write_atomic(html_path, render_html(entries, tables))
    write_atomic(md_path, render_markdown(entries, tables))
    problems = [f"{e.directory}: {', '.join(e.modified[:3])} changed since the artifact was verified"
                for e in entries if e.modified]  # fmt: skip
    if not allow.failed:
        problems += [f"{e.directory}: failed its parity gate" for e in entries if e.verdict == "FAIL"]
    return Built(html_path, md_path, problems)
