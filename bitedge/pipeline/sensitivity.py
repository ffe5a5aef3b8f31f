"""``bitedge sensitivity``: which layers int8 hurts, ranked, written as sensitivity.json, .md and .png.

Load, fold, calibrate (or reuse a table), decode the evaluation images once (``int8.search_set``), then
score every quantizable layer quantized alone in each placement the chosen targets use
(``calibration/sensitivity.py``). ``bitedge report`` shows the ranking when it sits in the report's root.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitedge.calibration.placement import Placement
from bitedge.calibration.sensitivity import LayerSensitivity, rank_layers, worst_samples
from bitedge.calibration.simulate import simulate
from bitedge.converters import get_converter
from bitedge.cpu import AUTO, Cpu, CpuTarget, parse_cpu
from bitedge.errors import BadInputError
from bitedge.fileio import write_atomic, write_json_atomic
from bitedge.parity.metrics import Metrics
from bitedge.pipeline.options import CalibrationOptions

JSON, MARKDOWN, PLOT = "sensitivity.json", "sensitivity.md", "sensitivity.png"
KIND = "bitedge sensitivity"  # marks the JSON as ours: only such a file is replaced with --overwrite


@dataclass(frozen=True)
class SensitivityRequest:
    model: str
    out: Path
    eval_images: Path
    calibration: CalibrationOptions
    targets: tuple[str, ...]  # whose int8 placements to score
    ranking_images: int | None = None  # score on the N samples int8 gets most wrong; None: every search image
    image_size: int | None = None
    raw_pixel_input: bool = False
    seed: int = 0
    overwrite: bool = False
    cpu: CpuTarget = field(default_factory=lambda: parse_cpu(AUTO))  # the CPU x86 placements are made for


@dataclass(frozen=True)
class Sensitivity:
    model: str
    images: int  # the samples each layer was scored on
    quantized: dict[str, Metrics]  # every layer quantized, per placement (by name)
    ranking: list[LayerSensitivity]  # most harmful first

    @property
    def placements(self) -> list[str]:
        return list(self.quantized)

    def to_dict(self) -> dict[str, Any]:
        full = {name: {"top1_agreement": m.top1_agreement, "cosine": m.cosine_mean, "snr_db": m.snr_db}
                for name, m in self.quantized.items()}  # fmt: skip
        return {"kind": KIND, "model": self.model, "placements": self.placements, "images": self.images,
                "all_quantized": full, "ranking": [s.to_dict() for s in self.ranking]}  # fmt: skip


def check_destination(out: Path, *, overwrite: bool) -> None:
    """Refuse, before any work, an ``out`` that is a file or holds results this run would replace unasked, or
    files of those names that are not bitedge's."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: is a file; --out names a directory for {JSON}, {MARKDOWN} and {PLOT}")
    present = [name for name in (JSON, MARKDOWN, PLOT) if (out / name).exists()]
    if present and not overwrite:
        raise BadInputError(f"{out}: already holds {', '.join(present)}; pass --overwrite to replace them")
    if present:
        try:
            ours = json.loads((out / JSON).read_text(encoding="utf-8")).get("kind") == KIND
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise BadInputError(f"{out}: holds {', '.join(present)} that bitedge did not write; they are left "
                                "untouched: choose another --out")  # fmt: skip


def placements_of(targets: tuple[str, ...], cpu: Cpu) -> list[Placement]:
    """The distinct int8 placements of ``targets`` (those offering int8), for ``cpu``."""
    from bitedge.precisions import Precision

    chosen = [get_converter(t) for t in targets]
    return list(dict.fromkeys(c.int8_placement(cpu) for c in chosen if Precision.INT8 in c.precisions))


def run(request: SensitivityRequest, *, log: Callable[[str], None] = lambda _: None) -> Sensitivity:
    """Rank the layers of ``request.model`` by what quantizing each alone costs; nothing written."""
    from bitedge.fold import fold
    from bitedge.model.image_processor import resolve_processor
    from bitedge.model.loading import load_model
    from bitedge.parity.images import scan_images
    from bitedge.pipeline.int8 import calibration_table, progress_bar, search_set

    placements = placements_of(request.targets, request.cpu.cpu)
    if not placements:
        raise BadInputError(f"none of {', '.join(request.targets)} builds int8: name a target that does")
    model = load_model(request.model, seed=request.seed)
    images = scan_images(request.eval_images, model.config.labels)
    processor = resolve_processor(model.image_processor, request.image_size)
    raw = request.raw_pixel_input
    deploy = fold(model, raw_pixel_input=raw, processor=processor)
    table = calibration_table(model, deploy, processor, request.calibration, raw_pixels=raw, log=log)
    log(f"decoding up to {len(images.files)} evaluation images and running the float model on them")
    search = search_set(deploy, images, processor, raw_pixels=raw)
    outputs = {p.name: search.outputs(simulate(deploy, table, p)) for p in placements}
    quantized = {name: search.compare(logits) for name, logits in outputs.items()}
    if request.ranking_images is not None:
        search = worst_samples(search, list(outputs.values()), request.ranking_images)
    log(f"scoring {len(table.layers)} layers, each quantized alone, in {', '.join(quantized)} on {len(search)} images")

    ranking = rank_layers(deploy, table, placements, search, progress=progress_bar("sensitivity"))
    return Sensitivity(request.model, len(search), quantized, ranking)


def write(result: Sensitivity, out: Path) -> list[Path]:
    """sensitivity.json, .md and .png in ``out`` (created if missing)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(
            f"{out}: cannot create the output directory ({exc.strerror}); choose another --out"
        ) from None
    write_json_atomic(out / JSON, result.to_dict())
    write_atomic(out / MARKDOWN, "\n".join(markdown(result.to_dict())) + "\n")
    _plot(result, out / PLOT)
    return [out / JSON, out / MARKDOWN, out / PLOT]


def markdown(data: dict[str, Any], limit: int | None = None) -> list[str]:
    """The ranking as Markdown (from the JSON, as the report renders a stored one)."""
    from bitedge.report.tables import sensitivity_table

    quantized = "; ".join(f"{name} top-1 {m['top1_agreement']:.2%}, cosine {m['cosine']:.6f}, SNR {m['snr_db']:.1f} dB"
                          for name, m in data["all_quantized"].items())  # fmt: skip
    table = sensitivity_table(data, len(data["ranking"]) if limit is None else limit)
    return [
        f"# Layer sensitivity: {data['model']}",
        "",
        f"All layers quantized: {quantized}.",
        "",
        *table.markdown()[2:],
    ]


def _plot(result: Sensitivity, path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = [s.layer for s in result.ranking]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.18 * len(layers) + 1)))
    for name in result.placements:
        ax.barh(range(len(layers)), [s.metrics[name].snr_db for s in result.ranking], alpha=0.6, label=name)
    ax.set_yticks(range(len(layers)), layers, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("SNR of the logits, dB (that layer alone quantized; lower = more harmful)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())
