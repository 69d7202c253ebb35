"""ICMP and ICMPv6 errors reach the replica of the session they are about (BPF_PROG_TEST_RUN).

The setting of issue 17: an NF with three replicas (side A of the cross-connection, say a stateful
router) and, on side B, the next hop, whose smaller MTU makes it answer the router replicas'
uploads with "fragmentation needed" / "packet too big". Every error has the same outer addresses
(the next hop and the client), so hashed as a flow they all reach one replica; keyed by the packet
they quote, each reaches the replica holding its session. Errors whose quoted flow has no session
(or a truncated, fragmented or garbled quote) take the normal path.
"""

import ipaddress
import struct
from dataclasses import dataclass

import pytest

from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.types import Side
from flexsfc.testing import frames, progtest

pytestmark = pytest.mark.root

FLOWS = 24
ROUTER4, ROUTER6 = "10.9.0.254", "fd09::fe"  # the next hop that sends the errors
SERVER4, SERVER6 = "10.3.0.1", "fd03::1"

# (family, ICMP type, code, the 4 bytes after the checksum): every error type the program follows.
ERRORS = [
    pytest.param(4, 3, 4, 1280, id="v4-frag-needed"),
    pytest.param(4, 3, 1, 0, id="v4-host-unreachable"),
    pytest.param(4, 11, 0, 0, id="v4-time-exceeded"),
    pytest.param(4, 12, 0, 20 << 24, id="v4-parameter-problem"),
    pytest.param(6, 2, 0, 1280, id="v6-packet-too-big"),
    pytest.param(6, 1, 3, 0, id="v6-address-unreachable"),
    pytest.param(6, 3, 0, 0, id="v6-time-exceeded"),
    pytest.param(6, 4, 0, 40, id="v6-parameter-problem"),
]


@dataclass
class Xc:
    dp: Dataplane
    a: list[int]  # the NF's three replicas
    b: list[int]  # the next hop's (three as well, to check the other direction)
    name: str = "xc-icmp"


@pytest.fixture
def xc(host, dataplane) -> Xc:
    a = [host.add_port().ifindex for _ in range(3)]
    b = [host.add_port().ifindex for _ in range(3)]
    dataplane.ensure_xc("xc-icmp", maglev_table_size=1021)
    dataplane.set_replicas("xc-icmp", Side.A, [ReplicaPort(i, f"a-{i}") for i in a])
    dataplane.set_replicas("xc-icmp", Side.B, [ReplicaPort(i, f"b-{i}") for i in b])
    return Xc(dataplane, a, b)


def client(family: int, i: int) -> str:
    return f"fd02::{i + 1:x}" if family == 6 else str(ipaddress.IPv4Address("10.2.0.1") + i)


