"""Data-plane microbenchmarks: per-packet program cost, replica add/remove time, Maglev build time,
share of flows remapped on scale-out (Maglev vs modulo).

Each function returns a plain dict; `python -m flexsfc.bench.dataplane_micro [--quick]` prints them
all as JSON. Everything runs in private network namespaces with a private pin directory, all removed
afterwards. Variants that are compared are interleaved round by round (the machine drifts).
"""

import argparse
import contextlib
import json
import math
import os
import random
import socket
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from flexsfc.bench.context import BenchContext, section_result
from flexsfc.bench.stats import DECILES, summary
from flexsfc.bench.tools import progstats
from flexsfc.dataplane import libbpf, maps, tcfilter
from flexsfc.dataplane.api import Neighbour, ReplicaPort
from flexsfc.dataplane.events import EventStream
from flexsfc.dataplane.facade import TC_HANDLE, TC_PRIORITY, Dataplane
from flexsfc.dataplane.maglev import build_table
from flexsfc.model.constants import DEFAULT_MAGLEV_TABLE_SIZE
from flexsfc.model.types import Side
from flexsfc.testing import bpfasm, frames, netlab, progtest
from flexsfc.util.netns import in_netns

TARGETS = {
    "session_hit_ns_test_run": 60,
    "live_path_ns": 100,
    "replica_add_remove_ms": 1.0,
    "remap_excess_over_ideal": 0.01,
}


def _stats(values: list[float]) -> dict[str, float | int | None]:
    return summary(values, DECILES)


# ---- per-packet cost through BPF_PROG_TEST_RUN ----------------------------------------------------------


def per_packet_cost(rounds: int = 7, repeat: int = 200_000) -> dict[str, Any]:
    """Average program run time (ns, kernel-measured) per frame kind, variants interleaved per round.

    A 2-instruction program run the same way measures test_run's own per-run overhead; the net
    figures subtract it round by round.
    """
    micro_xc = netlab.private_xc("bench", "cost", "dpbench", "bench-micro", session_capacity=1 << 16)
    with micro_xc as (dp, a, _b):
        dp.set_neighbours("bench", Side.B, [Neighbour("10.3.0.1", "02:00:00:00:00:b1")])
        variants: dict[str, bytes] = {
            "session_hit_udp4": frames.flow_frame("10.2.0.1", "10.3.0.1", frames.UDP, 1000, 53),
            "session_hit_tcp6": frames.flow_frame("fd00::1", "fd00::2", frames.TCP, 1000, 443),
            "arp_reply": frames.arp(1, "02:00:00:00:00:a1", "10.2.0.1", "00:00:00:00:00:00", "10.3.0.1"),
            "drop_not_ip": frames.ethernet(0x88CC, bytes(46)),
        }
        raw: dict[str, list[float]] = {name: [] for name in ["reference", *variants]}
        net: dict[str, list[float]] = {name: [] for name in variants}
        new_session: list[float] = []
        # The same frames with the flow event stream on (a reader attached, events.py), interleaved
        # with the runs above round by round, the order alternating: the stream must cost nothing
        # while off, and only its event paths (new flows, drops) may pay while on.
        events_on: dict[str, list[float]] = {name: [] for name in [*variants, "new_session_udp4"]}
        events_off: dict[str, list[float]] = {name: [] for name in [*variants, "new_session_udp4"]}
        rng = random.Random(1)
        reference_fd = bpfasm.load_constant_program(0)
        try:
            for round_no in range(rounds):
                ref = libbpf.prog_test_run(
                    reference_fd, variants["session_hit_udp4"], ifindex=a, repeat=repeat
                )
                raw["reference"].append(ref.duration_ns)
                for on in (False, True) if round_no % 2 == 0 else (True, False):
                    stream = EventStream(dp.pin_dir) if on else None
                    try:
                        for name, frame in variants.items():
                            cost = libbpf.prog_test_run(
                                dp.prog_fd, frame, ifindex=a, repeat=repeat
                            ).duration_ns
                            (events_on if on else events_off)[name].append(cost)
                            if not on:
                                raw[name].append(cost)
                                net[name].append(cost - ref.duration_ns)
                        fresh = _new_sessions(dp, a, rng)
                        (events_on if on else events_off)["new_session_udp4"].append(fresh)
                        if not on:
                            new_session.append(fresh)
                    finally:
                        if stream is not None:
                            stream.drain()
                            stream.close()
        finally:
            os.close(reference_fd)
        paired = {
            name: _stats([on - off for on, off in zip(events_on[name], events_off[name], strict=True)])
            for name in events_on
        }
        return {
            "unit": "ns per packet (BPF_PROG_TEST_RUN average over `repeat` runs)",
            "rounds": rounds,
            "repeat": repeat,
            "raw": {name: _stats(values) for name, values in raw.items()},
            "net_of_reference": {name: _stats(values) for name, values in net.items()},
            "new_session_udp4_raw": _stats(new_session),
            "target_session_hit_ns": TARGETS["session_hit_ns_test_run"],
            "flow_events": {
                "what": "the same frames with the flow event stream off and on (a reader attached), "
                "interleaved per round; drops on: over the drop budget after the first ones (counted)",
                "off": {name: _stats(values) for name, values in events_off.items()},
                "on": {name: _stats(values) for name, values in events_on.items()},
                "on_minus_off": paired,
                "events_lost": dp.event_stats()["events_lost"],
            },
        }


