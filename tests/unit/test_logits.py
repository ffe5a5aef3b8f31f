"""Logits on disk and the gate's chunked comparisons (issue 21): the same numbers as comparing in memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bitedge.parity.gate import (
    ARTIFACT_VS_FLOAT,
    ARTIFACT_VS_SIMULATED,
    SIMULATED_VS_FLOAT,
    Evidence,
    Outputs,
    gather,
)
from bitedge.parity.logits import CHUNK_ROWS, LogitStore
from bitedge.parity.metrics import compare

ROWS, CLASSES = 2 * CHUNK_ROWS + 37, 1000  # more than two chunks of an ImageNet-sized label set


def _logits(seed: int, noise: float = 0.0) -> np.ndarray:
    base = np.random.default_rng(0).normal(size=(ROWS, CLASSES)).astype(np.float32)
    return base + np.random.default_rng(seed).normal(scale=noise, size=base.shape).astype(np.float32)


def test_a_store_gives_back_what_was_appended_in_any_row_range(tmp_path: Path) -> None:
    logits = _logits(0)
    store = LogitStore.temporary()
    for start in range(0, ROWS, 16):
        store.append(logits[start : start + 16])
    assert len(store) == ROWS and store.classes == CLASSES
    np.testing.assert_array_equal(np.concatenate(list(store.chunks())), logits)
    np.testing.assert_array_equal(store.read(250, 300), logits[250:300])
    np.testing.assert_array_equal(store.head(ROWS + 10), logits)
    with pytest.raises(ValueError, match="shape"):
        store.append(np.zeros((2, CLASSES + 1), np.float32))
    with (tmp_path / "logits.f32").open("wb") as file:
        store.copy_to(file)
    np.testing.assert_array_equal(LogitStore.open(tmp_path / "logits.f32", CLASSES).to_array(), logits)
    (tmp_path / "short.f32").write_bytes((tmp_path / "logits.f32").read_bytes()[:-4])
    with pytest.raises(ValueError, match="not rows of 1000"):
        LogitStore.open(tmp_path / "short.f32", CLASSES)


FILES = [Path(f"{i:04d}.png") for i in range(ROWS)]


def _outputs(logits: np.ndarray, labels: np.ndarray, rows: slice = slice(None)) -> Outputs:
    return Outputs(LogitStore.of(logits[rows]), labels[rows], FILES[rows], [])


def test_chunked_comparisons_equal_comparing_the_whole_arrays() -> None:
    reference, simulated, artifact = _logits(0), _logits(1, 0.3), _logits(2, 0.35)
    labels = reference.argmax(1) % 7
    evidence = gather(_outputs(reference, labels), _outputs(artifact, labels), simulated=_outputs(simulated, labels))
    assert list(evidence.comparisons) == [ARTIFACT_VS_FLOAT, ARTIFACT_VS_SIMULATED, SIMULATED_VS_FLOAT]
    in_memory = {
        ARTIFACT_VS_FLOAT: compare(reference, artifact, labels),
        ARTIFACT_VS_SIMULATED: compare(simulated, artifact),
        SIMULATED_VS_FLOAT: compare(reference, simulated, labels),
    }
    for name, per_image in evidence.comparisons.items():
        got = per_image.metrics(None if name == ARTIFACT_VS_SIMULATED else labels)
        assert got.samples == ROWS
        for field, expected in vars(in_memory[name]).items():
            assert getattr(got, field) == pytest.approx(expected, rel=1e-12), (name, field)
    assert 0.5 < in_memory[ARTIFACT_VS_FLOAT].top1_agreement < 1  # the noise flips some images, not all
    np.testing.assert_array_equal(evidence.heads["artifact"], artifact[:1000])


def test_evidence_of_consecutive_slices_joins_into_the_whole_sets() -> None:
    reference, artifact = _logits(0), _logits(2, 0.35)
    labels = reference.argmax(1) % 7
    whole = gather(_outputs(reference, labels), _outputs(artifact, labels))
    cut = 300  # not a chunk boundary
    parts = [
        gather(_outputs(reference, labels, s), _outputs(artifact, labels, s)) for s in (slice(cut), slice(cut, None))
    ]
    joined = Evidence.join(parts)
    assert joined.files == whole.files
    assert joined.comparisons[ARTIFACT_VS_FLOAT].metrics(labels) == whole.comparisons[ARTIFACT_VS_FLOAT].metrics(labels)
    np.testing.assert_array_equal(joined.heads["reference"], whole.heads["reference"])


def test_a_full_temporary_folder_is_named_with_the_way_out() -> None:
    """A file-size limit (what a full disk gives a writer) while a pass keeps its logits."""
    code = (
        "import resource, signal, tempfile, numpy as np\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "from bitedge.parity.logits import LogitStore\n"
        "store = LogitStore.temporary()\n"
        "try:\n"
        "    store.append(np.zeros((16, 1000), np.float32))\n"
        "except OSError as exc:\n"
        "    print(exc.filename == tempfile.gettempdir(), exc.strerror)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("True File too large while keeping the evaluation's logits"), result.stdout
    assert "set TMPDIR to a folder with room" in result.stdout
