"""The flow event stream (bpf/lib/events.h, flexsfc.dataplane.events): what the program reports, and
that it reports nothing while nobody listens.

Program-level tests run crafted frames through BPF_PROG_TEST_RUN; the real-traffic tests send UDP
flows between network namespaces and check each reported replica against the replica that answered.
"""

import ipaddress
import os
import time

import pytest
from dp_traffic import ReplicaServer, UdpFlows, configure, family_of, resolve

from flexsfc.dataplane import maps
from flexsfc.dataplane.api import Neighbour, ReplicaPort, ReplicaState
from flexsfc.dataplane.events import EventStream, flow_of_frame, stream_lease
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.types import Side
from flexsfc.testing import frames, progtest

pytestmark = pytest.mark.root

XC = "xc-events"
K = maps.FlowEventKind


def _setup(host, dp: Dataplane, replicas: int = 3) -> tuple[int, list[int]]:
    a = host.add_port().ifindex
    b = [host.add_port().ifindex for _ in range(replicas)]
    dp.ensure_xc(XC, maglev_table_size=1021)
    dp.set_replicas(XC, Side.A, [ReplicaPort(a, "a")])
    dp.set_replicas(XC, Side.B, [ReplicaPort(i, f"b-{i}") for i in b])
    return a, b


def _flow(i: int) -> tuple[bytes, bytes]:
    src = str(ipaddress.IPv4Address("10.2.0.0") + i + 1)
    return (
        frames.flow_frame(src, "10.3.0.1", frames.UDP, 20000 + i, 53),
        frames.flow_frame("10.3.0.1", src, frames.UDP, 53, 20000 + i),
    )


def _records(stream: EventStream, kind: maps.FlowEventKind | None = None) -> list:
    out = stream.drain()
    return [r for r in out if kind is None or r.kind == kind]


def test_nothing_is_emitted_while_no_reader_is_attached(host, dataplane: Dataplane) -> None:
    a, _ = _setup(host, dataplane)
    for i in range(20):
        progtest.run(dataplane, _flow(i)[0], a)
    progtest.run(dataplane, frames.ethernet(0x88CC, bytes(46)), a)
    assert stream_lease(dataplane.pin_dir)[0] == 0
    # A reader attaching now finds an empty ring: nothing was written while the lease was 0.
    with EventStream(dataplane.pin_dir) as stream:
        assert stream.drain() == []
        progtest.run(dataplane, _flow(100)[0], a)
        assert [r.kind for r in stream.drain()] == [K.CREATED]
    # Let go: the stream is off at once (no other reader), and stays silent.
    assert stream_lease(dataplane.pin_dir) == (0, 0)
    progtest.run(dataplane, _flow(101)[0], a)
    with EventStream(dataplane.pin_dir) as stream:
        assert stream.drain() == []
    assert dataplane.event_stats()["events_lost"] == 0


def test_two_readers_share_the_stream_and_the_last_one_turns_it_off(host, dataplane: Dataplane) -> None:
    a, _ = _setup(host, dataplane)
    first = EventStream(dataplane.pin_dir)
    second = EventStream(dataplane.pin_dir)
    try:
        assert first.readers == 2
        first.close()
        assert stream_lease(dataplane.pin_dir)[1] == 1
        progtest.run(dataplane, _flow(1)[0], a)
        assert [r.kind for r in second.drain()] == [K.CREATED]
    finally:
        first.close()
        second.close()
    assert stream_lease(dataplane.pin_dir) == (0, 0)


def test_a_crashed_readers_lease_runs_out(host, dataplane: Dataplane, monkeypatch) -> None:
    from flexsfc.dataplane import events

    a, _ = _setup(host, dataplane)
    monkeypatch.setattr(events, "LEASE_SECONDS", 1.0)
    stream = EventStream(dataplane.pin_dir)
    stream._switch.release = lambda now: None  # type: ignore[method-assign]  # as if killed
    stream.close()
    lease, readers = stream_lease(dataplane.pin_dir)
    assert lease > 0 and readers == 1
    time.sleep(1.5)
    assert stream_lease(dataplane.pin_dir)[1] == 0
    progtest.run(dataplane, _flow(3)[0], a)  # after the lease: not emitted
    with EventStream(dataplane.pin_dir) as reader:
        assert reader.drain() == []


