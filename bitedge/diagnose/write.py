"""A diagnosis on disk: ``diagnose.json`` (every number), ``diagnose.md`` (the verdict and the per-layer table)
and ``diagnose.png`` (SNR along the network's depth, one line per comparison, each limit dashed).

Written into the artifact's directory by default, as bitedge's own records (``artifacts/ownership``), so
``bitedge report`` finds them; any other ``--out`` gets the same three files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from bitedge import __version__
from bitedge.artifacts.ownership import DIAGNOSE_FILES, DIAGNOSE_TITLE, GENERATOR, check_own_file
from bitedge.diagnose.compare import (
    ARTIFACT_VS_FLOAT,
    ARTIFACT_VS_SIMULATED,
    CLIFF_DB,
    SIMULATED_VS_FLOAT,
    FallOff,
)
from bitedge.diagnose.run import Diagnosis
from bitedge.errors import BadInputError
from bitedge.fileio import write_atomic, write_json_atomic

COMPARISONS = (ARTIFACT_VS_SIMULATED, SIMULATED_VS_FLOAT, ARTIFACT_VS_FLOAT)
WHAT = {"conversion": "conversion / runtime", "quantization": "quantization (int8 itself)"}


def check_out(out: Path) -> None:
    """Before any work: ``out`` is a directory (or can be one) whose diagnose files, if any, are bitedge's."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a directory; give --out a directory for the diagnosis")
    if not out.exists() and not out.parent.is_dir():
        raise BadInputError(f"{out.parent}: no such directory for --out")
    for name in DIAGNOSE_FILES:
        check_own_file(out / name)


def write(diagnosis: Diagnosis, out: Path) -> list[Path]:
    check_out(out)
    out.mkdir(exist_ok=True)
    data = diagnosis.to_dict()
    json_path, md_path, png_path = (out / name for name in DIAGNOSE_FILES)
    write_json_atomic(json_path, data)
    write_atomic(md_path, "\n".join(markdown(data)) + "\n")
    write_atomic(png_path, plot(data))
    return [json_path, md_path, png_path]


def verdict_lines(data: dict[str, Any]) -> list[str]:
    """One line per comparison: where it falls off, or that it does not."""
    lines = []
    for key, fall in data["fall_offs"].items():
        what = WHAT.get(key, key)
        if fall["layer"] is None:
            lines.append(f"{what}: no layer falls below {fall['limit_db']:g} dB ({fall['comparison']})")
        else:
            after = f", right after {fall['previous']}" if fall["previous"] else " (the first layer tapped)"
            line = (f"{what}: first falls off at {fall['layer']}{after}: {fall['comparison']} SNR "
                    f"{_db(fall['snr_db'])} < {fall['limit_db']:g} dB")  # fmt: skip
            drop, steepest = fall.get("steepest_drop_db", 0.0), fall.get("steepest")
            if steepest is not None and drop >= CLIFF_DB:
                line += f"; the steepest drop, {drop:.1f} dB, is at {steepest}"
            elif steepest is not None:
                line += (f"; no layer stands out (the steepest drop is {drop:.1f} dB, at {steepest}): the difference "
                         "grows layer by layer")  # fmt: skip
            lines.append(line)
    return lines


def markdown(data: dict[str, Any]) -> list[str]:
    lines = [f"# {DIAGNOSE_TITLE}: {data['target']} {data['precision']}", "",
             f"{data['artifact']}, tapped in its runtime on {data['images']} images.", ""]  # fmt: skip
    lines += [f"- {line}" for line in verdict_lines(data)]
    if data["untapped"]:
        lines.append(f"- not observable in this runtime (fused away): {', '.join(data['untapped'])}")
    lines += [f"- note: {note}" for note in data["notes"]]
    shown = [c for c in COMPARISONS if any(c in layer for layer in data["layers"])]
    lines += ["", "| layer | kind | " + " | ".join(f"SNR {c} (dB)" for c in shown)
              + f" | cosine, {shown[0]} | max abs diff, {shown[0]} |", "|" + "---|" * (len(shown) + 4)]  # fmt: skip
    for layer in data["layers"]:
        first = next((layer[c] for c in shown if c in layer), None)
        cosine = f"{first['cosine']:.6f}" if first and first["cosine"] is not None else "-"
        biggest = f"{first['max_abs_diff']:.3g}" if first else "-"
        cells = [_db(layer[c]["snr_db"]) if c in layer else "-" for c in shown]
        lines.append(f"| {layer['name']} | {layer['kind']} | " + " | ".join(cells) + f" | {cosine} | {biggest} |")
    return lines


def plot(data: dict[str, Any]) -> bytes:
    """SNR (dB) of each comparison along the layers, in graph order; limits dashed, fall-offs marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = data["layers"]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.16 * len(layers) + 3), 3.8))
    colors = {ARTIFACT_VS_SIMULATED: "#d62728", SIMULATED_VS_FLOAT: "#1f77b4", ARTIFACT_VS_FLOAT: "#2ca02c"}
    ceiling = 150.0
    for comparison in COMPARISONS:
        points = [(i, min(ceiling, layer[comparison]["snr_db"] if layer[comparison]["snr_db"] is not None else 0))
                  for i, layer in enumerate(layers) if comparison in layer]  # fmt: skip
        if points:
            dashed = comparison == ARTIFACT_VS_FLOAT and len(data["fall_offs"]) > 1  # often on top of another line
            ax.plot(*zip(*points, strict=True), marker=".", color=colors[comparison], label=comparison,
                    linestyle="--" if dashed else "-", linewidth=1 if dashed else 1.5)  # fmt: skip
    for key, fall in data["fall_offs"].items():
        color = colors.get(fall["comparison"], "gray")
        ax.axhline(fall["limit_db"], color=color, linestyle="--", linewidth=0.8)
        if fall["layer"] is not None:
            index = next(i for i, layer in enumerate(layers) if layer["name"] == fall["layer"])
            ax.axvline(index, color=color, linestyle=":", linewidth=1)
            ax.annotate(f"{WHAT.get(key, key)}: {fall['layer']}", (index, fall["limit_db"]), fontsize=7,
                        color=color, rotation=90, va="bottom", ha="right")  # fmt: skip
    units = [(i, layer["name"]) for i, layer in enumerate(layers) if layer["kind"] in ("unit", "stem", "head")]
    ax.set_xticks([i for i, _ in units], [_short(name) for _, name in units], rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("SNR (dB), higher is closer")
    ax.set_title(f"{data['target']} {data['precision']}: where the artifact diverges", fontsize=10)
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]), top=ceiling + 10)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": f"{GENERATOR} {__version__}"})
    plt.close(fig)
    return buffer.getvalue()


def _short(name: str) -> str:
    """``bit.encoder.stages.2.layers.5`` -> ``s2.u5``: tick labels that fit."""
    return name.replace("bit.encoder.stages.", "s").replace(".layers.", ".u").replace("bit.embedder", "stem")


def _db(value: float | None) -> str:
    if value is None:
        return "-"
    return "exact" if value >= 999 else f"{value:.1f}"


def describe(fall: FallOff) -> str:
    """A fall-off in one line (the command line's summary)."""
    if fall.layer is None:
        return f"{fall.comparison}: no layer below {fall.limit_db:g} dB"
    return f"{fall.comparison}: first below {fall.limit_db:g} dB at {fall.layer} ({_db(fall.snr_db)} dB)"
