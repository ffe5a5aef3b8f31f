"""The report's two renderings from the same content: report.html (self-contained: inline CSS and images, no
network) and report.md."""

from __future__ import annotations

import base64
import html
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bitedge import __version__
from bitedge.artifacts.ownership import REPORT_TITLE
from bitedge.parity.gate import ARTIFACT_VS_SIMULATED
from bitedge.report import plots
from bitedge.report.entries import Entry
from bitedge.report.tables import ClassAccuracy, Table, per_class

MAX_FLIPS = 8
HEAT_POINTS = 10.0  # accuracy points lost against float at which a per-class cell is fully red
NOT_TIMED = (
    "Latency: not measured for this report. Time the artifacts on this machine with bitedge convert --bench, or "
    "bitedge bench ARTIFACT... --out DIR (DIR: this folder); on the device that will run them with bitedge bench "
    "--bundle BUNDLES ARTIFACT..., then bitedge bench --import results.json."
)
CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;font-size:.9rem}
th{background:#f3f3f3}.PASS{color:#0a7a2f;font-weight:bold}.FAIL,.MODIFIED{color:#b00020;font-weight:bold}
.note{color:#555;max-width:70rem}.heat td.v{text-align:right;font-variant-numeric:tabular-nums}
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


def artifact_row(e: Entry) -> dict[str, str]:
    p = e.manifest.parity or {}
    first = (e.parity.get("comparisons") or [{}])[0].get("metrics", {})
    size = sum((e.directory / f).stat().st_size for f in e.manifest.files if (e.directory / f).is_file())
    fidelity = (p.get("comparisons") or {}).get(ARTIFACT_VS_SIMULATED)
    accuracy = "-"
    if p.get("reference_accuracy") is not None:
        accuracy = f"{p['reference_accuracy']:.2f}% → {p['artifact_accuracy']:.2f}%"
    latency = e.host_latency_ms
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
        "latency here": f"{latency:.2f} ms" if latency is not None else "not timed",
        "verdict": e.verdict,
    }


def timing_rows(entries: list[Entry]) -> list[list[str]]:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    return [[e.name, t.where, t.runtime, t.runs, str(t.batch), ms(t.median_ms), ms(t.p90_ms), ms(t.trimmed_mean_ms),
             ms(t.first_ms), t.verdict] for e in entries for t in e.timings]  # fmt: skip


TIMING_HEADER = ["artifact", "where", "runtime", "runs", "batch", "median ms", "p90 ms", "trimmed mean ms",
                 "first ms", "device outputs"]  # fmt: skip


def flips(e: Entry) -> list[dict[str, str]]:
    if e.outputs is None:
        return []
    ref, art, files, labels = (e.outputs[k] for k in ("reference_top1", "artifact_top1", "files", "labels"))
    names = e.manifest.labels
    return [{"file": str(files[i]), "float": names[int(ref[i])], "artifact": names[int(art[i])],
             "truth": names[int(labels[i])] if len(labels) else "?"}
            for i in np.flatnonzero(ref != art)[:MAX_FLIPS]]  # fmt: skip


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


def _table(header: list[str], rows: list[list[str]], *, css: str = "") -> str:
    esc = html.escape
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr" + css + ">" + "".join(
        f'<td class="{esc(v)}">{esc(v)}</td>' if v in ("PASS", "FAIL", "MODIFIED") else f"<td>{esc(v)}</td>"
        for v in row) + "</tr>" for row in rows)  # fmt: skip
    return f"<table>{head}{body}</table>"


def _heat(classes: ClassAccuracy) -> str:
    """Per-class accuracy; each artifact's cell coloured by its change against float's (green: as good or better,
    red: worse, full red at ``HEAT_POINTS`` points lost)."""
    head = "<tr><th>class</th><th>images</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in classes.columns)
    body = ""
    for name, count, values in classes.rows:
        cells = f'<td class="v" style="background:#eee">{values[0]:.1f}</td>'
        for value in values[1:]:
            loss = min(1.0, max(0.0, (values[0] - value) / HEAT_POINTS))
            colour = f"hsl({120 * (1 - loss):.0f},65%,{82 - 12 * loss:.0f}%)"
            cells += f'<td class="v" style="background:{colour}">{value:.1f}</td>'
        body += f"<tr><td>{html.escape(name)}</td><td class='v'>{count}</td>{cells}</tr>"
    return f"<table class='heat' id='per-class'>{head}</tr>{body}</table>"


