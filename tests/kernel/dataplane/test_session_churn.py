"""Sessions are not lost to churn: a one-way flood cannot evict an established session.

With one LRU for every flow, each first packet inserted and the LRU was the only expiry: a flood of
new flows (spoofed sources need no answer) turned the table over, evicted established sessions that
were idle meanwhile, and after a scale-out their next packet re-hashed through the changed Maglev
table and moved to another replica. Now a flow's first packets go to an LRU of unconfirmed flows, a
packet from the other side moves it to the confirmed table (a hash that nothing evicts), and the
agent frees confirmed sessions idle for longer than their protocol's timeout.

Everything runs through BPF_PROG_TEST_RUN with real frames, pinned to one CPU (the flow cache is per
CPU).
"""

import random
import time
from collections.abc import Iterator

import pytest

from flexsfc.dataplane import libbpf, maps
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.dataplane.sessions import session_clock
from flexsfc.model.types import SessionTimeouts, Side
from flexsfc.testing import frames, progtest

pytestmark = pytest.mark.root

XC = "xc-churn"
CAPACITY = 4096
ESTABLISHED = 1000
CLIENT_NET, SERVER = "10.60", "10.99.0.1"


@pytest.fixture
def small(host, pin_dir, one_cpu) -> Iterator[Dataplane]:
    dp = Dataplane(pin_dir, session_capacity=CAPACITY, seed=4242)
    try:
        yield dp
    finally:
        dp.close()


def _flow(i: int, proto: int) -> tuple[bytes, bytes]:
    client = f"{CLIENT_NET}.{i // 250}.{i % 250 + 1}"
    return (
        frames.flow_frame(client, SERVER, proto, 20000 + i, 443),
        frames.flow_frame(SERVER, client, proto, 443, 20000 + i),
    )


def _target(dp: Dataplane, frame: bytes, ifindex: int) -> int:
    verdict = progtest.run(dp, frame, ifindex)
    assert verdict.redirected and verdict.target is not None, verdict
    return verdict.target


def _fast(dp: Dataplane, frame: bytes, ifindex: int) -> int:
    """One run, verdict only (the flood: no counter reads per packet)."""
    return libbpf.prog_test_run(dp.prog_fd, frame, ifindex=ifindex).retval


def _setup(host, dp: Dataplane) -> tuple[int, list[int]]:
    client = host.add_port().ifindex
    servers = [host.add_port().ifindex for _ in range(2)]
    dp.ensure_xc(XC, maglev_table_size=1021)
    dp.set_replicas(XC, Side.A, [ReplicaPort(client, "client")])
    dp.set_replicas(XC, Side.B, [ReplicaPort(i, f"s-{i}") for i in servers])
    return client, servers


def _establish(dp: Dataplane, client: int) -> dict[int, tuple[bytes, bytes, int]]:
    """ESTABLISHED sessions, half TCP half UDP, each answered by its replica: flow -> (frames, replica)."""
    flows = {}
    for i in range(ESTABLISHED):
        forward, reply = _flow(i, frames.TCP if i % 2 else frames.UDP)
        server = _target(dp, forward, client)
        assert _target(dp, reply, server) == client
        flows[i] = (forward, reply, server)
    return flows


