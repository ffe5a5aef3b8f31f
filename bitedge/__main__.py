"""``python -m bitedge`` is the ``bitedge`` command."""

from bitedge.cli import run

run()