def _new_sessions(dp: Dataplane, ifindex: int, rng: random.Random, count: int = 2000) -> float:
    """Mean cost of a packet that creates a session: repeat=1 on distinct flows (coarse: 1 ns clock)."""
    durations = []
    for _ in range(count):
        src = f"10.{rng.randrange(4, 250)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        frame = frames.flow_frame(src, "10.3.0.1", frames.UDP, rng.randrange(1024, 65535), 53)
        durations.append(libbpf.prog_test_run(dp.prog_fd, frame, ifindex=ifindex, repeat=1).duration_ns)
    return statistics.mean(durations)


# ---- per-packet cost in the live path (bpf_stats) ------------------------------------------------------


def _prog_counters(prog_fd: int) -> progstats.ProgCounters:
    return progstats.counters([libbpf.prog_id(prog_fd)])


class _PacedSender:
    """64 UDP flows sent one packet at a time from Python: the CPU runs the interpreter between two
    packets, so the program finds its maps' cache lines cold (sparse traffic)."""

    def __init__(self, client_ns: str, server_ns: str, flows: int) -> None:
        with in_netns(server_ns):
            self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sink.bind(("0.0.0.0", LIVE_UDP_PORT))
            self.sink.settimeout(0.2)
        with in_netns(client_ns):
            self.senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows)]
        self.stop = threading.Event()
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()

    def _drain(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                self.sink.recv(2048)

    def run(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        payload = bytes(18)
        while time.monotonic() < deadline:
            for sock in self.senders:
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    sock.sendto(payload, (LIVE_SERVER_IP, LIVE_UDP_PORT))

    def close(self) -> None:
        self.stop.set()
        self.drainer.join(timeout=2)
        self.sink.close()
        for sock in self.senders:
            sock.close()


class _LineRateSender:
    """Unthrottled 64 B UDP from parallel iperf3 streams (C senders keeping one CPU busy): the loaded
    data plane, where per-packet cost matters."""

    def __init__(self, client_ns: str, server_ns: str, streams: int) -> None:
        self.client_ns, self.streams = client_ns, streams
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, "iperf3", "-s", "-p", str(LIVE_IPERF_PORT)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)  # let it bind

    def run(self, seconds: float) -> None:
        argv = ["iperf3", "-c", LIVE_SERVER_IP, "-p", str(LIVE_IPERF_PORT), "-u", "-b", "0"]
        # iperf3 hangs on a fractional -t: whole seconds only.
        argv += ["-l", "64", "-P", str(self.streams), "-t", str(max(1, math.ceil(seconds)))]
        subprocess.run(
            ["ip", "netns", "exec", self.client_ns, *argv],
            capture_output=True,
            timeout=seconds + 15,
            check=True,
        )

    def close(self) -> None:
        self.server.kill()
        self.server.wait()


LIVE_SERVER_IP = "10.8.0.2"
LIVE_UDP_PORT = 9000
LIVE_IPERF_PORT = 5299


def live_path_cost(seconds: float = 2.0, flows: int = 64, rounds: int = 3) -> dict[str, Any]:
    """Program run time per packet on real UDP traffic (client netns -> xc -> server netns), from the
    kernel's bpf_stats (run_time_ns / run_cnt).

    Two traffic sources: line rate (parallel iperf3 streams, 64 B) and paced (Python, 64 flows, caches
    cold between packets). Each round attaches in turn, on the client port: a bare
    `bpf_redirect_peer(server)` program, the cross-connection, and (paced only: it breaks iperf3's
    control connection) an empty program, whose run time is what bpf_stats itself adds per run.
    """
    client_mac, server_mac = "02:c1:00:00:00:01", "02:5e:00:00:00:01"
    with (
        netlab.private_netns("host", prefix="dpbench") as host_ns,
        netlab.private_netns("client", prefix="dpbench") as client_ns,
        netlab.private_netns("server", prefix="dpbench") as server_ns,
        in_netns(host_ns),
        netlab.private_dataplane("bench-micro", session_capacity=1 << 16) as dp,
    ):
        host = netlab.Host(host_ns)
        client = host.add_port(client_ns, "eth1", client_mac).ifindex
        server = host.add_port(server_ns, "eth1", server_mac).ifindex
        for ns, cidr in ((client_ns, "10.8.0.1/24"), (server_ns, f"{LIVE_SERVER_IP}/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", cidr, "dev", "eth1"], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "eth1", "up"], check=True)
        dp.ensure_xc("live")
        dp.set_replicas("live", Side.A, [ReplicaPort(client, "client")])
        dp.set_replicas("live", Side.B, [ReplicaPort(server, "server")])
        dp.set_neighbours("live", Side.A, [Neighbour("10.8.0.1", client_mac)])
        dp.set_neighbours("live", Side.B, [Neighbour(LIVE_SERVER_IP, server_mac)])
        tag = tcfilter.ingress_tag(client, handle=TC_HANDLE, priority=TC_PRIORITY)
        assert tag, "the data plane attaches tagged filters"
        references = {
            "bare_redirect_peer": bpfasm.load_redirect_program(server, peer=True),
            "empty": bpfasm.load_constant_program(progtest.TC_ACT_SHOT),
        }
        # The empty program drops everything: iperf3's control connection would not survive it.
        programs = {
            "line_rate": {"xconnect": dp.prog_fd, "bare_redirect_peer": references["bare_redirect_peer"]},
            "paced": {"xconnect": dp.prog_fd, **references},
        }
        sources: dict[str, Any] = {}
        try:
            sources["line_rate"] = _LineRateSender(client_ns, server_ns, streams=8)
            sources["paced"] = _PacedSender(client_ns, server_ns, flows)
            sources["paced"].run(0.2)  # ARP (answered by the cross-connection) and the sessions

            def measure(prog_fd: int, source: Any) -> float | None:
                tcfilter.attach_ingress(
                    client, prog_fd, handle=TC_HANDLE, priority=TC_PRIORITY, tag=tag, name=maps.PROGRAM_NAME
                )
                before = _prog_counters(prog_fd)
                source.run(seconds)
                return (_prog_counters(prog_fd) - before).ns_per_run

            results: dict[str, dict[str, list[float]]] = {name: {} for name in sources}
            with progstats.stats_enabled():
                for round_ in range(rounds + 1):  # round 0 warms up and is not recorded
                    for name, source in sources.items():
                        for label, fd in programs[name].items():
                            value = measure(fd, source)
                            if value is not None and round_ > 0:
                                results[name].setdefault(label, []).append(value)
        finally:
            tcfilter.attach_ingress(
                client, dp.prog_fd, handle=TC_HANDLE, priority=TC_PRIORITY, tag=tag, name=maps.PROGRAM_NAME
            )
            for fd in references.values():
                os.close(fd)
            for source in sources.values():
                source.close()

        out: dict[str, Any] = {
            "unit": "ns per packet (run_time_ns / run_cnt, bpf_stats)",
            "target_ns": TARGETS["live_path_ns"],
            "flows_paced": flows,
            "iperf3_streams_line_rate": 8,
        }
        for name, series in results.items():
            section = {label: _stats(values) for label, values in series.items()}
            ours, bare = series.get("xconnect", []), series.get("bare_redirect_peer", [])
            if ours and bare:
                section["xconnect_minus_bare"] = _stats([o - b for o, b in zip(ours, bare, strict=False)])
            if ours and series.get("empty"):
                floor = series["empty"]
                section["xconnect_minus_empty"] = _stats([o - e for o, e in zip(ours, floor, strict=False)])
            out[name] = section
        return out


