"""An ExecuTorch older than the APIs the target uses is reported as missing, with the install command."""

from __future__ import annotations

import importlib.metadata

import pytest

from bitedge.converters import get_converter
from bitedge.errors import MissingRuntimeError


def test_an_old_executorch_is_refused_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("executorch.runtime", reason="install bitedge[executorch]")
    converter = get_converter("executorch")
    converter.check_runtime()  # the installed one is fine
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.4.2" if name == "executorch" else real(name))
    with pytest.raises(MissingRuntimeError, match=r"executorch >= 1\.5 \(found 1\.4\.2\).*bitedge\[executorch\]"):
        converter.check_runtime()