def _flood(dp: Dataplane, client: int, count: int, active: dict[int, tuple[bytes, bytes, int]]) -> None:
    """`count` one-way flows with spoofed sources from the client side; every 64th flood packet,
    one of the `active` sessions sends a packet each way."""
    rng = random.Random(7)
    keys = list(active)
    for n in range(count):
        src = f"172.{16 + n % 16}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        frame = frames.flow_frame(src, SERVER, frames.UDP, rng.randrange(1024, 65535), 53)
        # Twice: a kernel LRU gives an entry seen once no second chance, so only flows with more
        # than one packet (a retransmitted SYN, a second datagram) push established entries out.
        assert _fast(dp, frame, client) == progtest.TC_ACT_REDIRECT
        assert _fast(dp, frame, client) == progtest.TC_ACT_REDIRECT
        if keys and n % 64 == 0:
            forward, reply, server = active[keys[(n // 64) % len(keys)]]
            assert _target(dp, forward, client) == server
            assert _target(dp, reply, server) == client


def test_a_flood_of_twice_the_capacity_after_a_scale_out_moves_no_established_session(host, small) -> None:
    dp = small
    client, servers = _setup(host, dp)
    flows = _establish(dp, client)
    assert dp.session_count(XC) == ESTABLISHED  # all confirmed, counted without a walk
    events = dp.event_stats()
    assert events["session_confirmed"] == ESTABLISHED and events["session_created"] == ESTABLISHED

    # Scale-out: two more replicas, a changed table. Sessions re-hashed now would move.
    added = [host.add_port().ifindex for _ in range(2)]
    dp.set_replicas(XC, Side.B, [ReplicaPort(i, f"s-{i}") for i in servers + added])
    active = {i: flows[i] for i in range(0, ESTABLISHED, 2)}  # the other half idles throughout
    _flood(dp, client, 2 * CAPACITY, active)

    stats = dp.port_stats()
    assert all(stats[i].sessions_created > 0 for i in added), "the flood must reach the new replicas"
    table = dp.session_table_stats()
    assert table["created"] >= ESTABLISHED + 2 * CAPACITY - 8  # a few spoofed tuples may repeat
    assert table["confirmed"] == ESTABLISHED and table["table_full"] == 0
    assert table["unconfirmed"] <= dp.unconfirmed_capacity[0]
    assert table["unconfirmed_dropped"] > CAPACITY  # the flood churned its own LRU, nothing else

    moved = 0
    for forward, reply, server in flows.values():
        moved += _target(dp, forward, client) != server
        moved += _target(dp, reply, server) != client
    assert moved == 0
    assert dp.session_count(XC) == ESTABLISHED


def test_idle_sessions_are_freed_by_the_sweep_after_their_protocols_timeout_and_counted(host, small) -> None:
    dp = small
    client, _ = _setup(host, dp)
    flows = _establish(dp, client)
    udp = [i for i in flows if i % 2 == 0]
    # Nothing is idle long enough yet: the default timeouts are minutes.
    report = dp.sweep_sessions({})
    assert report.total_expired == 0 and report.scanned == ESTABLISHED

    # Judged one UDP timeout (120 s) plus two ticks later, only the UDP sessions are expired.
    later = session_clock() + SessionTimeouts().udp + 3
    report = dp.sweep_sessions_by_id({}, SessionTimeouts(), now=later)
    assert report.expired == {"tcp": 0, "udp": len(udp), "icmp": 0, "other": 0}
    assert dp.session_count(XC) == ESTABLISHED - len(udp)
    assert dp.session_table_stats()["expired"] == len(udp)
    assert libbpf.map_info(dp.map_fd("sessions")).max_entries == CAPACITY
    assert len(dp.sessions(XC)) == ESTABLISHED - len(udp)

    # An expired session's next packet starts over as an unconfirmed flow.
    forward = flows[udp[0]][0]
    _target(dp, forward, client)
    assert not next(s for s in dp.sessions(XC) if 20000 + udp[0] in (s.port_lo, s.port_hi)).confirmed


def test_a_chains_short_timeout_frees_idle_sessions_and_keeps_active_ones(host, small) -> None:
    dp = small
    client, _ = _setup(host, dp)
    active = {i: _flow(i, frames.UDP) for i in range(10)}
    idle = {i: _flow(i, frames.UDP) for i in range(10, 20)}
    servers = {}
    for i, (forward, reply) in {**active, **idle}.items():
        servers[i] = _target(dp, forward, client)
        _target(dp, reply, servers[i])
    assert dp.session_count(XC) == 20
    short = SessionTimeouts(udp=1)  # expired after 1 s + up to two ticks of the 1.07 s clock
    deadline = time.monotonic() + 4.5
    while time.monotonic() < deadline:
        for i, (forward, _reply) in active.items():
            assert _target(dp, forward, client) == servers[i]
        time.sleep(0.4)
    report = dp.sweep_sessions({XC: short})
    assert report.expired["udp"] == len(idle)
    assert dp.session_count(XC) == len(active)
    remaining = {max(s.port_lo, s.port_hi) - 20000 for s in dp.sessions(XC) if s.confirmed}
    assert remaining == set(active)


def test_a_full_confirmed_table_leaves_new_flows_unconfirmed_and_counts_it(host, pin_dir, one_cpu) -> None:
    dp = Dataplane(pin_dir, session_capacity=64, unconfirmed_capacity=4096, seed=1)
    try:
        client, _ = _setup(host, dp)
        targets = []
        for i in range(100):
            forward, reply = _flow(i, frames.UDP)
            server = _target(dp, forward, client)
            assert _target(dp, reply, server) == client  # forwarded either way
            targets.append((forward, reply, server))
        events = dp.event_stats()
        assert events["session_confirmed"] == 64 == dp.session_count()
        assert events["session_table_full"] == 100 - 64
        # The unconfirmed ones still keep their replica (their LRU entry).
        for forward, _reply, server in targets:
            assert _target(dp, forward, client) == server
        assert maps.Event.SESSION_TABLE_FULL.name.lower() in events
    finally:
        dp.close()