# ---- control-plane costs ----------------------------------------------------------------------------------


def replica_add_remove(replicas: int = 4, repetitions: int = 50) -> dict[str, Any]:
    """Time of set_replicas adding one replica (attach + Maglev rebuild + swap) and removing one.

    The set rolls: each round adds a replica with a fresh identity and removes the oldest, so every
    call builds a table for a set never seen before (the Maglev memo cannot short-cut it).
    """
    with (
        netlab.private_netns("ctl", prefix="dpbench") as ns,
        in_netns(ns),
        netlab.private_dataplane("bench-micro", session_capacity=1 << 16) as dp,
    ):
        host = netlab.Host(ns)
        a = host.add_port().ifindex
        free = [host.add_port().ifindex for _ in range(replicas + 1)]
        dp.ensure_xc("ctl", maglev_table_size=DEFAULT_MAGLEV_TABLE_SIZE)
        dp.set_replicas("ctl", Side.A, [ReplicaPort(a, "a")])
        current = [ReplicaPort(free.pop(), f"pod-{uuid.uuid4().hex[:8]}") for _ in range(replicas)]
        dp.set_replicas("ctl", Side.B, current)
        add_ms, remove_ms = [], []
        for _ in range(repetitions):
            current = [*current, ReplicaPort(free.pop(), f"pod-{uuid.uuid4().hex[:8]}")]
            t0 = time.perf_counter()
            dp.set_replicas("ctl", Side.B, current)
            t1 = time.perf_counter()
            oldest, current = current[0], current[1:]
            dp.set_replicas("ctl", Side.B, current)
            t2 = time.perf_counter()
            free.append(oldest.ifindex)
            add_ms.append((t1 - t0) * 1e3)
            remove_ms.append((t2 - t1) * 1e3)
        return {
            "unit": "ms per set_replicas call (Python; tc attach/detach and Maglev build at the default M)",
            "replicas_before": replicas,
            "add_ms": _stats(add_ms),
            "remove_ms": _stats(remove_ms),
            "target_ms": TARGETS["replica_add_remove_ms"],
        }


