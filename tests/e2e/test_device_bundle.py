"""Device bundles (issue 31): ``bitedge bench --bundle`` writes a folder that times an artifact without bitedge
or torch; its results (or a native tool's output) come back through ``--import``, re-gated against the float
model; ``--remote`` does it over ssh (a real sshd on 127.0.0.1, started here)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hostile_fixtures import digests, run

from bitedge.bench.device.native import detect, parse
from bitedge.bench.device.results import DEVICE_BENCH_FORMAT

NATIVE = Path(__file__).parents[1] / "data" / "native"
QUICK = ["--images", "4", "--runs", "3", "--duration", "0.05"]


@pytest.fixture
def bundle(artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code, out, _ = run(capsys, "bench", "--bundle", str(tmp_path / "bundles"), str(artifact), *QUICK)
    assert code == 0 and "bundle:" in out
    return tmp_path / "bundles" / artifact.name


def _run_bundle(bundle: Path, python: str = sys.executable, env: dict[str, str] | None = None) -> dict[str, object]:
    """The bundle's run.py as a device would run it: its own folder, a fresh process."""
    quick = ["--warmup-runs", "2", "--warmup-seconds", "0.01", "--min-runs", "3", "--min-seconds", "0.05"]
    done = subprocess.run([python, "run.py", *quick], cwd=bundle, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results: dict[str, object] = json.loads((bundle / "results.json").read_text())
    return results


def test_a_bundle_holds_what_a_device_needs_and_nothing_of_bitedge(bundle: Path) -> None:
    names = {p.name for p in bundle.iterdir()}
    assert {"bundle.json", "run.py", "README.md", "model.onnx", "inputs.npy", "input.bin", "reference.npy",
            "host.npy", "labels.npy"} == names  # fmt: skip
    record = json.loads((bundle / "bundle.json").read_text())
    assert record["runtime"] == "onnxruntime" and record["count"] == 4 and record["protocol"]["min_runs"] == 3
    assert np.load(bundle / "inputs.npy").shape == (4, 3, 64, 64)
    runner = (bundle / "run.py").read_text()
    assert "import bitedge" not in runner and "from bitedge" not in runner and "\nimport torch" not in runner


def test_results_come_back_re_gated_and_stored_beside_the_host_rows(
    bundle: Path, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = _run_bundle(bundle)
    assert results["format"] == "bitedge-device-results-1" and results["source"] == "run.py"
    latency = results["latency_ms"]
    assert isinstance(latency, dict) and {"median", "p90", "p99", "trimmed_mean", "min", "runs"} <= set(latency)
    assert {"load_seconds", "first_inference_ms", "peak_rss_mib", "device", "runtime"} <= set(results)
    code, out, _ = run(capsys, "bench", "--import", str(bundle / "results.json"))
    assert code == 0 and "outputs within budget on 4 images (top-1 agreement 100.00%)" in out
    stored = json.loads((artifact.parent / "device-bench.json").read_text())
    (row,) = stored["rows"]
    assert row["parity"]["passed"] and row["parity"]["vs_host"]["max_abs_diff"] < 1e-4
    code, _, _ = run(capsys, "report", str(artifact.parent))  # the report reads it (shown beside the host rows)
    report = (artifact.parent / "report.md").read_text()
    assert code == 0 and "## Latency" in report and "| device: " in report and "(run.py) | fp32 | 1 |" in report


def test_a_report_without_timings_says_how_to_measure_them(artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "report", str(artifact))[0] == 0
    page = (artifact / "report.html").read_text()
    assert "latency-note" in page and "bitedge bench --bundle" in page and "not timed" in page


def test_outputs_that_miss_the_budget_fail_the_import(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = _run_bundle(bundle)
    outputs = results["outputs"]
    assert isinstance(outputs, dict)
    logits = np.frombuffer(base64.b64decode(outputs["base64"]), "<f4").reshape(outputs["shape"])
    outputs["base64"] = base64.b64encode((-logits).astype("<f4").tobytes()).decode()  # a device computing nonsense
    (bundle / "results.json").write_text(json.dumps(results))
    code, out, _ = run(capsys, "bench", "--import", str(bundle / "results.json"))
    assert code == 1 and "outputs FAIL the budget: top-1 agreement" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json at all", "neither a bundle's results.json"),
        (
            json.dumps(
                {
                    "format": "bitedge-device-results-1",
                    "bundle": {"id": "0" * 16},
                    "latency_ms": {},
                    "outputs": {},
                    "device": {},
                    "runtime": {},
                }
            ),
            "results of another bundle",
        ),
        (
            json.dumps(
                {
                    "format": "bitedge-device-results-1",
                    "bundle": {},
                    "latency_ms": {"median": 1.0},
                    "outputs": {"shape": [4, 5], "base64": "!!"},
                    "device": {},
                    "runtime": {},
                }
            ),
            "its outputs do not decode",
        ),
    ],
    ids=["garbage", "other-bundle", "bad-outputs"],
)
def test_bad_results_are_refused_and_nothing_is_stored(
    bundle: Path, artifact: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    (bundle / "results.json").write_text(content)
    before = digests(artifact.parent)
    code, _, err = run(capsys, "bench", "--import", str(bundle / "results.json"))
    assert code == 2 and message in err and digests(artifact.parent) == before


def test_a_malformed_device_results_file_is_refused_and_kept(
    bundle: Path, artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_bundle(bundle)
    (artifact.parent / "device-bench.json").write_text(
        json.dumps({"format": DEVICE_BENCH_FORMAT, "rows": {"not": "a list"}})
    )
    before = digests(artifact.parent)
    code, _, err = run(capsys, "bench", "--import", str(bundle / "results.json"))
    assert code == 2 and "device-bench.json" in err and "import them again" in err
    assert digests(artifact.parent) == before


def test_bundle_refusals(artifact: Path, bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "bench", "--bundle", str(bundle.parent), str(artifact), *QUICK)
    assert code == 2 and "already exists (it may hold a device's results)" in err
    code, _, err = run(capsys, "bench", "--bundle", str(tmp_path / "b"), "bitedge/demo", *QUICK)
    assert code == 2 and "not a bitedge artifact" in err
    code, _, err = run(capsys, "bench", "--remote", "ssh://nobody@127.0.0.1", str(artifact))
    assert code == 2 and "--remote runs device bundles: add --bundle DIR" in err
    code, _, err = run(capsys, "bench", "--bundle", str(tmp_path / "c"), "--remote", "ftp://x", str(artifact), *QUICK)
    assert code == 2 and "expected ssh://[user@]host[:port]" in err


@pytest.mark.parametrize("name", ["benchmark_app.log", "benchmark_app_report.json", "trtexec.log", "minibench.json"])
def test_native_tools_outputs_are_read(name: str) -> None:
    text = (NATIVE / name).read_text()
    tool = detect(text)
    record = parse(tool or "", text, name)
    expected = {"benchmark_app.log": 0.75, "benchmark_app_report.json": 0.75, "trtexec.log": 2.388}
    if name in expected:
        assert record["latency_ms"]["median"] == expected[name]
    else:
        assert record["latency_ms"] == {"mean": 31.842, "trimmed_mean": 30.907} and record["load_seconds"] == 0.0842
    if name == "trtexec.log":
        assert record["gpu_compute_ms"]["median"] == 2.289 and record["runtime"]["version"] == "10.13.0"


def test_a_native_log_imports_as_a_latency_only_row(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(NATIVE / "trtexec.log", bundle / "trtexec.log")
    code, out, _ = run(capsys, "bench", "--import", str(bundle / "trtexec.log"))
    assert code == 0 and "median 2.39 ms" in out and "latency only" in out


@pytest.mark.slow
def test_the_bundle_runs_in_a_venv_holding_only_onnxruntime_and_numpy(bundle: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    constraints = Path(__file__).parents[2] / "constraints.txt"
    install = [python, "-m", "pip", "install", "--quiet", "-c", str(constraints), "numpy", "onnxruntime"]
    done = subprocess.run(install, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for module in ("bitedge", "torch"):  # from the bundle's folder, as run.py runs: neither is there
        assert subprocess.run([python, "-c", f"import {module}"], cwd=bundle, capture_output=True, env=env).returncode
    results = _run_bundle(bundle, python, env)
    outputs = results["outputs"]
    assert isinstance(outputs, dict)
    logits = np.frombuffer(base64.b64decode(outputs["base64"]), "<f4").reshape(outputs["shape"])
    np.testing.assert_allclose(logits, np.load(bundle / "host.npy"), atol=1e-5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """An OpenSSH server on 127.0.0.1 for this test, with a key of its own (skipped where sshd is missing)."""
    daemon = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(daemon).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH's server is not installed (apt-get install openssh-server; .ci/run installs it)")
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "client.pub").read_text())
    port, user = _free_port(), os.environ.get("USER") or "root"
    config = keys / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nAuthorizedKeysFile "
                      f"{keys / 'authorized_keys'}\nPasswordAuthentication no\nPermitRootLogin yes\nStrictModes no\n"
                      f"UsePAM no\nPidFile {keys / 'sshd.pid'}\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
                      )  # fmt: skip
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation folder
    server = subprocess.Popen([daemon, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    known = keys / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(keys / 'host.pub').read_text()}")
    options = f"-i {keys / 'client'} -o UserKnownHostsFile={known} -o IdentitiesOnly=yes"
    try:
        for _ in range(50):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield f"ssh://{user}@127.0.0.1:{port}", {"BITEDGE_SSH_OPTIONS": options}
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_remote_copies_runs_fetches_and_imports_over_ssh(
    artifact: Path, tmp_path: Path, sshd: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    address, env = sshd
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = ["bench", "--bundle", str(tmp_path / "bundles"), "--remote", address, "--remote-python", sys.executable,
            str(artifact), *QUICK]  # fmt: skip
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert (
        "outputs within budget on 4 images" in out and (tmp_path / "bundles" / artifact.name / "results.json").is_file()
    )
    rows = json.loads((artifact.parent / "device-bench.json").read_text())["rows"]
    assert rows[-1]["source"] == "run.py" and rows[-1]["device"]["hostname"] == os.uname().nodename
