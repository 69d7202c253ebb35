"""A small traffic generator for the demo, the e2e tests and the reaction benchmark.

`server` echoes TCP and UDP on one port. `client` keeps many long-lived TCP connections and UDP flows
busy (sequence-numbered datagrams, every one echoed back) and opens short-lived UDP flows at a steady
rate so new replicas soon see new sessions. It accounts on the client side only: a UDP datagram
counts as lost when its echo never came back, and the send time of every lost one is reported, so
losses can be attributed to what happened at that moment (scale-out, drain, kill).

Run inside a pod: `flexsfc exec client -- python -m flexsfc.local.traffic client --server ...`. The
client runs until --duration or SIGINT/SIGTERM, then prints one JSON report on stdout.
"""

import argparse
import contextlib
import errno
import json
import selectors
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

UDP_FORMAT = struct.Struct("!IIQ")  # flow id, sequence number, send time (ns)
UDP_PAYLOAD = 64
MAX_DATAGRAM = 65535  # receive buffers: long-lived flows may send datagrams larger than the MTU
TCP_CHUNK = 256
DRAIN_SECONDS = 0.5  # wait for the last echoes before counting losses
SOCKET_BUFFER = 4 << 20  # a Python echo server stalls now and then: buffer bursts, do not drop them
MAX_CATCH_UP_SECONDS = 0.05  # after a stall, send at most this much backlog at once


def _big_buffers(sock: socket.socket) -> None:
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)  # root: beyond net.core.rmem_max
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# -- server --------------------------------------------------------------------------------------


