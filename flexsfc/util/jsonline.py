"""One request, one reply: the JSON-line protocol of flexsfc's Unix control sockets (the local
runtime's supervisor, the node agents' picture socket, the flow history)."""

import json
import socket
from collections.abc import Mapping
from typing import Any


def call(path: str, request: Mapping[str, Any], timeout: float) -> dict[str, Any] | None:
    """Send `request` as one JSON line to the socket at `path` and read the one-line reply; None when
    the server closed the connection without one. FileNotFoundError or ConnectionRefusedError when
    nothing serves there."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(dict(request)).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    if not data:
        return None
    reply: dict[str, Any] = json.loads(data)
    return reply


def answers(path: str, timeout: float = 1.0) -> bool:
    """Whether a process accepts connections on the Unix socket at `path` (a server checks this
    before it replaces a socket file: only a dead process's is ever taken over)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
