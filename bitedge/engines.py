"""Verification engines (``verify --engine``), parsed once here from the command line and the library API."""

from __future__ import annotations

from enum import StrEnum

from bitedge.errors import BadInputError


class Engine(StrEnum):
    LOCAL = "local"  # this process (or shards you start yourself)
    RAY = "ray"  # shards as Ray Data actors, on a local Ray or the cluster RAY_ADDRESS names


def parse_engine(text: str) -> Engine:
    try:
        return Engine(text.lower())
    except ValueError:
        raise BadInputError(f"--engine {text}: expected one of {', '.join(e.value for e in Engine)}") from None
