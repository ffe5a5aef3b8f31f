"""``python -m bitedge.testing [TARGET...] [-- PYTEST_ARGS...]``: run the target contract on the targets named
(default: every registered one) and exit with pytest's code."""

from __future__ import annotations

import os
import sys

from bitedge.testing import TARGETS_VARIABLE


def main(argv: list[str]) -> int:
    import pytest

    cut = argv.index("--") if "--" in argv else len(argv)
    targets, extra = argv[:cut], argv[cut + 1 :]
    if targets:
        os.environ[TARGETS_VARIABLE] = ",".join(targets)
    return int(pytest.main(["-p", "no:cacheprovider", "--pyargs", "bitedge.testing.contract", *extra]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
