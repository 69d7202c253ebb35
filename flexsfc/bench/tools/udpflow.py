"""Many-flow UDP sender and per-flow receiver, run as processes inside pods (scale_loss).

    python -m flexsfc.bench.tools.udpflow send DST PORT --flows F --pps R --seconds S --out FILE
    python -m flexsfc.bench.tools.udpflow recv PORT --out FILE          (until SIGTERM/SIGINT)

Every flow is one UDP socket with its own source port; each datagram carries (flow, sequence). The
sender writes packets sent per flow; a receiver writes per flow the packets received and the first
and last sequence numbers, so the parent can count losses and see which replica held each flow.
"""

import argparse
import json
import signal
import socket
import struct
import sys
import time
from typing import Any

HEADER = struct.Struct("!IQ")  # flow index, sequence number
PAYLOAD_PAD = b"\0" * (64 - HEADER.size)


def send(dst: str, port: int, flows: int, pps: float, seconds: float) -> dict[str, Any]:
    socks = []
    for _ in range(flows):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((dst, port))
        socks.append(sock)
    sent = [0] * flows
    errors = 0
    interval = 1.0 / pps
    start = time.monotonic()
    deadline = start + seconds
    seq = 0
    next_at = start
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if now < next_at:
            time.sleep(min(next_at - now, 0.001))
            continue
        flow = seq % flows
        try:
            socks[flow].send(HEADER.pack(flow, sent[flow]) + PAYLOAD_PAD)
            sent[flow] += 1
        except OSError:
            errors += 1
        seq += 1
        next_at += interval
    for sock in socks:
        sock.close()
    return {"sent": sent, "send_errors": errors, "seconds": time.monotonic() - start, "start": start}


def receive(port: int) -> dict[str, Any]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(0.2)
    per_flow: dict[int, list[int]] = {}  # flow -> [count, first seq, last seq]
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    while not stopping:
        try:
            data = sock.recv(256)
        except TimeoutError:
            continue
        except InterruptedError:
            continue
        if len(data) < HEADER.size:
            continue
        flow, seq = HEADER.unpack_from(data)
        entry = per_flow.get(flow)
        if entry is None:
            per_flow[flow] = [1, seq, seq]
        else:
            entry[0] += 1
            entry[2] = max(entry[2], seq)
            entry[1] = min(entry[1], seq)
    return {"flows": {str(k): v for k, v in per_flow.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flexsfc.bench.tools.udpflow")
    sub = parser.add_subparsers(dest="verb", required=True)
    p_send = sub.add_parser("send")
    p_send.add_argument("dst")
    p_send.add_argument("port", type=int)
    p_send.add_argument("--flows", type=int, default=64)
    p_send.add_argument("--pps", type=float, default=5000)
    p_send.add_argument("--seconds", type=float, default=2.0)
    p_send.add_argument("--out", required=True)
    p_recv = sub.add_parser("recv")
    p_recv.add_argument("port", type=int)
    p_recv.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.verb == "send":
        result = send(args.dst, args.port, args.flows, args.pps, args.seconds)
    else:
        result = receive(args.port)
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