def ip_packet(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    if ipaddress.ip_address(src).version == 4:
        return frames.ipv4(src, dst, proto, payload)
    return frames.ipv6(src, dst, proto, payload)


def upload(family: int, i: int, proto: int = frames.TCP) -> bytes:
    """An IP packet of upload i (client -> server), as large as a 1500-byte link takes."""
    server = SERVER6 if family == 6 else SERVER4
    body = frames.l4(proto, 20000 + i, 5201, b"u" * 1400)
    return ip_packet(client(family, i), server, proto, body)


def icmp_error(family: int, icmp_type: int, code: int, rest: int, quoted: bytes, src: str, dst: str) -> bytes:
    """An ICMP (v4) or ICMPv6 error from `src` to `dst` quoting `quoted` (an IP packet). As the
    kernel does: IPv4 quotes up to 576 bytes in all, ICMPv6 up to the minimum MTU of 1280."""
    room = 576 - 20 - 8 if family == 4 else 1280 - 40 - 8
    body = struct.pack("!BBHI", icmp_type, code, 0, rest) + quoted[:room]
    proto = frames.ICMP if family == 4 else frames.ICMPV6
    ethertype = frames.ETH_P_IP if family == 4 else frames.ETH_P_IPV6
    return frames.ethernet(ethertype, ip_packet(src, dst, proto, body))


def send(dp: Dataplane, frame: bytes, ifindex: int) -> int:
    verdict = progtest.run(dp, frame, ifindex)
    assert verdict.redirected and verdict.target is not None, verdict
    assert verdict.data == frame, "forwarded headers must not change"
    return verdict.target


def establish(xc: Xc, family: int, flows: int = FLOWS, proto: int = frames.TCP) -> dict[int, tuple[int, int]]:
    """Flow i enters from router replica a[i % 3], as the upstream cross-connection spread them:
    {i: (side-A replica, side-B port)}."""
    placed = {}
    for i in range(flows):
        frame = frames.ethernet(
            frames.ETH_P_IP if family == 4 else frames.ETH_P_IPV6, upload(family, i, proto)
        )
        placed[i] = (xc.a[i % 3], send(xc.dp, frame, xc.a[i % 3]))
    return placed


@pytest.mark.parametrize(("family", "icmp_type", "code", "rest"), ERRORS)
def test_errors_reach_the_replica_holding_their_session(xc: Xc, family, icmp_type, code, rest) -> None:
    placed = establish(xc, family)
    router = ROUTER6 if family == 6 else ROUTER4
    events_before = xc.dp.event_stats()
    reached = {}
    for i in range(FLOWS):
        # From the next hop back towards the client, whichever next-hop replica sends it.
        error = icmp_error(family, icmp_type, code, rest, upload(family, i), router, client(family, i))
        reached[i] = send(xc.dp, error, xc.b[i % 3])
    assert reached == {i: a for i, (a, _) in placed.items()}
    events = xc.dp.event_stats()
    assert events["icmp_error_followed"] - events_before["icmp_error_followed"] == FLOWS
    assert events["session_created"] == events_before["session_created"]  # errors create nothing
    assert events["session_collision"] == events_before["session_collision"] == 0


@pytest.mark.parametrize("family", [4, 6])
def test_errors_about_the_other_direction_and_from_any_replica(xc: Xc, family: int) -> None:
    """An error about a download packet (server -> client) comes from side A, from whichever router
    replica found the problem (here always the first): it goes to the session's side-B port, and
    the session is not taken for moved (the replies still go to the replica that has them)."""
    placed = establish(xc, family)
    server = SERVER6 if family == 6 else SERVER4
    for i, (_, b) in placed.items():
        download = ip_packet(server, client(family, i), frames.TCP, frames.l4(frames.TCP, 5201, 20000 + i))
        finder = "fd09::1" if family == 6 else "10.9.0.1"
        error = icmp_error(
            family, 3 if family == 4 else 1, 1 if family == 4 else 3, 0, download, finder, server
        )
        assert send(xc.dp, error, xc.a[0]) == b
    for i, (a, b) in placed.items():
        reply = frames.flow_frame(server, client(family, i), frames.TCP, 5201, 20000 + i)
        assert send(xc.dp, reply, b) == a


@pytest.mark.parametrize("family", [4, 6])
def test_errors_about_udp_and_icmp_echo_flows(xc: Xc, family: int) -> None:
    """UDP is keyed by ports like TCP; ICMP echo by addresses only, and so is its quote."""
    router = ROUTER6 if family == 6 else ROUTER4
    for proto in (frames.UDP, frames.ICMP if family == 4 else frames.ICMPV6):
        placed = establish(xc, family, flows=9, proto=proto)
        for i, (a, _) in placed.items():
            quoted = upload(family, i, proto)
            icmp_type, code = (3, 4) if family == 4 else (2, 0)
            error = icmp_error(family, icmp_type, code, 1280, quoted, router, client(family, i))
            assert send(xc.dp, error, xc.b[0]) == a


def test_a_minimal_quote_is_enough(xc: Xc) -> None:
    """RFC 792: the IP header and the first 8 bytes of its payload, nothing more."""
    placed = establish(xc, 4)
    for i, (a, _) in placed.items():
        error = icmp_error(4, 3, 4, 1280, upload(4, i)[:28], ROUTER4, client(4, i))
        assert send(xc.dp, error, xc.b[1]) == a


def test_ipv6_quote_with_extension_headers(xc: Xc) -> None:
    """The quoted packet's own extension headers are walked: hop-by-hop, a first fragment and
    destination options after it."""
    placed = establish(xc, 6)
    for i, (a, _) in placed.items():
        tcp = frames.l4(frames.TCP, 20000 + i, 5201, b"u" * 1200)
        chain = (
            struct.pack("!BB6x", 44, 0)  # hop-by-hop, 8 bytes -> fragment
            + struct.pack("!BBHI", 60, 0, 1, 77 + i)  # fragment: offset 0, more fragments -> dst opts
            + struct.pack("!BB14x", frames.TCP, 1)  # destination options, 16 bytes -> TCP
        )
        quoted = struct.pack(
            "!IHBB16s16s", 6 << 28, len(chain) + len(tcp), 0, 64,
            ipaddress.IPv6Address(client(6, i)).packed, ipaddress.IPv6Address(SERVER6).packed,
        ) + chain + tcp  # fmt: skip
        error = icmp_error(6, 2, 0, 1280, quoted, ROUTER6, client(6, i))
        assert send(xc.dp, error, xc.b[2]) == a


def _unmatched_quotes(family: int, i: int) -> list[bytes]:
    """Quotes that name no session: another flow, a truncated or non-IP quote, a non-first
    fragment (no ports), a bad version, an endless extension header chain."""
    other = upload(family, 1000 + i)
    quotes = [other, other[:10], b"", b"\xff" * 48]
    if family == 4:
        fragment = bytearray(upload(family, i))
        fragment[6:8] = struct.pack("!H", 0x2000 | 185)  # more fragments, offset 1480
        quotes += [bytes(fragment), upload(family, i)[:22]]  # ports cut off
    else:
        ext = bytearray(upload(family, i)[:40]) + struct.pack("!BB6x", 0, 0) * 6  # hop-by-hop x 6
        ext[6] = 0
        quotes += [bytes(ext), upload(family, i)[:42]]
    return quotes


@pytest.mark.parametrize("family", [4, 6])
def test_unmatched_errors_take_the_normal_path(xc: Xc, family: int) -> None:
    placed = establish(xc, family, flows=6)
    router = ROUTER6 if family == 6 else ROUTER4
    icmp_type, code = (3, 4) if family == 4 else (2, 0)
    targets = set()
    for i in placed:
        for quoted in _unmatched_quotes(family, i):
            error = icmp_error(family, icmp_type, code, 1280, quoted, router, client(family, 0))
            before = xc.dp.event_stats()["icmp_error_followed"]
            targets.add(send(xc.dp, error, xc.b[0]))  # forwarded, not dropped
            assert xc.dp.event_stats()["icmp_error_followed"] == before
    # The normal path: one flow (router <-> client 0, ICMP), so one replica for all of them.
    assert len(targets) == 1 and targets <= set(xc.a)


def test_an_error_for_a_session_whose_replica_left_takes_the_normal_path(xc: Xc) -> None:
    placed = establish(xc, 4, flows=6)
    gone = xc.a[2]
    xc.dp.set_replicas(xc.name, Side.A, [ReplicaPort(i, f"a-{i}") for i in xc.a[:2]])
    for i, (a, _) in placed.items():
        target = send(xc.dp, icmp_error(4, 3, 4, 1280, upload(4, i), ROUTER4, client(4, i)), xc.b[0])
        assert target != gone
        if a != gone:
            assert target == a
