"""A plain rtnetlink socket that sends pyroute2-encoded requests and decodes the replies.

pyroute2's message classes (``ifinfmsg``, ``tcmsg``, ...) do all the encoding and decoding; its
``IPRoute`` pulls in asyncio and its whole RTNL machinery (80-140 ms to import, ~0.5 ms per call),
which neither a CNI call (a fresh process each time) nor the agent's per-replica attach can afford.

A netlink socket stays bound to the namespace it was created in: create it under ``setns``.
"""

import itertools
import os
import socket
import struct
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, nlmsgerr

from flexsfc.util.netns import in_netns

NETLINK_EXT_ACK = 11
SOL_NETLINK = 270
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ERROR = struct.Struct("=i")  # nlmsgerr.error, negative errno or 0
_RECV_BUFFER = 1 << 16


class RtnlError(Exception):
    """The kernel refused a request: ``errno`` and, when it gave one, its extended-ack reason."""

    def __init__(self, errno_code: int, message: str) -> None:
        super().__init__(message)
        self.errno = errno_code


class RtnlSocket:
    """An rtnetlink socket bound to one network namespace (the caller's when ``netns`` is None)."""

    def __init__(self, netns: str | None = None) -> None:
        if netns is None:
            self._sock = self._open()
        else:
            with in_netns(netns):
                self._sock = self._open()
        self._sequence = itertools.count(1)

    @staticmethod
    def _open() -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)  # the kernel then says *why* it refused
        sock.bind((0, 0))
        return sock

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "RtnlSocket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, what: str, msg: Any, msg_type: int, flags: int = 0) -> list[Any]:
        """Send one request; return the decoded replies (dump or get), raise RtnlError on a NACK."""
        sequence = next(self._sequence)
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        msg["header"]["sequence_number"] = sequence
        msg.encode()
        return self._exchange(what, msg.data, sequence, type(msg))

    def request_packed(self, what: str, body: bytes, msg_type: int, flags: int = 0) -> None:
        """Send one request whose body (after the netlink header) is already packed; wait for its
        acknowledgement, raise RtnlError on a NACK."""
        sequence = next(self._sequence)
        header = _HEADER.pack(
            _HEADER.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, sequence, 0
        )
        self._exchange(what, header + body, sequence, None)

    def _exchange(self, what: str, data: bytes, sequence: int, reply_type: Any) -> list[Any]:
        self._sock.send(data)
        replies: list[Any] = []
        while True:
            data = self._sock.recv(_RECV_BUFFER)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, kind, _flags, seq, _port = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    break
                if seq == sequence:
                    if kind == NLMSG_DONE:
                        return replies
                    if kind == NLMSG_ERROR:
                        _raise_for_error(what, data[offset : offset + length])
                        return replies  # error 0: the acknowledgement
                    if reply_type is not None:
                        reply = reply_type(data[offset : offset + length])
                        reply.decode()
                        replies.append(reply)
                offset += (length + 3) & ~3


def _raise_for_error(what: str, data: bytes) -> None:
    # The error code is the int right after the header: an acknowledgement (0) needs no decoding,
    # which pyroute2 does in ~50 µs (a tenth of a replica attach); a refusal gets it, for the reason.
    if len(data) >= _HEADER.size + _ERROR.size and _ERROR.unpack_from(data, _HEADER.size)[0] == 0:
        return
    error = nlmsgerr(data)
    error.decode()
    code = -error["error"]
    if code == 0:
        return
    reason = os.strerror(code)
    try:
        detail = error.get_attr("NLMSGERR_ATTR_MSG")
    except Exception:  # extended-ack attributes are a bonus; never hide the errno behind them
        detail = None
    raise RtnlError(code, f"{what}: {reason}" + (f" ({detail})" if detail else ""))