def serve(port: int, bind: str = "") -> None:
    family = socket.AF_INET6 if ":" in bind or not bind else socket.AF_INET
    sel = selectors.DefaultSelector()
    listener = socket.socket(family, socket.SOCK_STREAM)
    udp = socket.socket(family, socket.SOCK_DGRAM)
    _big_buffers(udp)
    for sock in (listener, udp):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # v4-mapped too
        sock.bind((bind or "::", port))
        sock.setblocking(False)
    listener.listen(1024)
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(udp, selectors.EVENT_READ, "udp")
    stop = _install_stop()
    pending: dict[socket.socket, bytearray] = {}
    while not stop["set"]:
        for key, _mask in sel.select(timeout=0.2):
            if key.data == "accept":
                with contextlib.suppress(BlockingIOError):
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    pending[conn] = bytearray()
                    sel.register(conn, selectors.EVENT_READ, "tcp")
            elif key.data == "udp":
                for _ in range(64):
                    try:
                        data, addr = udp.recvfrom(MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    with contextlib.suppress(OSError):
                        udp.sendto(data, addr)
            else:
                peer = key.fileobj
                assert isinstance(peer, socket.socket)
                try:
                    data = peer.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(peer)
                    pending.pop(peer, None)
                    peer.close()
                    continue
                buf = pending[peer]
                buf += data
                with contextlib.suppress(BlockingIOError, OSError):
                    sent = peer.send(buf)
                    del buf[:sent]


# -- client --------------------------------------------------------------------------------------


@dataclass
class UdpFlow:
    fid: int
    sock: socket.socket
    port: int = 0
    sent: int = 0
    send_ns: list[int] = field(default_factory=list)
    received: set[int] = field(default_factory=set)


@dataclass
class TcpFlow:
    fid: int
    sock: socket.socket
    port: int = 0
    connected: bool = False
    sent: int = 0
    echoed: int = 0
    error: str = ""


@dataclass
class ShortFlow:
    sock: socket.socket
    opened_ns: int
    answered: bool = False


def run_client(args: argparse.Namespace) -> dict[str, Any]:
    family = _family(args.server)
    dest = (args.server, args.port)
    sel = selectors.DefaultSelector()
    stop = _install_stop()

    tcp_flows: list[TcpFlow] = []
    udp_flows: list[UdpFlow] = []

    def open_tcp() -> None:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex(dest)
        flow = TcpFlow(len(tcp_flows), sock)
        if err not in (0, errno.EINPROGRESS):
            flow.error = os_error(err)
        tcp_flows.append(flow)
        sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, flow)

    def open_udp() -> None:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        _big_buffers(sock)
        sock.connect(dest)
        sock.setblocking(False)
        flow = UdpFlow(len(udp_flows), sock, port=sock.getsockname()[1])
        udp_flows.append(flow)
        sel.register(sock, selectors.EVENT_READ, flow)

    for _ in range(args.tcp):
        open_tcp()
    for _ in range(args.udp):
        open_udp()
    late_pending = bool(args.late_tcp or args.late_udp)
    late_signal = {"set": False}
    signal.signal(signal.SIGUSR1, lambda *_: late_signal.update(set=True))

    shorts: list[ShortFlow] = []
    short_opened = short_answered = 0
    payload = bytes(TCP_CHUNK)
    started = time.monotonic()
    started_ns = time.time_ns()
    udp_interval = 1.0 / args.udp_pps if args.udp_pps > 0 else 0.0
    tcp_interval = 1.0 / args.tcp_msgs if args.tcp_msgs > 0 else 0.0
    short_interval = 1.0 / args.new_flows if args.new_flows > 0 else 0.0
    next_udp = next_tcp = next_short = started
    deadline = started + args.duration if args.duration > 0 else float("inf")

    while not stop["set"] and time.monotonic() < deadline:
        now = time.monotonic()
        if late_pending and (late_signal["set"] or 0 < args.late_after <= now - started):
            # A second batch of long-lived flows, e.g. opened after a scale-out so some land on
            # the new replicas (and are drained when those go away).
            for _ in range(args.late_tcp):
                open_tcp()
            for _ in range(args.late_udp):
                open_udp()
            late_pending = False
        if udp_interval and now >= next_udp:
            for flow in udp_flows:
                _udp_send(flow, args.udp_size)
            next_udp += udp_interval
            if now - next_udp > MAX_CATCH_UP_SECONDS:  # stalled: do not burst the backlog
                next_udp = now
        if tcp_interval and now >= next_tcp:
            for tcp in tcp_flows:
                if tcp.connected and not tcp.error:
                    try:
                        tcp.sent += tcp.sock.send(payload)
                    except BlockingIOError:
                        pass
                    except OSError as exc:
                        tcp.error = str(exc)
            next_tcp += tcp_interval
            if now - next_tcp > MAX_CATCH_UP_SECONDS:
                next_tcp = now
        if short_interval and now >= next_short:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.connect(dest)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.send(UDP_FORMAT.pack(0xFFFFFFFF, 0, time.time_ns()).ljust(UDP_PAYLOAD, b"\0"))
            short = ShortFlow(sock, time.monotonic_ns())
            shorts.append(short)
            sel.register(sock, selectors.EVENT_READ, short)
            short_opened += 1
            next_short += short_interval
            if now - next_short > MAX_CATCH_UP_SECONDS:
                next_short = now
        # retire short flows after 1 s
        while shorts and time.monotonic_ns() - shorts[0].opened_ns > 1_000_000_000:
            old = shorts.pop(0)
            sel.unregister(old.sock)
            old.sock.close()
        timeout = max(0.0, min(next_udp, next_tcp, next_short, deadline) - time.monotonic())
        for key, mask in sel.select(timeout=min(timeout, 0.01)):
            short_answered += _serve_ready(sel, key.data, mask)

    # stop sending, give the last echoes time to come back
    end = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < end:
        for key, mask in sel.select(timeout=0.05):
            short_answered += _serve_ready(sel, key.data, mask & selectors.EVENT_READ)

    report = {
        "startedNs": started_ns,
        "durationSeconds": time.monotonic() - started,
        "udp": [
            {
                "flow": f.fid,
                "port": f.port,
                "late": f.fid >= args.udp,
                "sent": f.sent,
                "received": len(f.received),
                "lostSendNs": [f.send_ns[s] for s in range(f.sent) if s not in f.received],
            }
            for f in udp_flows
        ],
        "tcp": [
            {
                "flow": f.fid,
                "port": f.port,
                "late": f.fid >= args.tcp,
                "connected": f.connected,
                "sent": f.sent,
                "echoed": f.echoed,
                "error": f.error,
            }
            for f in tcp_flows
        ],
        "short": {"opened": short_opened, "answered": short_answered},
    }
    for tcp in tcp_flows:
        tcp.sock.close()
    for flow in udp_flows:
        flow.sock.close()
    return report


def _serve_ready(sel: selectors.BaseSelector, flow: UdpFlow | TcpFlow | ShortFlow, mask: int) -> int:
    """Handle one ready socket; 1 if it brought a short flow's first answer, else 0."""
    if isinstance(flow, UdpFlow):
        _udp_receive(flow)
    elif isinstance(flow, TcpFlow):
        _tcp_event(sel, flow, mask)
    else:
        with contextlib.suppress(OSError):
            flow.sock.recv(2048)
            if not flow.answered:
                flow.answered = True
                return 1
    return 0


