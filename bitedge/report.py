"""One conversion report across all artifacts: report.html (self-contained) and report.md.

Which artifact should I ship, and what does it cost in accuracy, size and speed? One row per artifact
(target, precision, size, agreement with float, accuracy, cosine/SNR, int8 conversion fidelity, pass/fail,
latency when benchmarked), then plots: artifact vs float logits, per-class accuracy, the images whose
prediction flipped (thumbnails with both labels) and latency. Everything is read back from the artifacts'
own files (bitedge.json, parity.json, parity_outputs.npz, and bench.json when present), so
``bitedge report DIR`` rebuilds it at any time. No network: CSS and images are inline.
"""

from __future__ import annotations

import base64
import html
import io
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bitedge import __version__
from bitedge.artifacts.integrity import STRICT, Allowances, changed_files
from bitedge.artifacts.manifest import Manifest
from bitedge.artifacts.ownership import MANIFEST_NAME, OUTPUTS_FILE, REPORT_FILES, REPORT_TITLE, check_own_file
from bitedge.errors import BadInputError
from bitedge.fileio import read_json_file, write_atomic
from bitedge.parity.gate import ARTIFACT_VS_SIMULATED
from bitedge.report_tables import Table, int8_tables

MAX_FLIPS = 8


@dataclass
class Entry:
    directory: Path
    manifest: Manifest
    parity: dict[str, Any]
    outputs: dict[str, np.ndarray] | None
    latency_ms: float | None = None
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


@dataclass(frozen=True)
class Built:
    html: Path
    markdown: Path
    problems: list[str]  # failed or modified artifacts in the report that the user did not allow


def find_artifacts(root: Path) -> list[Path]:
    if (root / MANIFEST_NAME).is_file():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / MANIFEST_NAME).is_file()) if root.is_dir() else []
    if not found:
        raise BadInputError(f"{root}: no artifacts here (no bitedge.json in it or its subdirectories)")
    return found


