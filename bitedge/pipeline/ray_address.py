"""``RAY_ADDRESS``, checked before Ray is asked to join it: a malformed address, or one where no Ray cluster
listens, is a ``BadInputError`` naming ``RAY_ADDRESS`` within seconds.

Left to itself, ``ray.init`` raises a bare ``ValueError`` for a malformed address, and for ``host:port`` where
nothing listens, or something that is not Ray's GCS (its cluster's gRPC endpoint), it retries for minutes,
deaf to SIGTERM. So ``host:port`` is probed first: a TCP connection, then the HTTP/2 preface gRPC servers
answer with their SETTINGS frame. ``auto`` (a cluster started on this machine) and ``local`` are Ray's own
and fail fast; ``ray://`` (Ray Client) is refused with what to use instead.
"""

from __future__ import annotations

import socket

from bitedge.errors import BadInputError

PROBE_SECONDS = 5.0
# the client preface of HTTP/2, then an empty SETTINGS frame: a gRPC server answers with its own SETTINGS
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 0x04
# Ray's patience when joining a cluster, bounded so a wrong address fails in seconds (set them to override)
RAY_JOIN_LIMITS = {
    "RAY_gcs_server_port_wait_time_s": "2",
    "RAY_gcs_rpc_server_connect_timeout_s": "4",
    "RAY_py_gcs_connect_timeout_s": "8",
}


def check_ray_address(address: str) -> None:
    """Refuse, naming ``RAY_ADDRESS``, an address Ray could not join."""
    if address in ("auto", "local"):
        return
    if address.startswith("ray://"):
        raise BadInputError(f"RAY_ADDRESS={address}: Ray Client (ray://) is not supported; give the cluster's GCS "
                            "address, host:port (6379 by default), as `ray start --head` prints it")  # fmt: skip
    host, port = _split(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS) as connection:
            connection.settimeout(PROBE_SECONDS)
            connection.sendall(_PREFACE)
            answer = _read(connection, 9)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise BadInputError(
            f"RAY_ADDRESS={address}: no Ray cluster there ({reason}); start one with `ray start --head` and give "
            "the address it prints, or unset RAY_ADDRESS to run Ray on this machine"
        ) from None
    if len(answer) < 9 or answer[3] != _SETTINGS:
        raise BadInputError(
            f"RAY_ADDRESS={address}: something listens there, but it is not a Ray cluster's GCS (it does not speak "
            "gRPC); give the address `ray start --head` prints (port 6379 by default)"
        )


def _split(address: str) -> tuple[str, int]:
    host, colon, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in address:
        raise BadInputError(
            f"RAY_ADDRESS={address!r} is not an address Ray can join: expected host:port (e.g. 10.0.0.5:6379), "
            "'auto' for a cluster started on this machine, or unset it to run Ray here"
        )
    return host, int(port)


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
