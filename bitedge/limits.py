"""Sane bounds on sizes, each with its reason: past them a run would exhaust memory or time, not help.

Checked where a size enters (command-line arguments, a checkpoint's preprocessing), before any work.
"""

from __future__ import annotations

from bitedge.errors import BadInputError

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 2048
IMAGE_SIZE_REASON = (
    "BiT downsamples 32x, and at 2048 px one image's activations already take several GB "
    "(BiT checkpoints are trained at 128-480 px)"
)
MAX_BATCH = 1024  # a fixed batch dimension; past it one call's activations no longer fit a machine
MAX_THREADS = 1024
MAX_CALIBRATION_SIZE = 1_000_000  # a seeded sample; thousands already saturate every range method
MAX_SEARCH_IMAGES = 1000  # int8 layer searches decode and score at most this many evaluation images
MAX_SEARCH_BYTES = 512 * 2**20  # and hold at most this much of their pixels (890 images at 224 px, 194 at 480)


def check_image_size(size: tuple[int, int], what: str) -> None:
    """Refuse an input size outside [MIN_IMAGE_SIZE, MAX_IMAGE_SIZE], naming where it came from."""
    if not all(MIN_IMAGE_SIZE <= side <= MAX_IMAGE_SIZE for side in size):
        raise BadInputError(
            f"{what}: input size {size[0]}x{size[1]} is outside {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px: "
            f"{IMAGE_SIZE_REASON}; choose an --image-size in that range"
        )


# (lowest, highest, why) of every size an option gives; the CLI's argument types read them too
BOUNDS = {
    "image_size": (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, IMAGE_SIZE_REASON),
    "batch": (1, MAX_BATCH, "one call's activations must fit in memory"),
    "threads": (1, MAX_THREADS, "more threads than that only add contention"),
    "calibration_size": (1, MAX_CALIBRATION_SIZE, "a seeded sample; more adds time, not accuracy"),
    "workers": (1, 256, "one shard per worker; a verification has no use for more"),
    "ranking_images": (1, MAX_SEARCH_IMAGES, f"a layer search scores at most {MAX_SEARCH_IMAGES} evaluation images"),
    "images": (1, 10_000, "a diagnosis localizes a fault on tens of images; thousands add time, not insight"),
}


def check_positive(name: str, value: int | None) -> int | None:
    """``value`` (None: not given) if it is an integer within ``name``'s bounds; else a BadInputError saying why."""
    if value is None:
        return None
    low, high, reason = BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadInputError(f"{name} must be an integer in {low}..{high}, got {value!r}: {reason}")
    return value
