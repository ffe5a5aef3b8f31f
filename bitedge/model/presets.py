"""The released BiT architectures, by name, with their preprocessing.

Names: ``bit-s-r50x1`` (BiT-S, trained on ILSVRC-2012, 1000-way head), ``bit-m-r50x1`` (BiT-M, ImageNet-21k
upstream, 21843-way head) and ``bit-m-r50x1-ilsvrc2012`` (BiT-M fine-tuned on ILSVRC-2012, 1000-way head, at
448 px, 480 px for R152x4), for R50x1, R50x3, R101x1, R101x3, R152x2 and R152x4.

The width factor multiplies the stem, every stage, the final norm and the head input; sizes are written out
explicitly (``width_factor`` stays 1), so the config also loads in transformers. A preset carries an
architecture, not trained weights: it is initialised from a seed and is for inspection, benchmarks and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from bitedge.model.config import BitConfig
from bitedge.model.image_processor import BitImageProcessor

DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
ARCHITECTURES = [(50, 1), (50, 3), (101, 1), (101, 3), (152, 2), (152, 4)]
VARIANTS = [  # (family, name suffix, title, head size, fine-tuned at high resolution)
    ("bit-s", "", "BiT-S", 1000, False),
    ("bit-m", "", "BiT-M", 21843, False),
    ("bit-m", "-ilsvrc2012", "BiT-M fine-tuned on ILSVRC-2012", 1000, True),
]


@dataclass(frozen=True)
class Preset:
    """One released architecture: how to build it and how it expects its images."""

    name: str
    description: str
    depth: int
    width: int
    num_labels: int
    resolution: int

    def config(self) -> BitConfig:
        w = self.width
        return BitConfig(
            embedding_size=64 * w,
            hidden_sizes=[256 * w, 512 * w, 1024 * w, 2048 * w],
            depths=list(DEPTHS[self.depth]),
            num_labels=self.num_labels,
            architectures=["BitForImageClassification"],
        )

    def image_processor(self) -> BitImageProcessor:
        """BiT's evaluation preprocessing (google/bit-50 style): bilinear, mean = std = 0.5, no crop margin."""
        r = self.resolution
        return BitImageProcessor(
            size={"shortest_edge": r},
            resample=2,
            crop_size={"height": r, "width": r},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )


def _build() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for depth, width in ARCHITECTURES:
        for family, suffix, title, labels, fine_tuned in VARIANTS:
            name = f"{family}-r{depth}x{width}{suffix}"
            resolution = (480 if (depth, width) == (152, 4) else 448) if fine_tuned else 224
            presets[name] = Preset(name, f"{title} R{depth}x{width}", depth, width, labels, resolution)
    return presets


PRESETS: dict[str, Preset] = _build()
