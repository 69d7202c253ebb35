"""Sessions under churn: the issue-17 flood figure, and the per-packet cost of the session design
against a baseline object (the previous one), interleaved.

    python -m flexsfc.bench.sections.session_churn [--quick] [--baseline OBJECT.o]

- `flood`: a data plane of `capacity` confirmed sessions, 1000 established bidirectional sessions
  (half TCP, half UDP) over 2 replicas, a scale-out to 4 (the Maglev table changes), then a spoofed
  one-way flood of 2 x capacity new flows (two packets each) spread over `seconds`, during which
  half of the established sessions send a packet each way about twice a second and the other half
  stay idle, and the agent's sweep runs every 10 s with the default timeouts. Then every
  established session sends once each way: how many moved. With `--baseline`, the same run with
  the baseline program (its own LRU session table of the same capacity, every other map shared).
- `cost`: BPF_PROG_TEST_RUN average per frame kind, this program and the baseline attached to the
  same maps, in alternation round by round with a 2-instruction reference program; ratios of the
  medians of the net figures. Kinds: an established flow (IPv4/UDP, IPv6/TCP: flow-cache hits), the
  session-table path of an established flow (`table_hit_udp4`: a first fragment of it, which skips
  the flow cache and also records the fragment, the same work in both programs), and the first
  packet of a new flow (repeat = 1 on 500 distinct flows per round, their median, raw).
"""

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flexsfc.dataplane import libbpf, maps
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.types import Side
from flexsfc.testing import bpfasm, frames, netlab
from flexsfc.util.netns import in_netns

XC = "bench-churn"
SERVER = "10.99.0.1"
REDIRECT = 7


@contextmanager
def _baseline(dp: Dataplane, path: str) -> Iterator[int]:
    """The program of the object at `path`, loaded against `dp`'s maps wherever their layout is the
    same (ports, slots, Maglev tables: the same forwarding state), its own maps otherwise."""
    obj = libbpf.BpfObject(path)
    try:
        ncpu = libbpf.possible_cpus()
        for name in obj.map_names():
            if "." in name:
                continue
            if name == "flow_cache":
                obj.set_max_entries(name, maps.FLOW_CACHE_SIZE * ncpu)  # its own: other semantics
                continue
            if name == "port_slots":
                obj.set_max_entries(name, maps.MAX_PORTS * ncpu)
            if name in ("sessions", "sessions6"):
                obj.set_max_entries(name, libbpf.map_info(dp.map_fd(name)).max_entries)
                continue  # the baseline keeps its own session tables
            if name in maps.MAP_NAMES:
                pinned = libbpf.MapSpec.of(libbpf.map_info(dp.map_fd(name)))
                if pinned == obj.map_spec(name):
                    obj.reuse_map_fd(name, dp.map_fd(name))
        obj.load()
        yield obj.program_fd(maps.PROGRAM_NAME)
    finally:
        obj.close()


def _target(dp: Dataplane, prog_fd: int, frame: bytes, ifindex: int) -> int | None:
    before = {i: s.to_port_packets for i, s in dp.port_stats().items()}
    result = libbpf.prog_test_run(prog_fd, frame, ifindex=ifindex)
    if result.retval != REDIRECT:
        return None
    after = dp.port_stats()
    changed = [i for i, s in after.items() if s.to_port_packets != before.get(i, 0)]
    return changed[0] if len(changed) == 1 else None


def _flow(i: int) -> tuple[bytes, bytes]:
    proto = frames.TCP if i % 2 else frames.UDP
    client = f"10.60.{i // 250}.{i % 250 + 1}"
    return (
        frames.flow_frame(client, SERVER, proto, 20000 + i, 443),
        frames.flow_frame(SERVER, client, proto, 443, 20000 + i),
    )


