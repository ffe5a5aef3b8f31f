"""What converting or verifying one artifact gives back: where it is, its manifest, its parity report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bitedge.artifacts.manifest import Manifest
from bitedge.parity.metrics import ParityReport


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
