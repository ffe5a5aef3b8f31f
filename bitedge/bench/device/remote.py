"""``bitedge bench --bundle DIR --remote ssh://user@host[:port] ARTIFACT...``: copy each bundle to the device,
run it there, fetch its results.json into the bundle, and import it.

It uses the OpenSSH client (``ssh`` and ``scp``) non-interactively (``BatchMode``: keys or an agent, never a
password prompt), with your ``~/.ssh/config``; ``BITEDGE_SSH_OPTIONS`` adds options (e.g. ``-i KEY -o
UserKnownHostsFile=FILE``). The bundle goes into a fresh temporary folder on the device, removed afterwards;
``--remote-python`` names the interpreter there (default ``python3``, which must have numpy and the runtime).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bitedge.errors import BadInputError

TIMEOUT = 1800.0  # one bundle's copy and run


@dataclass(frozen=True)
class Remote:
    user: str | None
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> Remote:
        match = re.fullmatch(r"ssh://(?:([^@/:\s]+)@)?([^@/:\s]+|\[[0-9a-fA-F:]+\])(?::([0-9]+))?/?", text)
        if match is None:
            raise BadInputError(f"--remote {text}: expected ssh://[user@]host[:port]")
        return cls(match[1], match[2].strip("[]"), int(match[3]) if match[3] else None)

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def options(self, *, scp: bool = False) -> list[str]:
        extra = shlex.split(os.environ.get("BITEDGE_SSH_OPTIONS", ""))
        port = [("-P" if scp else "-p"), str(self.port)] if self.port else []
        return ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *port, *extra]


def run_remote(bundle: Path, remote: Remote, *, python: str = "python3", threads: int | None = None) -> Path:
    """Run ``bundle`` on ``remote``; returns the fetched results.json (inside ``bundle``)."""
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise BadInputError(f"--remote needs the OpenSSH client ({tool} is not on PATH); install it")
    folder = _ssh(remote, "mktemp -d -t bitedge-bundle-XXXXXX").strip()
    if not folder.startswith("/"):
        raise BadInputError(f"{remote.target}: could not make a temporary folder there (got {folder!r})")
    try:
        _run(["scp", *remote.options(scp=True), "-r", "-q", str(bundle), f"{remote.target}:{folder}/"], remote)
        where = f"{folder}/{bundle.name}"
        flags = f" --threads {threads}" if threads else ""
        _ssh(remote, f"cd {shlex.quote(where)} && {shlex.quote(python)} run.py --out results.json{flags}")
        results = bundle / "results.json"
        _run(["scp", *remote.options(scp=True), "-q", f"{remote.target}:{where}/results.json", str(results)], remote)
    finally:
        subprocess.run(["ssh", *remote.options(), remote.target, f"rm -rf {shlex.quote(folder)}"],
                       capture_output=True, timeout=60, check=False)  # fmt: skip
    return results


def _ssh(remote: Remote, command: str) -> str:
    return _run(["ssh", *remote.options(), remote.target, command], remote)


def _run(command: list[str], remote: Remote) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BadInputError(f"{remote.target}: no answer within {TIMEOUT:.0f} s ({command[0]})") from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        last = said[-1] if said else f"exit {done.returncode}"
        raise BadInputError(f"{remote.target}: {command[0]} failed ({last}); "
                            "check that ssh to it works without a password (keys or an agent), and that its python "
                            "has numpy and the runtime (--remote-python)")  # fmt: skip
    return done.stdout