def test_created_events_name_the_replica_each_flow_reached(host, dataplane: Dataplane) -> None:
    a, _ = _setup(host, dataplane)
    with EventStream(dataplane.pin_dir) as stream:
        reached = {}
        for i in range(50):
            forward, reverse = _flow(i)
            verdict = progtest.run(dataplane, forward, a)
            reached[i] = verdict.target
            progtest.run(dataplane, reverse, verdict.target)  # confirms: no event
            progtest.run(dataplane, forward, a)  # an established session: no event
        created = _records(stream)
    assert [r.kind for r in created] == [K.CREATED] * 50
    xc_id = dataplane.list_xcs()[XC]
    for i, record in enumerate(created):
        assert record.xc_id == xc_id and record.side == 0 and record.ifindex == a
        assert (record.ifindex_a, record.ifindex_b) == (a, reached[i])
        src = str(ipaddress.IPv4Address("10.2.0.0") + i + 1)
        assert {(src, 20000 + i), ("10.3.0.1", 53)} == set(record.flow.endpoints())
        assert record.flow.proto_name == "udp"
    assert abs(created[0].time - time.time()) < 5


def test_removed_and_leaving_replicas_report_their_moves(host, dataplane: Dataplane) -> None:
    a, b = _setup(host, dataplane)
    with EventStream(dataplane.pin_dir) as stream:
        before = {i: progtest.run(dataplane, _flow(i)[0], a).target for i in range(60)}
        for i in range(60):
            progtest.run(dataplane, _flow(i)[1], before[i])
        stream.drain()
        gone, leaving = b[0], b[1]
        dataplane.set_replicas(
            XC, Side.B, [ReplicaPort(leaving, f"b-{leaving}", ReplicaState.LEAVING), ReplicaPort(b[2], "b-x")]
        )
        after = {i: progtest.run(dataplane, _flow(i)[0], a).target for i in range(60)}
        moves = _records(stream)
    moved = {i for i in before if before[i] in (gone, leaving)}
    assert moved and all(after[i] == b[2] for i in moved)
    assert all(r.kind == K.REHASHED for r in moves)
    assert len(moves) == len(moved)
    by_flow = {r.flow.endpoints()[0 if r.flow.src != "10.3.0.1" else 1][1] - 20000: r for r in moves}
    for i in moved:
        record = by_flow[i]
        assert record.old_ifindex == before[i] and record.ifindex_b == b[2] and record.moved_side == 1
        assert record.reason == ("removed" if before[i] == gone else "leaving")


def test_drops_report_reason_and_flow_within_the_budget(host, dataplane: Dataplane, one_cpu) -> None:
    # The budget is per CPU and per window of ~1.07 s: one CPU, and the flood may straddle two windows.
    a, _ = _setup(host, dataplane)
    dataplane.set_replicas(XC, Side.B, [])  # no replica: the next flow is dropped as no_replica
    with EventStream(dataplane.pin_dir, drop_budget=5) as stream:
        progtest.run(dataplane, frames.flow_frame("10.2.0.9", "10.3.0.1", frames.TCP, 4242, 443), a)
        progtest.run(dataplane, frames.ethernet(0x88CC, bytes(46)), a)
        progtest.run(dataplane, frames.ethernet(frames.ETH_P_IP, b"\x44" + bytes(39)), a)  # IHL 4
        drops = _records(stream, K.DROP)
        assert [(r.reason, r.ifindex) for r in drops] == [
            ("no_replica", a), ("not_ip", a), ("malformed", a),
        ]  # fmt: skip
        assert str(drops[0].flow) == "tcp 10.2.0.9:4242 10.3.0.1:443"
        assert drops[1].flow is None and drops[1].pkt_len == 60
        assert drops[2].flow is None  # an IPv4 header of 16 bytes names no flow
        # A flood: a few per window reach the ring, the rest are counted.
        suppressed = dataplane.event_stats()["events_suppressed"]
        for _ in range(50):
            progtest.run(dataplane, frames.ethernet(0x88CC, bytes(46)), a)
        flood = _records(stream, K.DROP)
    assert 1 <= len(flood) <= 2 * 5
    assert dataplane.event_stats()["events_suppressed"] - suppressed == 50 - len(flood)


