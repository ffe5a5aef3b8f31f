"""``python -m bitedge`` is the ``bitedge`` command."""

import sys

from bitedge.cli import main

sys.exit(main())
