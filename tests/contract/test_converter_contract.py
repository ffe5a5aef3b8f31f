"""The target contract (``bitedge.testing.contract``) over every registered target: the same tests a target's
own package runs with ``python -m bitedge.testing NAME``. Their parametrization marks the long conversions
``slow`` (the fast tier converts every target at its first precision, and onnx int8)."""

from __future__ import annotations

from bitedge.testing.contract import (  # noqa: F401 - collected here
    _own_cache,
    few_images,
    pytest_generate_tests,
    test_a_missing_runtime_is_skipped_with_the_install_command,
    test_converts_the_demo_and_passes_its_gate,
    test_every_precision_in_one_run_beside_a_built_in,
    test_registration_is_complete,
)
