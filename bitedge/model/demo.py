"""The demo: a small BiT trained on digits (benchmarks/train_demo_model.py), shipped in the package with a
calibration and a held-out evaluation split.

Those images belong to the demo model only. Any other model must bring its own (``--eval``, and
``--calibration`` for int8): a 64-px digit is no evidence about an ImageNet model, so bitedge never
substitutes them (``is_demo`` decides).
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL = "bitedge/demo"  # the name that loads it, wherever bitedge is installed
DEMO_DIR = Path(__file__).parents[1] / "demo"
DEMO_CALIBRATION, DEMO_EVAL = DEMO_DIR / "calibration", DEMO_DIR / "eval"


def is_demo(model: str | Path) -> bool:
    """Whether ``model`` names the bundled demo model (by name or by its directory)."""
    if str(model) == DEMO_MODEL:
        return True
    try:
        return Path(model).resolve() == DEMO_DIR.resolve()
    except OSError:
        return False