def load_entries(root: Path, *, verify_hashes: bool = True) -> list[Entry]:
    bench = read_json_file(root / "bench.json", "bench results") if (root / "bench.json").is_file() else None
    entries = []
    for directory in find_artifacts(root):
        manifest = Manifest.read(directory)
        parity_file = directory / "parity.json"
        parity = read_json_file(parity_file, "parity report") if parity_file.is_file() else {}
        if not isinstance(parity, dict):
            raise BadInputError(f"{parity_file}: not a bitedge parity report; run bitedge verify {directory}")
        outputs = None
        if (directory / OUTPUTS_FILE).is_file():
            try:
                with np.load(directory / OUTPUTS_FILE, allow_pickle=False) as data:
                    outputs = {k: data[k] for k in data.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
                raise BadInputError(f"{directory / OUTPUTS_FILE}: unreadable ({exc}); run bitedge verify") from None
        latency = None
        if bench:
            try:
                stats = bench["runs"][0]["stats"].get(str(directory))
                latency = float(stats["median_ms"]) if stats else None
            except (KeyError, IndexError, TypeError, AttributeError, ValueError):
                raise BadInputError(f"{root / 'bench.json'}: not bitedge bench results; remove it") from None
        modified = changed_files(directory, manifest) if verify_hashes else []
        entries.append(Entry(directory, manifest, parity, outputs, latency, modified, _diagnosis(directory)))
    return entries


def _diagnosis(directory: Path) -> dict[str, Any] | None:
    """The artifact's diagnose.json, if ``bitedge diagnose`` wrote one there."""
    from bitedge.artifacts.ownership import DIAGNOSE_FILES, is_own_file

    path = directory / DIAGNOSE_FILES[0]
    if not path.is_file():
        return None
    if not is_own_file(path):
        raise BadInputError(f"{path}: not written by bitedge diagnose; remove it or run bitedge diagnose {directory}")
    data: dict[str, Any] = read_json_file(path, "diagnosis")
    return data


def build_report(root: Path, *, allow: Allowances = STRICT) -> Built:
    """Write ``report.html`` and ``report.md`` into ``root``.

    Failed and modified artifacts are shown as such (FAIL, MODIFIED); unless ``allow`` accepts them they are
    also returned as problems, for the caller's exit code.
    """
    entries = load_entries(root, verify_hashes=not allow.modified)
    html_path, md_path = (root / name for name in REPORT_FILES)
    for path in (html_path, md_path):
        check_own_file(path)  # rebuild bitedge's own report, never a file of the user's
    rows = [_row(e) for e in entries]
    tables = int8_tables(root, [e.manifest for e in entries])
    write_atomic(html_path, _html(entries, rows, tables))
    write_atomic(md_path, _markdown(entries, rows, tables))
    problems = [
        f"{e.directory}: {', '.join(e.modified[:3])} changed since the artifact was verified" for e in entries
        if e.modified
    ]  # fmt: skip
    if not allow.failed:
        problems += [f"{e.directory}: failed its parity gate" for e in entries if e.verdict == "FAIL"]
    return Built(html_path, md_path, problems)


def _row(e: Entry) -> dict[str, str]:
    p = e.manifest.parity or {}
    first = (e.parity.get("comparisons") or [{}])[0].get("metrics", {})
    size = sum((e.directory / f).stat().st_size for f in e.manifest.files if (e.directory / f).is_file())
    fidelity = (p.get("comparisons") or {}).get(ARTIFACT_VS_SIMULATED)
    accuracy = "-"
    if p.get("reference_accuracy") is not None:
        accuracy = f"{p['reference_accuracy']:.2f}% → {p['artifact_accuracy']:.2f}%"
    return {
        "artifact": e.name,
        "directory": e.directory.name,
        "size": f"{size / 2**20:.2f} MiB",
        "top-1 agree": f"{p.get('top1_agreement', float('nan')):.2%}",
        "top-5 agree": f"{p.get('top5_agreement', float('nan')):.2%}",
        "accuracy (float → artifact)": accuracy,
        "cosine / SNR": f"{first.get('cosine_mean', float('nan')):.5f} / {p.get('snr_db', float('nan')):.1f} dB",
        "int8 fidelity": f"{fidelity['top1']:.2%}" if fidelity else "-",
        "float layers": str(len(e.manifest.calibration.excluded)) if e.manifest.calibration else "-",
        "latency": f"{e.latency_ms:.2f} ms" if e.latency_ms is not None else "-",
        "verdict": e.verdict,
    }


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _plots(entries: list[Entry]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, str] = {}
    # (entry, its per-image outputs) for the artifacts that have them
    with_outputs = [(e, e.outputs) for e in entries if e.outputs is not None]
    if with_outputs:
        fig, axes = plt.subplots(1, len(with_outputs), figsize=(3.2 * len(with_outputs), 3.2), squeeze=False)
        for ax, (e, outputs) in zip(axes[0], with_outputs, strict=True):
            ref, art = outputs["reference"].ravel(), outputs["artifact"].ravel()
            ax.scatter(ref, art, s=2, alpha=0.4)
            low, high = float(min(ref.min(), art.min())), float(max(ref.max(), art.max()))
            ax.plot([low, high], [low, high], "k--", linewidth=0.8)
            ax.set_title(e.name, fontsize=9)
            ax.set_xlabel("float logit", fontsize=8)
        axes[0][0].set_ylabel("artifact logit", fontsize=8)
        fig.tight_layout()
        plots["scatter"] = _png(fig)
    labeled = [(e, outputs) for e, outputs in with_outputs if len(outputs["labels"])]
    if labeled:
        labels = labeled[0][0].manifest.labels
        fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(labels) * (len(labeled) + 1) / 2), 3.2))
        width = 0.8 / (len(labeled) + 1)
        first = labeled[0][1]
        x, n = np.arange(len(labels)), len(labels)
        series = [("float", _per_class(first["reference_top1"], first["labels"], n))]
        series += [(e.name, _per_class(outputs["artifact_top1"], outputs["labels"], n)) for e, outputs in labeled]
        for i, (name, values) in enumerate(series):
            ax.bar(x + i * width, values, width, label=name)
        ax.set_xticks(x + 0.4 - width / 2, labels, fontsize=7, rotation=90 if n > 20 else 0)
        ax.set_ylabel("accuracy %")
        ax.set_ylim(max(0.0, min(min(values) for _, values in series) - 5), 100.5)
        ax.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        plots["per_class"] = _png(fig)
    timed = [e for e in entries if e.latency_ms is not None]
    if timed:
        fig, ax = plt.subplots(figsize=(6, 0.4 * len(timed) + 1.2))
        ax.barh([e.name for e in timed], [e.latency_ms or 0.0 for e in timed])
        ax.set_xlabel("median latency, batch 1 (ms)")
        fig.tight_layout()
        plots["latency"] = _png(fig)
    return plots


def _per_class(predicted: np.ndarray, labels: np.ndarray, count: int) -> list[float]:
    return [float((predicted[labels == c] == c).mean() * 100) if (labels == c).any() else 0.0 for c in range(count)]


def _flips(e: Entry) -> list[dict[str, str]]:
    if e.outputs is None:
        return []
    ref, art, files = e.outputs["reference_top1"], e.outputs["artifact_top1"], e.outputs["files"]
    labels = e.outputs["labels"]
    names = e.manifest.labels
    flips = []
    for i in np.flatnonzero(ref != art)[:MAX_FLIPS]:
        truth = names[int(labels[i])] if len(labels) else "?"
        flips.append(
            {"file": str(files[i]), "float": names[int(ref[i])], "artifact": names[int(art[i])], "truth": truth}
        )
    return flips