def test_collisions_are_reported_with_both_replicas(host, dataplane: Dataplane) -> None:
    a1, a2 = host.add_port().ifindex, host.add_port().ifindex
    b = host.add_port().ifindex
    dataplane.ensure_xc(XC, maglev_table_size=1021)
    dataplane.set_replicas(XC, Side.A, [ReplicaPort(a1, "a1"), ReplicaPort(a2, "a2")])
    dataplane.set_replicas(XC, Side.B, [ReplicaPort(b, "b")])
    forward, reverse = _flow(5)
    with EventStream(dataplane.pin_dir) as stream:
        progtest.run(dataplane, forward, a1)
        progtest.run(dataplane, reverse, b)
        progtest.run(dataplane, forward, a2)  # the same 5-tuple from a second live replica
        (collision,) = _records(stream, K.COLLISION)
    assert (collision.ifindex, collision.old_ifindex, collision.ifindex_a) == (a2, a1, a1)
    assert collision.ifindex_b == b


def test_flow_of_frame_parses_what_it_can() -> None:
    frame = frames.flow_frame("fd00::1", "fd00::2", frames.UDP, 1000, 53)
    assert str(flow_of_frame(frame)) == "udp [fd00::1]:1000 [fd00::2]:53"
    assert flow_of_frame(b"\x00" * 10) is None
    arp = frames.arp(1, "02:00:00:00:00:01", "10.0.0.1", "00:00:00:00:00:00", "10.0.0.2")
    assert str(flow_of_frame(arp)) == "arp 10.0.0.1 10.0.0.2"


# ---- real traffic ---------------------------------------------------------------------------------------

CLIENT_IP, SERVER_IP = "10.19.0.1", "10.19.0.2"
CLIENT_MAC, SERVER_MAC = "02:c1:00:00:19:01", "02:5e:00:00:19:01"


