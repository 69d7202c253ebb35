"""Real traffic through a cross-connection: replica servers and a client, each in its own netns.

Sockets are created inside the namespaces (thread setns) and then served from threads of the test
process: no helper processes to leak. Every server replica answers with its name, so the client
learns which replica carried each packet of each flow.
"""

import contextlib
import ipaddress
import selectors
import socket
import subprocess
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from flexsfc.util.netns import in_netns

UDP_PORT = 9000
TCP_PORT = 9001
BURST = 100  # UDP packets in flight per burst
SERVER_RCVBUF = 4 << 20
SO_RCVBUFFORCE = 33  # asm-generic/socket.h; not exported by Python's socket module


IFA_F_NODAD = 0x02


def family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


def configure(netns: str, ifname: str, cidr: str) -> None:
    """Address the pod end and bring it up. IPv4: IPv6 off (no DAD/MLD noise in the counters);
    IPv6: the address without duplicate address detection (usable at once)."""
    address, prefix = cidr.split("/")
    v6 = family_of(address) == socket.AF_INET6
    if not v6:
        subprocess.run(
            ["ip", "netns", "exec", netns, "sysctl", "-qw", f"net.ipv6.conf.{ifname}.disable_ipv6=1"],
            check=True,
        )
    with in_netns(netns), IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        extra = {"flags": IFA_F_NODAD} if v6 else {}
        ipr.addr("add", index=index, address=address, prefixlen=int(prefix), **extra)
        ipr.link("set", index=index, state="up")


NUD_REACHABLE = 0x02


def resolve(netns: str, peer_ip: str, timeout: float = 3.0) -> None:
    """Make the namespace resolve `peer_ip` (answered by the cross-connection) before a burst: packets
    queued behind an unresolved neighbour are dropped beyond a small queue."""
    family = family_of(peer_ip)
    with in_netns(netns), IPRoute() as ipr, socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.sendto(b"resolve", (peer_ip, 9))  # discard port; the triggered ARP/ND is what we want
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(n["state"] & NUD_REACHABLE for n in ipr.get_neighbours(family=family, dst=peer_ip)):
                return
            time.sleep(0.01)
    raise AssertionError(f"{netns}: {peer_ip} did not resolve (ARP/ND through the cross-connection)")


class ReplicaServer:
    """UDP echo and TCP greeter in one namespace, both answering with the replica's name."""

    def __init__(self, netns: str, name: str, family: socket.AddressFamily = socket.AF_INET) -> None:
        self.name = name
        self.received = Counter()  # flow id -> UDP packets received
        anywhere = "::" if family == socket.AF_INET6 else "0.0.0.0"
        with in_netns(netns):
            self.udp = socket.socket(family, socket.SOCK_DGRAM)
            self.udp.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SERVER_RCVBUF)
            self.udp.bind((anywhere, UDP_PORT))
            self.tcp = socket.socket(family, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((anywhere, TCP_PORT))
            self.tcp.listen(1024)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"server-{name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ)
        sel.register(self.tcp, selectors.EVENT_READ)
        reply_prefix = self.name.encode() + b" "
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.05):
                if key.fileobj is self.udp:
                    while True:
                        try:
                            data, peer = self.udp.recvfrom(2048, socket.MSG_DONTWAIT)
                        except BlockingIOError:
                            break
                        self.received[data.split(b" ")[0]] += 1
                        self.udp.sendto(reply_prefix + data, peer)
                else:
                    conn, _ = self.tcp.accept()
                    with conn:
                        conn.sendall(self.name.encode())
        sel.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.udp.close()
        self.tcp.close()


@dataclass
class UdpFlows:
    """Many UDP flows (one socket = one source port each) from the client namespace."""

    netns: str
    server_ip: str
    sockets: dict[bytes, socket.socket] = field(default_factory=dict)
    replicas: dict[bytes, set[str]] = field(default_factory=lambda: defaultdict(set))
    sent: int = 0
    answered: int = 0

    def open(self, count: int, prefix: str) -> list[bytes]:
        ids = []
        with in_netns(self.netns):
            family = family_of(self.server_ip)
            for i in range(count):
                flow = f"{prefix}{i}".encode()
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                sock.setblocking(False)
                self.sockets[flow] = sock
                ids.append(flow)
        return ids

    def round(self, flows: list[bytes], timeout: float = 3.0) -> int:
        """One packet per flow; waits for every answer. Returns how many were lost.

        Sent in bursts of BURST with the answers collected in between: a loaded 2-CPU machine
        otherwise overflows socket buffers and the backlog queue, which says nothing about the
        cross-connection."""
        pending = set(flows)
        sel = selectors.DefaultSelector()
        for flow in flows:
            sel.register(self.sockets[flow], selectors.EVENT_READ, flow)
        for start in range(0, len(flows), BURST):
            for seq, flow in enumerate(flows[start : start + BURST], start):
                self.sockets[flow].sendto(flow + b" %d" % seq, (self.server_ip, UDP_PORT))
            self.sent += len(flows[start : start + BURST])
            self._collect(sel, pending, time.monotonic() + timeout, until=len(flows) - start - BURST)
        self._collect(sel, pending, time.monotonic() + timeout, until=0)
        sel.close()
        return len(pending)

    def _collect(self, sel: selectors.BaseSelector, pending: set[bytes], deadline: float, until: int) -> None:
        """Reads answers until at most `until` flows are pending or the deadline passes."""
        while len(pending) > max(until, 0) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.1):
                with contextlib.suppress(BlockingIOError):
                    while True:
                        data = key.fileobj.recv(2048)
                        replica, flow = data.split(b" ")[:2]
                        self.replicas[flow].add(replica.decode())
                        if flow in pending:
                            pending.discard(flow)
                            self.answered += 1

    def replica_of(self, flow: bytes) -> str:
        (replica,) = self.replicas[flow]
        return replica

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


def tcp_flows(netns: str, server_ip: str, count: int) -> list[str]:
    """Opens `count` TCP connections one after another; returns the replica that accepted each."""
    replicas = []
    with in_netns(netns):
        for _ in range(count):
            with socket.create_connection((server_ip, TCP_PORT), timeout=5) as conn:
                replicas.append(conn.recv(64).decode())
    return replicas


class Background:
    """Keeps sending rounds over a set of flows until stopped; counts what was lost."""

    def __init__(self, flows: UdpFlows, ids: list[bytes]) -> None:
        self.flows, self.ids = flows, ids
        self.lost = 0
        self.rounds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-rounds", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.lost += self.flows.round(self.ids)
            self.rounds += 1

    def __enter__(self) -> "Background":
        self._thread.start()
        return self

    def wait_rounds(self, count: int, timeout: float = 20.0) -> None:
        target, deadline = self.rounds + count, time.monotonic() + timeout
        while self.rounds < target and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.rounds >= target, "traffic rounds stalled"

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
