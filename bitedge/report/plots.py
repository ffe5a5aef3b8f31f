"""The report's plots, as inline PNG data: how far each artifact's logits are from float (one distribution per
artifact), latency on this machine and on devices, and each diagnosis' SNR along depth."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from bitedge.report.entries import Entry

EXACT_DB = 150.0  # an image whose logits are bit-identical to float's is drawn here


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    _pyplot().close(fig)
    return _data_uri(buffer.getvalue())


def per_image_snr(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """SNR (dB) of each stored image's artifact logits against float's (bit-identical: ``EXACT_DB``)."""
    reference, artifact = outputs["reference"].astype(np.float64), outputs["artifact"].astype(np.float64)
    signal, noise = (reference**2).sum(axis=1), ((artifact - reference) ** 2).sum(axis=1)
    with np.errstate(divide="ignore"):
        snr = 10 * np.log10(signal / np.where(noise > 0, noise, 1.0))
    return np.where(noise > 0, np.minimum(snr, EXACT_DB), EXACT_DB)


def error_distribution(entries: list[Entry]) -> str | None:
    """One horizontal box per artifact: the per-image SNR of its logits against float's."""
    shown = [
        (e.name, per_image_snr(e.outputs)) for e in entries if e.outputs is not None and len(e.outputs["artifact"])
    ]
    if not shown:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(shown) + 1.4))
    ax.boxplot([snr for _, snr in shown], orientation="horizontal", showfliers=True, widths=0.6,
               flierprops={"markersize": 2, "alpha": 0.5})  # fmt: skip
    ax.set_yticks(range(1, len(shown) + 1), [name for name, _ in shown], fontsize=9)
    for i, (_, snr) in enumerate(shown, start=1):
        median = float(np.median(snr))
        ax.annotate("exact" if median >= EXACT_DB else f"{median:.0f} dB", (median, i), xytext=(4, 6),
                    textcoords="offset points", fontsize=8)  # fmt: skip
    ax.invert_yaxis()
    ax.set_xlabel(f"per-image SNR of the logits against float (dB; higher is closer, {EXACT_DB:.0f} = identical)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def latency(entries: list[Entry]) -> str | None:
    """Median latency of every row (this machine's and the devices'), one bar each."""
    rows = [(f"{e.name} [{t.runs}] — {t.where} (batch {t.batch})", t.median_ms or t.trimmed_mean_ms) for e in entries
            for t in e.timings if (t.median_ms or t.trimmed_mean_ms)]  # fmt: skip
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.34 * len(rows) + 1.2))
    colors = ["#1f77b4" if "host" in label else "#ff7f0e" for label, _ in rows]
    ax.barh([label for label, _ in rows], [value for _, value in rows], color=colors)
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("median latency (ms); blue: this machine, orange: devices")
    fig.tight_layout()
    return _png(fig)


def diagnosis(data: dict[str, Any]) -> str:
    from bitedge.diagnose.write import plot

    return _data_uri(plot(data))
