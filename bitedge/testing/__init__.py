"""The target contract as tests a target's own package can run: ``python -m bitedge.testing TARGET``.

Every target, built-in or outside, must pass ``bitedge.testing.contract`` (docs/design.md, "Adding a target").
bitedge's own suite runs it over every registered target (``tests/contract/test_converter_contract.py``);
a package that ships a target runs it on its own once installed beside bitedge::

    pip install -e .                       # the package declaring the bitedge.converters entry point
    python -m bitedge.testing torchscript  # or: BITEDGE_CONTRACT_TARGETS=torchscript pytest --pyargs \
                                           #     bitedge.testing.contract

It needs pytest. Nothing is downloaded: it converts the bundled demo model and gates it on the demo's own
held-out digits.
"""

from __future__ import annotations

import shutil
from pathlib import Path

TARGETS_VARIABLE = "BITEDGE_CONTRACT_TARGETS"  # comma-separated target names; unset: every registered target


def demo_eval_subset(root: Path, per_class: int) -> Path:
    """The first ``per_class`` of the demo's held-out digits of each class, in class folders under ``root``."""
    from bitedge.model.demo import DEMO_EVAL

    for digit in sorted(DEMO_EVAL.iterdir()):
        (root / digit.name).mkdir(parents=True)
        for image in sorted(digit.iterdir())[:per_class]:
            shutil.copy(image, root / digit.name / image.name)
    return root
