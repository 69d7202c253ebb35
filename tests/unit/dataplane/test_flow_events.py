"""Flow event records without a kernel: decoding (the ctypes mirrors), the flow parsed out of a dropped
frame, and `flexsfc flows`' filters and output."""

import ctypes
import ipaddress
import json
import socket

import click
import pytest

from flexsfc.cli.flows_filter import EventFilter, FlowFilter, parse_flow
from flexsfc.cli.flows_names import Names, PortName
from flexsfc.cli.flows_render import Recreated, to_json, to_text
from flexsfc.dataplane import maps
from flexsfc.dataplane.events import decode, flow_of_frame
from flexsfc.testing import frames


def _record(kind: maps.FlowEventKind, **fields: int) -> bytes:
    ev = maps.FlowEvent(time_ns=2_000_000_000, kind=kind, **fields)
    ev.key.xc, ev.key.proto, ev.key.family = 3, 17, maps.FAMILY_V4
    ev.key.addr_lo[:4] = ipaddress.IPv4Address("10.0.0.1").packed
    ev.key.addr_hi[:4] = ipaddress.IPv4Address("10.0.0.2").packed
    ev.key.port_lo, ev.key.port_hi = socket.htons(5000), socket.htons(80)
    return bytes(ev)


NAMES = Names(
    ports={
        11: PortName(11, "default/client-1", "client", "eth1", "default/c-fw", "A"),
        21: PortName(21, "default/fw-a", "firewall", "eth1", "default/c-fw", "B"),
        22: PortName(22, "default/fw-b", "firewall", "eth1", "default/c-fw", "B"),
    },
    xcs={3: "default/c-fw"},
    chains={"default/c-fw": "chain-1"},
)


def test_a_move_decodes_with_its_reason_and_replicas() -> None:
    raw = _record(
        maps.FlowEventKind.REHASHED, reason=maps.MoveReason.LEAVING, side=0, moved_side=1, ifindex=11,
        old_ifindex=21, ifindex_a=11, ifindex_b=22,
    )  # fmt: skip
    record = decode(raw, clock_offset=100.0)
    assert record.time == 102.0 and record.kind_name == "rehashed" and record.reason == "leaving"
    assert str(record.flow) == "udp 10.0.0.1:5000 10.0.0.2:80"
    assert to_text(record, NAMES, None).endswith("B fw-a/eth1 -> fw-b/eth1 (leaving)")
    as_json = to_json(record, NAMES, None)
    assert as_json["old"]["pod"] == "default/fw-a" and as_json["b"]["pod"] == "default/fw-b"
    assert as_json["chain"] == "chain-1" and as_json["movedSide"] == "B"
    json.dumps(as_json)


def test_a_drop_decodes_the_packet_and_its_flow() -> None:
    frame = frames.flow_frame("fd00::1", "fd00::2", frames.TCP, 1234, 443)
    rec = maps.FlowEventDrop()
    rec.ev.kind, rec.ev.reason, rec.ev.ifindex = maps.FlowEventKind.DROP, maps.DropReason.NO_REPLICA, 21
    rec.ev.pkt_len = rec.ev.snap_len = len(frame)
    ctypes.memmove(rec.packet, frame, len(frame))
    record = decode(bytes(rec), 0.0)
    assert record.reason == "no_replica" and record.packet == frame
    assert str(record.flow) == "tcp [fd00::1]:1234 [fd00::2]:443"
    assert to_json(record, NAMES, None)["xc"] == "default/c-fw"  # the ingress port's


def test_frames_parse_as_far_as_they_go() -> None:
    truncated = frames.flow_frame("10.0.0.1", "10.0.0.2", frames.UDP, 1, 2)[:36]  # 2 bytes of UDP
    assert str(flow_of_frame(truncated)) == "udp 10.0.0.1 10.0.0.2"
    assert flow_of_frame(truncated[:30]) is None
    assert flow_of_frame(frames.ethernet(frames.ETH_P_IP, b"\x44" + bytes(39))) is None
    fragment = frames.ethernet(
        frames.ETH_P_IP, frames.ipv4("10.0.0.1", "10.0.0.2", 17, bytes(16), frag_offset=8)
    )
    assert str(flow_of_frame(fragment)) == "udp 10.0.0.1 10.0.0.2"  # a later fragment has no ports


def test_flow_filters_match_either_direction() -> None:
    assert parse_flow("udp 10.0.0.2:80 10.0.0.1") == (17, ("10.0.0.2", 80), ("10.0.0.1", 0))
    with pytest.raises(click.BadParameter):
        parse_flow("udp")
    record = decode(_record(maps.FlowEventKind.CREATED, ifindex=11, ifindex_a=11, ifindex_b=21), 0.0)
    assert FlowFilter.build("udp 10.0.0.2:80 10.0.0.1:5000", None, None, None, None).matches_flow(record.flow)
    assert not FlowFilter.build(None, "tcp", None, None, None).matches_flow(record.flow)
    assert FlowFilter.build(None, None, None, None, 5000).matches_flow(record.flow)
    assert EventFilter(nf="firewall", pod="fw-a", chain="chain-1").matches(record, NAMES)
    assert not EventFilter(pod="fw-b").matches(record, NAMES)
    assert not EventFilter(kinds={maps.FlowEventKind.DROP}).matches(record, NAMES)


def test_a_flow_created_again_is_marked_recreated() -> None:
    seen = Recreated()
    first = decode(_record(maps.FlowEventKind.CREATED, ifindex=11, ifindex_a=11, ifindex_b=21), 0.0)
    again = decode(_record(maps.FlowEventKind.CREATED, ifindex=11, ifindex_a=11, ifindex_b=22), 0.0)
    assert seen.check(first) is None
    assert seen.check(again) == (11, 21)
    assert "(recreated: was A client-1/eth1 <-> B fw-a/eth1)" in to_text(again, NAMES, (11, 21))