def maglev_build(
    sizes: tuple[int, ...] = (4093, 16381), counts: tuple[int, ...] = (4, 16, 64), reps: int = 30
) -> dict[str, Any]:
    """Median time to build one Maglev table (native fill helper, Python permutation set-up)."""
    out: dict[str, Any] = {"unit": "microseconds per table"}
    for size in sizes:
        for count in counts:
            if count * 10 > size:
                continue
            times = []
            for _ in range(reps):
                # Fresh identities each time: neither the table memo nor the permutation cache helps.
                ids = [f"pod-{uuid.uuid4()}" for _ in range(count)]
                t0 = time.perf_counter()
                build_table(ids, size)
                times.append((time.perf_counter() - t0) * 1e6)
            out[f"M{size}_N{count}"] = _stats(times)
    return out


def remap_share(
    max_replicas: int = 16, flows: int = 200_000, size: int = DEFAULT_MAGLEV_TABLE_SIZE
) -> dict[str, Any]:
    """Share of flow hashes that change replica on N -> N+1: Maglev table vs hash % N."""
    hashes = np.random.default_rng(7).integers(0, 2**32, size=flows, dtype=np.uint64)
    rows = []
    for n in range(1, max_replicas):
        ids_n = [f"pod-{i:03d}" for i in range(n)]
        ids_n1 = [f"pod-{i:03d}" for i in range(n + 1)]
        names_n = np.array(ids_n)[build_table(ids_n, size)][(hashes % size).astype(np.int64)]
        names_n1 = np.array(ids_n1)[build_table(ids_n1, size)][(hashes % size).astype(np.int64)]
        maglev = float(np.mean(names_n != names_n1))
        modulo = float(np.mean((hashes % n) != (hashes % (n + 1))))
        ideal = 1 / (n + 1)
        rows.append(
            {
                "n": n,
                "maglev": maglev,
                "modulo": modulo,
                "ideal": ideal,
                "within_target": maglev <= ideal + 0.01,
            }
        )
    return {"unit": "share of flows changing replica", "table_size": size, "flows": flows, "rows": rows}


SECTIONS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "per_packet_cost": lambda quick: per_packet_cost(
        rounds=3 if quick else 7, repeat=50_000 if quick else 200_000
    ),
    "live_path_cost": lambda quick: live_path_cost(seconds=1.0 if quick else 2.0, rounds=2 if quick else 5),
    "replica_add_remove": lambda quick: replica_add_remove(repetitions=10 if quick else 50),
    "maglev_build": lambda quick: maglev_build(reps=5 if quick else 30),
    "remap_share": lambda quick: remap_share(flows=50_000 if quick else 200_000),
}


def run_all(quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    return {name: fn(quick) for name, fn in SECTIONS.items() if not only or name in only}


def run(ctx: BenchContext) -> dict[str, Any]:
    """Entry point of `flexsfc bench` (section "dataplane_micro"): every part, in the common envelope."""
    started = time.monotonic()
    return section_result(ctx, "dataplane_micro", run_all(quick=ctx.quick), started)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flexsfc.bench.dataplane_micro", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (seconds instead of a minute)")
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only these sections")
    args = parser.parse_args()
    print(json.dumps(run_all(args.quick, args.only), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
