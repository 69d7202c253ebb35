"""IPv6 extension headers and fragments (BPF_PROG_TEST_RUN).

A Fragment header followed by a Destination Options header is legal and common with tunnels
(RFC 2473's encapsulation limit option): the first fragment carries the options and the upper-layer
header, the later fragments carry only data after their Fragment header. So the walk goes through
the headers of a first fragment and stops after the Fragment header of any other, and fragments are
matched under the Fragment header's next header, the value all of them carry.
"""

import ipaddress
import struct

import pytest

from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.types import Side
from flexsfc.testing import frames, progtest

pytestmark = pytest.mark.root

HOP, FRAGMENT, DSTOPTS = 0, 44, 60
SERVER = "fd03::1"


@pytest.fixture
def ports(host, dataplane) -> tuple[list[int], list[int]]:
    a = [host.add_port().ifindex for _ in range(2)]
    b = [host.add_port().ifindex for _ in range(4)]
    dataplane.ensure_xc("xc-ext", maglev_table_size=1021)
    dataplane.set_replicas("xc-ext", Side.A, [ReplicaPort(i, f"a-{i}") for i in a])
    dataplane.set_replicas("xc-ext", Side.B, [ReplicaPort(i, f"b-{i}") for i in b])
    return a, b


def client(i: int) -> str:
    return f"fd02::{i + 1:x}"


def packet(src: str, dst: str, first_header: int, body: bytes) -> bytes:
    header = struct.pack(
        "!IHBB16s16s", 6 << 28, len(body), first_header, 64,
        ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed,
    )  # fmt: skip
    return frames.ethernet(frames.ETH_P_IPV6, header + body)


def fragment_header(next_header: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", next_header, 0, offset // 8 << 3 | int(more), ident)


def dst_options(next_header: int, length: int = 8) -> bytes:
    """A Destination Options header of `length` bytes (a multiple of 8) holding PadN only
    (RFC 2473's tunnel encapsulation limit would be the other usual content)."""
    return struct.pack("!BBBB", next_header, length // 8 - 1, 1, length - 4) + bytes(length - 4)


def udp(i: int, payload: bytes = b"d" * 64) -> bytes:
    return frames.l4(frames.UDP, 30000 + i, 4789, payload)


def target(dp: Dataplane, frame: bytes, ifindex: int) -> int:
    verdict = progtest.run(dp, frame, ifindex)
    assert verdict.redirected and verdict.target is not None, (verdict.action, verdict.drops)
    return verdict.target


def test_a_first_fragment_with_destination_options_after_its_fragment_header_is_its_flow(
    dataplane, ports
) -> None:
    """Parsed through to the UDP ports: the first fragment rides the session of its flow, which an
    unfragmented packet of the same 5-tuple created (and the reply uses it)."""
    a, _ = ports
    for i in range(32):
        unfragmented = frames.flow_frame(client(i), SERVER, frames.UDP, 30000 + i, 4789)
        there = target(dataplane, unfragmented, a[0])
        first = packet(
            client(i),
            SERVER,
            FRAGMENT,
            fragment_header(DSTOPTS, 0, True, i) + dst_options(frames.UDP) + udp(i),
        )
        assert target(dataplane, first, a[0]) == there
        with_hop = packet(
            client(i), SERVER, HOP,
            dst_options(FRAGMENT) + fragment_header(DSTOPTS, 0, True, 1000 + i) + dst_options(frames.UDP, 24)
            + udp(i),
        )  # fmt: skip
        assert target(dataplane, with_hop, a[0]) == there
        reply = frames.flow_frame(SERVER, client(i), frames.UDP, 4789, 30000 + i)
        assert target(dataplane, reply, there) == a[0]
    assert dataplane.session_count("xc-ext") == 32


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"z" * 64, id="plain-data"),
        # Fragment data that reads like more extension headers: a long Destination Options header
        # (the old walk jumped 2 KiB into nowhere and dropped it as malformed) ...
        pytest.param(bytes([DSTOPTS, 255]) + b"z" * 62, id="looks-like-a-long-header"),
        # ... and a chain of them (dropped as too many extension headers).
        pytest.param(bytes([DSTOPTS, 0, 0, 0, 0, 0, 0, 0]) * 8, id="looks-like-a-header-chain"),
        # ... and a header followed by what looks like TCP ports.
        pytest.param(
            bytes([frames.TCP, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]) + b"z" * 52, id="tcp-ish"
        ),
    ],
)
def test_later_fragments_follow_the_first_fragments_replica(dataplane, ports, data: bytes) -> None:
    """Flows spread over four replicas, so following by luck would show."""
    a, b = ports
    placed = {}
    for i in range(40):
        first = packet(
            client(i),
            SERVER,
            FRAGMENT,
            fragment_header(DSTOPTS, 0, True, 500 + i) + dst_options(frames.UDP) + udp(i),
        )
        placed[i] = target(dataplane, first, a[i % 2])
    assert len(set(placed.values())) == len(b)
    followed = dataplane.event_stats()["frag_followed"]
    for i in range(40):
        middle = packet(client(i), SERVER, FRAGMENT, fragment_header(DSTOPTS, 72, True, 500 + i) + data)
        last = packet(
            client(i), SERVER, FRAGMENT, fragment_header(DSTOPTS, 72 + len(data), False, 500 + i) + data
        )
        assert target(dataplane, middle, a[i % 2]) == placed[i]
        assert target(dataplane, last, a[i % 2]) == placed[i]
    assert dataplane.event_stats()["frag_followed"] - followed == 80
    assert dataplane.drop_stats()["ipv6_ext"] == dataplane.drop_stats()["malformed"] == 0


def test_a_later_fragment_without_its_first_is_unknown_not_malformed(dataplane, ports) -> None:
    a, _ = ports
    orphan = packet(
        client(0), SERVER, FRAGMENT, fragment_header(DSTOPTS, 64, False, 9) + bytes([DSTOPTS, 255]) * 8
    )
    verdict = progtest.run(dataplane, orphan, a[0])
    assert verdict.dropped and verdict.drops == {"frag_unknown": 1}


def test_too_many_headers_before_the_upper_layer_are_still_refused(dataplane, ports) -> None:
    """The cap on the walk (4 headers) holds for unfragmented packets and first fragments."""
    a, _ = ports
    five = dst_options(DSTOPTS) * 4 + dst_options(frames.UDP) + udp(0)
    verdict = progtest.run(dataplane, packet(client(0), SERVER, DSTOPTS, five), a[0])
    assert verdict.dropped and verdict.drops == {"ipv6_ext": 1}
    first = fragment_header(DSTOPTS, 0, True, 3) + dst_options(DSTOPTS) * 3 + dst_options(frames.UDP) + udp(0)
    verdict = progtest.run(dataplane, packet(client(0), SERVER, FRAGMENT, first), a[0])
    assert verdict.dropped and verdict.drops == {"ipv6_ext": 1}