def render_html(entries: list[Entry], tables: list[Table]) -> str:
    esc = html.escape
    rows = [artifact_row(e) for e in entries]
    parts = ["<h2>Artifacts</h2>", _table(list(rows[0]), [list(r.values()) for r in rows],
                                          css=' class="artifact-row"')]  # fmt: skip
    timings = timing_rows(entries)
    if not timings:
        parts.append(f"<p class='note' id='latency-note'>{esc(NOT_TIMED)}</p>")
    spread = plots.error_distribution(entries)
    if spread:
        parts += ["<h2>How close each artifact is to float</h2>",
                  "<p class='note'>Per image, the SNR of the artifact's logits against the float model's (the first "
                  "1000 evaluation images): the box spans the middle half, the whiskers the rest, dots the outliers."
                  "</p>", f'<img class="plot" id="plot-error" alt="error distribution" src="{spread}">']  # fmt: skip
    if timings:
        parts += ["<h2>Latency</h2>", _table(TIMING_HEADER, timings)]
        chart = plots.latency(entries)
        if chart:
            parts.append(f'<img class="plot" id="plot-latency" alt="latency" src="{chart}">')
    classes = per_class(entries)
    if classes:
        parts += ["<h2>Per-class accuracy</h2>", f"<p class='note'>{esc(classes.note)}</p>", _heat(classes)]
    for t in tables:
        parts += [f"<h2>{esc(t.title)}</h2><p class='note'>{esc(t.note)}</p>",
                  _table(list(t.header), [list(r) for r in t.rows])]  # fmt: skip
    parts += _diagnoses_html([e for e in entries if e.diagnosis is not None])
    flipped = ""
    for e in entries:
        cells = "".join(f'<div class="flip"><img alt="{esc(Path(f["file"]).name)}" src="{_thumbnail(f["file"])}">'
                        f"<br>float: {esc(f['float'])}<br>artifact: {esc(f['artifact'])}<br>truth: {esc(f['truth'])}"
                        "</div>" for f in flips(e))  # fmt: skip
        flipped += f"<h3>{esc(e.name)}</h3><div class='flips'>{cells}</div>" if cells else ""
    parts.append("<h2>Images where the prediction flipped</h2>" + (flipped or "<p>None: every artifact agrees.</p>"))
    source = entries[0].manifest.source
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{REPORT_TITLE}</title>"
            f"<meta name='generator' content='bitedge {__version__}'><style>{CSS}</style></head>"
            f"<body><h1>{REPORT_TITLE}</h1><p>Model: {esc(source.path)} ({esc(source.format)}, sha256 "
            f"{esc(str(source.sha256))}). Built {created} by bitedge {__version__}.</p>"
            + "".join(parts) + f"<script>{CHECK_IMAGES}</script></body></html>")  # fmt: skip


def _diagnoses_html(entries: list[Entry]) -> list[str]:
    from bitedge.diagnose.write import verdict_lines

    if not entries:
        return []
    parts = ["<h2>Where each artifact diverges (bitedge diagnose)</h2>"]
    for e in entries:
        data: dict[str, Any] = e.diagnosis or {}
        items = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_lines(data))
        parts.append(f"<h3>{html.escape(e.name)}</h3><ul>{items}</ul><img class='plot' alt='diagnosis of "
                     f"{html.escape(e.name)}' src='{plots.diagnosis(data)}'>")  # fmt: skip
    return parts


def render_markdown(entries: list[Entry], tables: list[Table]) -> str:
    rows = [artifact_row(e) for e in entries]
    head = list(rows[0])
    lines = [f"# {REPORT_TITLE}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row.values()) + " |" for row in rows]
    timings = timing_rows(entries)
    if timings:
        lines += ["", "## Latency", "", "| " + " | ".join(TIMING_HEADER) + " |", "|" + "---|" * len(TIMING_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in timings]
    else:
        lines += ["", NOT_TIMED]
    classes = per_class(entries)
    if classes:
        lines += [
            "",
            "## Per-class accuracy",
            "",
            classes.note,
            "",
            "| class | images | " + " | ".join(classes.columns) + " |",
            "|" + "---|" * (len(classes.columns) + 2),
        ]
        lines += [f"| {name} | {count} | " + " | ".join(f"{v:.1f}" for v in values) + " |"
                  for name, count, values in classes.rows]  # fmt: skip
    for t in tables:
        lines += ["", *t.markdown()]
    diagnosed = [e for e in entries if e.diagnosis is not None]
    if diagnosed:
        from bitedge.diagnose.write import verdict_lines

        lines += ["", "## Where each artifact diverges (bitedge diagnose)"]
        for e in diagnosed:
            lines += ["", f"{e.name}:", *(f"- {line}" for line in verdict_lines(e.diagnosis or {}))]
    for e in entries:
        flipped = flips(e)
        if flipped:
            lines += ["", f"Flipped predictions, {e.name}:"]
            lines += [
                f"- {f['file']}: float {f['float']}, artifact {f['artifact']}, truth {f['truth']}" for f in flipped
            ]
    return "\n".join(lines) + "\n"