def _udp_send(flow: UdpFlow, size: int = UDP_PAYLOAD) -> None:
    now = time.time_ns()
    # A failed send counts as lost: it was due and no echo will come back.
    with contextlib.suppress(OSError):
        flow.sock.send(UDP_FORMAT.pack(flow.fid, flow.sent, now).ljust(size, b"\0"))
    flow.send_ns.append(now)
    flow.sent += 1


def _udp_receive(flow: UdpFlow) -> None:
    for _ in range(64):
        try:
            data = flow.sock.recv(MAX_DATAGRAM)
        except (BlockingIOError, ConnectionRefusedError):
            return
        except OSError:
            return
        if len(data) >= UDP_FORMAT.size:
            fid, seq, _ = UDP_FORMAT.unpack_from(data)
            if fid == flow.fid:
                flow.received.add(seq)


def _tcp_event(sel: selectors.BaseSelector, flow: TcpFlow, mask: int) -> None:
    if not flow.connected and mask & selectors.EVENT_WRITE:
        err = flow.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            flow.error = os_error(err)
            sel.unregister(flow.sock)
            return
        flow.connected = True
        flow.port = flow.sock.getsockname()[1]
        sel.modify(flow.sock, selectors.EVENT_READ, flow)
    if mask & selectors.EVENT_READ:
        try:
            data = flow.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            flow.error = str(exc)
            sel.unregister(flow.sock)
            return
        if not data:
            flow.error = flow.error or "connection closed by peer"
            sel.unregister(flow.sock)
            return
        flow.echoed += len(data)


def os_error(err: int) -> str:
    return f"[Errno {err}] {errno.errorcode.get(err, '')}".strip()


def _install_stop() -> dict[str, bool]:
    stop = {"set": False}

    def handler(_signum: int, _frame: Any) -> None:
        stop["set"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Totals over flows: what the demo and the tests assert on."""
    udp_sent = sum(f["sent"] for f in report["udp"])
    udp_lost = sum(f["sent"] - f["received"] for f in report["udp"])
    return {
        "udpSent": udp_sent,
        "udpLost": udp_lost,
        "tcpFlows": len(report["tcp"]),
        "tcpAlive": sum(1 for f in report["tcp"] if f["connected"] and not f["error"]),
        "tcpErrors": [f["error"] for f in report["tcp"] if f["error"]],
        "tcpEchoedBytes": sum(f["echoed"] for f in report["tcp"]),
        "shortOpened": report["short"]["opened"],
        "shortAnswered": report["short"]["answered"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flexsfc-traffic")
    sub = parser.add_subparsers(dest="mode", required=True)
    srv = sub.add_parser("server")
    srv.add_argument("--port", type=int, default=9000)
    srv.add_argument("--bind", default="")
    cli = sub.add_parser("client")
    cli.add_argument("--server", required=True)
    cli.add_argument("--port", type=int, default=9000)
    cli.add_argument("--tcp", type=int, default=16, help="long-lived TCP connections")
    cli.add_argument("--udp", type=int, default=16, help="long-lived UDP flows")
    cli.add_argument("--udp-pps", type=float, default=50.0, help="datagrams per second per UDP flow")
    cli.add_argument(
        "--udp-size",
        type=int,
        default=UDP_PAYLOAD,
        help="payload bytes of the long-lived flows' datagrams (beyond the MTU: sent as IP fragments)",
    )
    cli.add_argument("--tcp-msgs", type=float, default=20.0, help="256-byte writes per second per connection")
    cli.add_argument("--new-flows", type=float, default=100.0, help="short-lived UDP flows opened per second")
    cli.add_argument("--late-tcp", type=int, default=0, help="TCP connections opened at --late-after")
    cli.add_argument("--late-udp", type=int, default=0, help="UDP flows opened at --late-after")
    cli.add_argument(
        "--late-after", type=float, default=0.0, help="seconds after start for the late flows (or on SIGUSR1)"
    )
    cli.add_argument("--duration", type=float, default=0.0, help="seconds (0: until SIGINT/SIGTERM)")
    cli.add_argument("--out", default="-", help="report file (default stdout)")
    args = parser.parse_args(argv)
    if args.mode == "server":
        serve(args.port, args.bind)
        return 0
    report = run_client(args)
    text = json.dumps(report)
    if args.out == "-":
        sys.stdout.write(text + "\n")
    else:
        with open(args.out + ".tmp", "w") as f:
            f.write(text)
        import os

        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
