"""What converting or verifying one artifact gives back: where it is, its manifest, its parity report; or,
when its target failed to build it, why."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitedge.artifacts.manifest import Manifest
from bitedge.parity.metrics import ParityReport
from bitedge.precisions import Precision


@dataclass(frozen=True)
class Result:
    directory: Path  # where the artifact was published (``<out>.failed`` beside a passing one it did not replace)
    manifest: Manifest
    report: ParityReport
    warnings: tuple[str, ...] = ()  # e.g. a verdict that could not be written into a read-only artifact

    @property
    def passed(self) -> bool:
        """Whether the artifact met every gated parity budget in its runtime."""
        return self.report.passed


@dataclass(frozen=True)
class Failure:
    """An artifact that was not built: its target's own code failed (nothing of it was published)."""

    target: str
    precision: Precision
    directory: Path  # where it would have gone
    reason: str  # names the target and what failed

    @property
    def passed(self) -> bool:
        return False
