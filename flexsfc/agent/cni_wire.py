"""The wire format of the node agent's CNI socket, shared by the shim, the server and the DEL queue.

Integers unsigned 32-bit big-endian::

    request  "FXC1" <n> n x (<len> "CNI_NAME=value") <len> <stdin>
    reply    "FXR1" <exit status> <len> <stdout>

The limits match the shim's (flexsfc/cni/shim/flexsfc-cni.c); `call` is a client as the shim is.
"""

import json
import socket
import struct
from collections.abc import Callable, Mapping

# (CNI_* variables, stdin) -> (exit status, stdout)
Handler = Callable[[Mapping[str, str], bytes], tuple[int, bytes]]

REQUEST_MAGIC = b"FXC1"
REPLY_MAGIC = b"FXR1"
MAX_ENV = 64
MAX_ENV_ENTRY = 64 << 10
MAX_STDIN = 1 << 20  # the shim's own limit
MAX_REQUEST = MAX_STDIN + (256 << 10)
IO_TIMEOUT_SECONDS = 30.0
QUEUE_FILE_PREFIX = "del-"
STALE_TMP_SECONDS = 3600.0  # a shim's half-written queue file older than this is removed
_U32 = struct.Struct(">I")


class ProtocolError(ValueError):
    """A request the agent refuses; answered with a CNI error of ``code`` (4: the environment)."""

    def __init__(self, message: str, code: int = 5) -> None:
        super().__init__(message)
        self.code = code


class EmptyConnection(ProtocolError):
    """Closed before the first byte (a liveness probe, another agent checking the socket)."""


# ------------------------------------------------------------------------------------- wire format


def encode_request(environ: Mapping[str, str], stdin: bytes) -> bytes:
    """The request the shim sends (only ``CNI_*`` variables are carried)."""
    entries = [f"{key}={value}".encode() for key, value in environ.items() if key.startswith("CNI_")]
    parts = [REQUEST_MAGIC, _U32.pack(len(entries))]
    for entry in entries:
        parts += [_U32.pack(len(entry)), entry]
    parts += [_U32.pack(len(stdin)), stdin]
    return b"".join(parts)


def decode_request(read_exact: Callable[[int], bytes]) -> tuple[dict[str, str], bytes]:
    """A request from ``read_exact(n)`` (which returns exactly n bytes or raises), every length bounded."""
    if read_exact(4) != REQUEST_MAGIC:
        raise ProtocolError("not a flexsfc-cni request (bad magic)")
    count = _read_u32(read_exact)
    if count > MAX_ENV:
        raise ProtocolError(f"{count} environment entries (at most {MAX_ENV})", 4)
    environ: dict[str, str] = {}
    for _ in range(count):
        size = _read_u32(read_exact)
        if size > MAX_ENV_ENTRY:
            raise ProtocolError(f"environment entry of {size} bytes (at most {MAX_ENV_ENTRY})", 4)
        key, sep, value = read_exact(size).decode("utf-8", "surrogateescape").partition("=")
        if not sep or not key.startswith("CNI_"):
            raise ProtocolError(f"environment entry {key[:40]!r} is not CNI_NAME=value", 4)
        environ[key] = value
    size = _read_u32(read_exact)
    if size > MAX_STDIN:
        raise ProtocolError(f"stdin of {size} bytes (at most {MAX_STDIN})")
    return environ, read_exact(size)


def encode_reply(status: int, stdout: bytes) -> bytes:
    return REPLY_MAGIC + _U32.pack(status) + _U32.pack(len(stdout)) + stdout


def decode_reply(data: bytes) -> tuple[int, bytes]:
    if len(data) < 12 or data[:4] != REPLY_MAGIC:
        raise ProtocolError("not a flexsfc-cni reply")
    status, size = _U32.unpack_from(data, 4)[0], _U32.unpack_from(data, 8)[0]
    if len(data) != 12 + size:
        raise ProtocolError("truncated reply")
    return status, data[12:]


def call(
    socket_path: str, environ: Mapping[str, str], stdin: bytes, timeout: float = 120.0
) -> tuple[int, bytes]:
    """One call as the shim makes it (tests, benchmarks, a Python client)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(encode_request(environ, stdin))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return decode_reply(b"".join(chunks))


def refusal(exc: ProtocolError) -> bytes:
    error = {"cniVersion": "1.1.0", "code": exc.code, "msg": "request refused by the flexsfc agent"}
    return (json.dumps({**error, "details": str(exc)}) + "\n").encode()


def _read_u32(read_exact: Callable[[int], bytes]) -> int:
    value: int = _U32.unpack(read_exact(4))[0]
    return value


def bytes_reader(data: bytes) -> Callable[[int], bytes]:
    offset = 0

    def read_exact(size: int) -> bytes:
        nonlocal offset
        if offset + size > len(data):
            raise ProtocolError("truncated request")
        chunk = data[offset : offset + size]
        offset += size
        return chunk

    return read_exact


def socket_reader(sock: socket.socket) -> Callable[[int], bytes]:
    budget = MAX_REQUEST

    def read_exact(size: int) -> bytes:
        nonlocal budget
        if size > budget:
            raise ProtocolError(f"request larger than {MAX_REQUEST} bytes")
        budget -= size
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            n = sock.recv_into(view[got:], size - got)
            if n == 0 and budget + size == MAX_REQUEST and got == 0:
                raise EmptyConnection("connection closed without a request")
            if n == 0:
                raise ProtocolError("connection closed mid-request")
            got += n
        return bytes(buffer)

    return read_exact