def test_real_flows_are_reported_on_the_replica_that_answered_and_moves_on_scale_in(
    host, dataplane: Dataplane, netns_factory
) -> None:
    """24 UDP flows from a client to 3 replicas sharing IP and MAC: the created event of each flow
    names the replica that answered it (each server answers with its name); then a scale-in removes
    one replica and the moves of exactly its flows are reported, from it to where they went."""
    client_ns = netns_factory("evclient")
    client = host.add_port(client_ns, mac=CLIENT_MAC)
    configure(client_ns, client.pod_ifname, f"{CLIENT_IP}/24")
    dataplane.ensure_xc(XC)
    dataplane.set_replicas(XC, Side.A, [ReplicaPort(client.ifindex, "client")])
    dataplane.set_neighbours(XC, Side.A, [Neighbour(CLIENT_IP, CLIENT_MAC)])
    dataplane.set_neighbours(XC, Side.B, [Neighbour(SERVER_IP, SERVER_MAC)])
    ports: dict[str, int] = {}
    servers: dict[str, ReplicaServer] = {}
    flows = UdpFlows(client_ns, SERVER_IP)
    try:
        for i in range(3):
            ns = netns_factory(f"evr{i}")
            port = host.add_port(ns, mac=SERVER_MAC)
            configure(ns, port.pod_ifname, f"{SERVER_IP}/24")
            servers[f"r{i}"] = ReplicaServer(ns, f"r{i}", family_of(SERVER_IP))
            ports[f"r{i}"] = port.ifindex
        dataplane.set_replicas(XC, Side.B, [ReplicaPort(ifindex, name) for name, ifindex in ports.items()])
        name_of = {ifindex: name for name, ifindex in ports.items()}
        with EventStream(dataplane.pin_dir) as stream:
            resolve(client_ns, SERVER_IP)
            ids = flows.open(24, "ev")
            assert flows.round(ids) == 0 and flows.round(ids) == 0
            sport = {f: flows.sockets[f].getsockname()[1] for f in ids}
            time.sleep(0.1)
            created = {
                r.flow.sport if r.flow.src == CLIENT_IP else r.flow.dport: r
                for r in stream.poll(0.5)
                if r.kind == K.CREATED and r.flow.proto == 17 and r.flow.dport != 9
                and CLIENT_IP in (r.flow.src, r.flow.dst)
            }  # fmt: skip
            for f in ids:
                record = created[sport[f]]
                assert name_of[record.ifindex_b] == flows.replica_of(f), f
                assert record.ifindex_a == client.ifindex
            # Scale-in: r0 goes; its flows re-hash on their next packet and are reported moved.
            victim = max(ports, key=lambda n: sum(flows.replica_of(f) == n for f in ids))
            dataplane.set_replicas(
                XC, Side.B, [ReplicaPort(ifindex, name) for name, ifindex in ports.items() if name != victim]
            )
            stream.drain()
            flows.replicas.clear()
            assert flows.round(ids) == 0
            time.sleep(0.1)
            moves = [r for r in stream.poll(0.5) if r.kind == K.REHASHED]
    finally:
        flows.close()
        for server in servers.values():
            server.stop()
    victims = {sport[f] for f in ids if created[sport[f]].ifindex_b == ports[victim]}
    assert victims
    by_port = {r.flow.sport if r.flow.src == CLIENT_IP else r.flow.dport: r for r in moves}
    assert set(by_port) == victims
    for f in ids:
        if sport[f] in victims:
            record = by_port[sport[f]]
            assert record.old_ifindex == ports[victim] and record.reason == "removed"
            assert name_of[record.ifindex_b] == flows.replica_of(f) != victim


def test_a_data_plane_pinned_without_the_stream_upgrades_to_it(host, pin_dir: str) -> None:
    """A pin set of a version before the stream (its three maps missing): a reader is told to upgrade,
    the agent's upgrade creates the maps, moves the filters and keeps every other map (sessions too)."""
    from flexsfc.dataplane.api import DataplaneError
    from flexsfc.dataplane.pins import destroy_pinned

    new_maps = ["flow_events", "events_ctl", "events_cpu"]
    dp = Dataplane(pin_dir, session_capacity=65536)
    try:
        a, b = _setup(host, dp)
        target = progtest.run(dp, _flow(1)[0], a).target
        progtest.run(dp, _flow(1)[1], target)
        dp.close()
        for name in new_maps:
            os.unlink(os.path.join(pin_dir, name))
        with pytest.raises(DataplaneError, match="incomplete pinned state"):
            Dataplane(pin_dir)
        with pytest.raises(DataplaneError, match="no flow_events pin"):
            EventStream(pin_dir)
        dp = Dataplane(pin_dir, upgrade=True)
        report = dp.upgrade_report
        assert report is not None and report.upgraded
        assert sorted(report.created) == sorted(new_maps) and not report.replaced
        assert {"sessions", "ports", "maglev_pool"} <= set(report.kept)
        assert sorted(report.ports) == sorted([a, *b])
        assert progtest.run(dp, _flow(1)[0], a).target == target  # its session survived
        with EventStream(pin_dir) as stream:
            progtest.run(dp, _flow(2)[0], a)
            assert [r.kind for r in stream.drain()] == [K.CREATED]
    finally:
        dp.close()
        destroy_pinned(pin_dir)