def _flood_run(
    dp: Dataplane, prog_fd: int, host: netlab.Host, capacity: int, seconds: float
) -> dict[str, Any]:
    client = host.add_port().ifindex
    servers = [host.add_port().ifindex for _ in range(2)]
    dp.ensure_xc(XC, maglev_table_size=1021)
    dp.set_replicas(XC, Side.A, [ReplicaPort(client, "client")])
    dp.set_replicas(XC, Side.B, [ReplicaPort(i, f"s-{i}") for i in servers])
    established = {}
    for i in range(1000):
        forward, reply = _flow(i)
        server = _target(dp, prog_fd, forward, client)
        assert server is not None and _target(dp, prog_fd, reply, server) == client
        established[i] = (forward, reply, server)
    added = [host.add_port().ifindex for _ in range(2)]
    dp.set_replicas(XC, Side.B, [ReplicaPort(i, f"s-{i}") for i in servers + added])
    active = [established[i] for i in range(0, 1000, 2)]
    flood = 2 * capacity
    rng = random.Random(11)
    started = time.monotonic()
    next_sweep = started + 10
    sweeps: list[float] = []
    for n in range(flood):
        src = f"172.{16 + n % 16}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        frame = frames.flow_frame(src, SERVER, frames.UDP, rng.randrange(1024, 65535), 53)
        # Two packets per spoofed flow (a retransmitted SYN, a second datagram): an LRU gives a
        # one-packet entry no second chance, so only flows seen twice push older entries out.
        libbpf.prog_test_run(prog_fd, frame, ifindex=client)
        libbpf.prog_test_run(prog_fd, frame, ifindex=client)
        due = started + seconds * (n + 1) / flood  # the flood is spread over `seconds`
        if n % max(flood // (int(seconds) * 2 or 1), 1) == 0:  # ~2 rounds of active packets per second
            for forward, reply, server in active:
                libbpf.prog_test_run(prog_fd, forward, ifindex=client)
                libbpf.prog_test_run(prog_fd, reply, ifindex=server)
        now = time.monotonic()
        if now >= next_sweep:
            sweeps.append(dp.sweep_sessions({}).seconds)
            next_sweep += 10
        if due > now:
            time.sleep(due - now)
    elapsed = time.monotonic() - started
    moved = {"active": 0, "idle": 0}
    for i, (forward, reply, server) in established.items():
        kind = "active" if i % 2 == 0 else "idle"
        moved[kind] += _target(dp, prog_fd, forward, client) != server
        moved[kind] += _target(dp, prog_fd, reply, server) != client
    stats = dp.port_stats()
    return {
        "capacity": capacity,
        "established": 1000,
        "flood_flows": flood,
        "flood_seconds": round(elapsed, 1),
        "new_replicas_got_flood_flows": all(stats[i].sessions_created > 0 for i in added),
        "moved_sessions": {k: v // 2 if v % 2 == 0 else v / 2 for k, v in moved.items()},
        "moved_packets": moved,
        "sweeps_s": [round(s, 4) for s in sweeps],
    }


def flood(capacity: int, seconds: float, baseline: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in ["new", *(["baseline"] if baseline else [])]:
        with (
            netlab.private_netns("churn", prefix="chbench") as ns,
            in_netns(ns),
            netlab.private_dataplane("bench-churn", session_capacity=capacity) as dp,
        ):
            host = netlab.Host(ns)
            if variant == "new":
                out[variant] = _flood_run(dp, dp.prog_fd, host, capacity, seconds)
                out[variant]["session_table"] = dp.session_table_stats()
            else:
                assert baseline is not None
                with _baseline(dp, baseline) as prog:
                    out[variant] = _flood_run(dp, prog, host, capacity, seconds)
    return out


def cost(baseline: str, rounds: int, repeat: int) -> dict[str, Any]:
    with netlab.private_xc(XC, "ccost", "chcost", "bench-ccost", session_capacity=1 << 16) as (dp, a, _b):
        kinds = {
            "established_udp4": frames.flow_frame("10.2.0.1", "10.3.0.1", frames.UDP, 1000, 53),
            "established_tcp6": frames.flow_frame("fd00::1", "fd00::2", frames.TCP, 1000, 443),
            "table_hit_udp4": frames.ethernet(
                0x0800,
                frames.ipv4(
                    "10.2.0.1", "10.3.0.1", frames.UDP, frames.l4(frames.UDP, 1000, 53), ident=7, mf=True
                ),
            ),
        }
        reply4 = frames.flow_frame("10.3.0.1", "10.2.0.1", frames.UDP, 53, 1000)
        reply6 = frames.flow_frame("fd00::2", "fd00::1", frames.TCP, 443, 1000)
        reference = bpfasm.load_constant_program(0)
        net: dict[str, dict[str, list[float]]] = {"new": {}, "baseline": {}}
        try:
            with _baseline(dp, baseline) as old:
                progs = {"new": dp.prog_fd, "baseline": old}
                for prog in progs.values():  # establish both directions in each program's tables
                    for frame in (kinds["established_udp4"], kinds["established_tcp6"]):
                        libbpf.prog_test_run(prog, frame, ifindex=a)
                    libbpf.prog_test_run(
                        prog, reply4, ifindex=_target(dp, prog, kinds["established_udp4"], a) or 0
                    )
                    libbpf.prog_test_run(
                        prog, reply6, ifindex=_target(dp, prog, kinds["established_tcp6"], a) or 0
                    )
                rng = random.Random(3)
                for r in range(rounds):
                    ref = libbpf.prog_test_run(reference, kinds["established_udp4"], ifindex=a, repeat=repeat)
                    order = ["new", "baseline"] if r % 2 == 0 else ["baseline", "new"]
                    for variant in order:
                        for kind, frame in kinds.items():
                            cost_ns = libbpf.prog_test_run(
                                progs[variant], frame, ifindex=a, repeat=repeat
                            ).duration_ns
                            net[variant].setdefault(kind, []).append(cost_ns - ref.duration_ns)
                        creates = []
                        for _ in range(500):
                            src = f"10.{rng.randrange(4, 250)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                            frame = frames.flow_frame(
                                src, "10.3.0.1", frames.UDP, rng.randrange(1024, 65535), 53
                            )
                            creates.append(libbpf.prog_test_run(progs[variant], frame, ifindex=a).duration_ns)
                        # The median: one run's 1 ns-resolution time is noisy, and a few of them
                        # catch an interrupt or a page of the map being touched first.
                        net[variant].setdefault("new_flow_raw", []).append(statistics.median(creates))
        finally:
            os.close(reference)
        medians = {v: {k: statistics.median(x) for k, x in d.items()} for v, d in net.items()}
        return {
            "rounds": rounds,
            "repeat": repeat,
            "median_ns": medians,
            "ratio_new_over_baseline": {
                k: round(medians["new"][k] / medians["baseline"][k], 3) for k in medians["new"]
            },
            "per_round": net,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", help="baseline eBPF object (e.g. the previous xconnect.bpf.o)")
    parser.add_argument("--only", choices=["flood", "cost"])
    parser.add_argument("--capacity", type=int)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if args.only in (None, "flood"):
        capacity = args.capacity or (16384 if args.quick else 65536)
        seconds = args.seconds or (5.0 if args.quick else 60.0)
        out["flood"] = flood(capacity, seconds, args.baseline)
    if args.only in (None, "cost") and args.baseline:
        out["cost"] = cost(args.baseline, 5 if args.quick else 15, 50_000 if args.quick else 200_000)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