def _thumbnail(path: str) -> str:
    from PIL import Image

    try:
        with Image.open(path) as opened:
            thumbnail = opened.convert("RGB")
        thumbnail.thumbnail((96, 96))
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="PNG")
    except OSError:
        return ""
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;font-size:.9rem}
th{background:#f3f3f3}.PASS{color:#0a7a2f;font-weight:bold}.FAIL,.MODIFIED{color:#b00020;font-weight:bold}
.flips{display:flex;flex-wrap:wrap;gap:.8rem}.flip{font-size:.75rem;text-align:center;width:110px}
img.plot{max-width:100%;border:1px solid #eee}
"""

CHECK_IMAGES = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  document.body.setAttribute('data-images', String(images.length));
  document.body.setAttribute('data-broken-images', String(broken.length));
});
"""


def _html(entries: list[Entry], rows: list[dict[str, str]], tables: list[Table]) -> str:
    plots = _plots(entries)
    esc = html.escape
    source = entries[0].manifest.source
    head = list(rows[0])
    table = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
    for row in rows:
        table += '<tr class="artifact-row">' + "".join(
            f'<td class="{esc(v) if k == "verdict" else ""}">{esc(v)}</td>' for k, v in row.items()
        ) + "</tr>"  # fmt: skip
    sections = [f"<h2>Artifacts</h2><table>{table}</table>"]
    titles = {"scatter": "Artifact vs float logits", "per_class": "Per-class accuracy", "latency": "Latency"}
    for key, title in titles.items():
        if key in plots:
            sections.append(f'<h2>{title}</h2><img class="plot" id="plot-{key}" alt="{title}" src="{plots[key]}">')
    for t in tables:
        cells = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in t.header) + "</tr>"
        cells += "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row) + "</tr>" for row in t.rows)
        sections.append(f"<h2>{esc(t.title)}</h2><p>{esc(t.note)}</p><table>{cells}</table>")
    sections += _diagnosis_html([e for e in entries if e.diagnosis is not None])
    flips_html = ""
    for e in entries:
        flips = _flips(e)
        if flips:
            cells = "".join(
                f'<div class="flip"><img alt="{esc(Path(f["file"]).name)}" src="{_thumbnail(f["file"])}"><br>'
                f"float: {esc(f['float'])}<br>artifact: {esc(f['artifact'])}<br>truth: {esc(f['truth'])}</div>"
                for f in flips
            )
            flips_html += f"<h3>{esc(e.name)}</h3><div class='flips'>{cells}</div>"
    sections.append(
        "<h2>Images where the prediction flipped</h2>" + (flips_html or "<p>None: every artifact agrees.</p>")
    )
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{REPORT_TITLE}</title>"
        f"<meta name='generator' content='bitedge {__version__}'><style>{CSS}</style></head>"
        f"<body><h1>{REPORT_TITLE}</h1>"
        f"<p>Model: {esc(source.path)} ({esc(source.format)}, sha256 "
        f"{esc(str(source.sha256))}). Built {created} by bitedge {__version__}.</p>"
        + "".join(sections)
        + f"<script>{CHECK_IMAGES}</script></body></html>"
    )


def _diagnosis_html(entries: list[Entry]) -> list[str]:
    """Where each diagnosed artifact diverges: its verdict and its SNR-along-depth plot."""
    from bitedge.diagnose.write import plot, verdict_lines

    if not entries:
        return []
    parts = ["<h2>Where each artifact diverges (bitedge diagnose)</h2>"]
    for e in entries:
        data = e.diagnosis or {}
        try:
            lines, image = verdict_lines(data), base64.b64encode(plot(data)).decode()
        except (KeyError, TypeError, ValueError, StopIteration) as exc:
            raise BadInputError(f"{e.directory}/diagnose.json: malformed ({exc}); run bitedge diagnose again") from None
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        parts.append(f"<h3>{html.escape(e.name)}</h3><ul>{items}</ul><img class='plot' alt='diagnosis of "
                     f"{html.escape(e.name)}' src='data:image/png;base64,{image}'>")  # fmt: skip
    return parts


def _markdown(entries: list[Entry], rows: list[dict[str, str]], tables: list[Table]) -> str:
    head = list(rows[0])
    lines = [f"# {REPORT_TITLE}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row.values()) + " |" for row in rows]
    for t in tables:
        lines += ["", *t.markdown()]
    diagnosed = [e for e in entries if e.diagnosis is not None]
    if diagnosed:
        from bitedge.diagnose.write import verdict_lines

        lines += ["", "## Where each artifact diverges (bitedge diagnose)"]
        for e in diagnosed:
            lines += ["", f"{e.name}:", *(f"- {line}" for line in verdict_lines(e.diagnosis or {}))]
    for e in entries:
        flips = _flips(e)
        if flips:
            lines += ["", f"Flipped predictions, {e.name}:"]
            lines += [f"- {f['file']}: float {f['float']}, artifact {f['artifact']}, truth {f['truth']}" for f in flips]
    return "\n".join(lines) + "\n"
