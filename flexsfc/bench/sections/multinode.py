"""Cross-node cross-connections (issue 16): what spanning nodes costs, against the plain kernel VXLAN
path it rides on and against the same-node path.

Topology: flexsfc.bench.topologies.multinode (two simulated nodes, each a network namespace with
its own data plane and VXLAN device, joined by an underlay veth; one client/server pod pair per
path). Paths, measured side by side:

- ``xc-cross-node``: client on node 1, server on node 2, one cross-connection spanning both;
- ``vxlan``: the floor, plain kernel VXLAN between the same nodes (a bridge and a regular VXLAN
  device per node, no eBPF; see the topology's docstring for why this floor);
- ``xc-same-node``: both pods on node 1, today's path;
- ``xc-same-node-baseline`` with ``--baseline REV``: the same-node path with the data plane of git
  revision REV (e.g. HEAD while the tree has uncommitted changes, or the commit before a change):
  the before/after check "the same-node path keeps its figures".

Measured the way the traffic section measures (flexsfc.bench.tools.loadgen: iperf3 TCP, 64 B UDP
from unthrottled iperf3 senders, sockperf 64 B ping-pong latency): every round measures one metric
on every path back to back in a shuffled order, so each ratio pairs two figures taken seconds apart
and the machine's drift cancels out; ratios are the median of the rounds' paired ratios with the
sign-test 95 % confidence interval (flexsfc.bench.stats), judged met / missed / unresolved.

"Remote replica -> first packet": a client on node 1 sends 64 B UDP at a steady rate into a
cross-connection whose side B is empty on node 1 (its packets are dropped there) while node 2 already
serves the server pod; the clock starts when node 1's set_replicas adds the server as a replica of
node 2 and stops when the server pod's socket has the first datagram. Between repetitions the replica
is removed again and the path must fall silent. With one replica on the side, every flow goes to
it: the figure is the data plane's reaction, not the wait for a new flow that hashes to a new
replica (that wait depends on the flow rate; see the reaction section). The sender's packet
interval (`sender_interval_ms`) bounds the resolution.
"""

import contextlib
import functools
import os
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from flexsfc.bench import stats
from flexsfc.bench.context import BenchContext, SectionSkipped, section_result
from flexsfc.bench.stats import SPREAD, median, summary
from flexsfc.bench.tools import loadgen, udpflow
from flexsfc.bench.topologies.multinode import (
    FIRST_XC,
    BaselineTree,
    MultiNodePath,
    MultiNodeTopology,
    PodPair,
    describe,
)
from flexsfc.bench.topologies.pods import SERVER_IP
from flexsfc.model.types import Side
from flexsfc.util.netns import in_netns

CROSS, FLOOR, SAME, BASE = (p.value for p in MultiNodePath)
METRICS = ("tcp_gbps", "udp_pps", "lat_p50_us")
LOWER_IS_BETTER = {"lat_p50_us"}

# Issue 16's targets: the cross-node cross-connection against the plain VXLAN path.
TARGET_MIN_RATIO = 0.95  # TCP and 64 B pps
TARGET_MAX_LATENCY_RATIO = 1.05
TARGET_FIRST_PACKET_MS = 20.0
# "The same-node path keeps its figures": no worse than the baseline by more than the margin the
# data-plane targets of the same-node path were judged at (3 %).
KEEP_MIN_RATIO = 0.97
KEEP_MAX_LATENCY_RATIO = 1.03

DEFAULT_ROUNDS = 15  # 4th smallest to 4th largest of 15 pairs: a 96.5 % interval
MAX_UDP_SENDERS = 4
FIRST_PACKET_PORT = 5399
FIRST_PACKET_PPS = 10000.0  # one datagram every 0.1 ms: the measurement's resolution
QUIET_S = 0.1  # no datagram for this long: the replica is out of the path
QUIET_TIMEOUT_S = 3.0
FIRST_PACKET_TIMEOUT_S = 2.0
SENDER_START_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Params:
    rounds: int
    tcp_seconds: int
    udp_seconds: int
    latency_seconds: int  # sockperf -t
    first_packet_repetitions: int
    udp_senders: int | None = None  # None: calibrated on the floor path


def params_for(ctx: BenchContext) -> Params:
    if ctx.quick:
        params = Params(rounds=1, tcp_seconds=1, udp_seconds=1, latency_seconds=1, first_packet_repetitions=3)
    else:
        params = Params(
            rounds=DEFAULT_ROUNDS,
            tcp_seconds=2,
            udp_seconds=2,
            latency_seconds=2,
            first_packet_repetitions=30,
        )
    overrides: dict[str, Any] = {}
    if ctx.traffic_rounds is not None:
        overrides["rounds"] = ctx.traffic_rounds
    if ctx.udp_senders is not None:
        overrides["udp_senders"] = ctx.udp_senders
    return Params(**{**asdict(params), **overrides})


Samples = dict[str, dict[str, list[Any]]]  # path -> metric -> one value per round (None: tool failed)


def run(ctx: BenchContext) -> dict[str, Any]:
    missing = [tool for tool in ("iperf3", "sockperf") if shutil.which(tool) is None]
    if missing:
        raise SectionSkipped(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    started = time.monotonic()
    params = params_for(ctx)
    baseline_rev = ctx.baseline
    paths = [p for p in MultiNodePath if (p is not MultiNodePath.BASELINE or baseline_rev)]
    names = [p.value for p in paths]
    samples: Samples = {name: {m: [] for m in (*METRICS, "lat_p99_us", "udp_loss")} for name in names}
    errors: list[str] = []
    order: list[str] = []
    rng = random.Random(ctx.seed)
    calibration: dict[str, Any] = {"senders": params.udp_senders, "fixed": True}
    with contextlib.ExitStack() as stack:
        baseline = stack.enter_context(BaselineTree(baseline_rev)) if baseline_rev else None
        ctx.log(f"multinode: building 2 nodes and paths {names}")
        topo = stack.enter_context(
            MultiNodeTopology(paths=tuple(paths), first_packet=True, baseline=baseline)
        )
        setup = describe(topo)
        running: dict[str, PodPair] = {}
        for name in names:
            pair = topo.pairs[name]
            stack.enter_context(loadgen.Servers(pair, params.udp_senders or _max_senders()))
            if pair.reachable():
                running[name] = pair
            else:
                errors.append(f"{name}: server unreachable from the client; path not measured")
        if FLOOR not in running:
            raise loadgen.ToolError(
                "the plain VXLAN path (the reference) does not pass traffic: " + "; ".join(errors)
            )
        if params.udp_senders is None:
            calibration = _calibrate_senders(running[FLOOR], params, ctx, errors)
            params = Params(**{**asdict(params), "udp_senders": calibration["senders"]})
        for round_index in range(params.rounds):
            ctx.log(f"multinode: round {round_index + 1}/{params.rounds}")
            for kind, measure in _KINDS.items():
                shuffled = list(running)
                rng.shuffle(shuffled)
                for name in shuffled:
                    order.append(f"{round_index}:{kind}:{name}")
                    measure(running[name], params, samples[name], errors)
            for name in names:  # a path that could not run leaves its rounds empty, still aligned
                if name not in running:
                    for series in samples[name].values():
                        series.append(None)
        first_packet = _first_packet(topo, params.first_packet_repetitions, ctx, errors)
        drops = topo.drops()
    data = {
        "params": asdict(params),
        "setup": setup,
        "paths": names,
        "udp_sender_calibration": calibration,
        "values": {
            "tcp_gbps": "iperf3 TCP, one stream, received Gbit/s",
            "udp_pps": "64 B UDP from unthrottled iperf3 senders, packets/s received",
            "lat_p50_us": "sockperf ping-pong 64 B, median one-way latency (half the round trip), µs",
        },
        "order": order,
        "samples": samples,
        "summary": {name: {m: summary(v) for m, v in per.items()} for name, per in samples.items()},
        "paired": _paired(samples),
        "confidence": stats.CONFIDENCE,
        "targets": _targets(samples, first_packet),
        "first_packet": first_packet,
        "drops_by_node": drops,
        "errors": errors,
    }
    return section_result(ctx, "multinode", data, started)


# -- throughput and latency ------------------------------------------------------------------------


def _max_senders() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_UDP_SENDERS))


def _calibrate_senders(pair: PodPair, params: Params, ctx: BenchContext, errors: list[str]) -> dict[str, Any]:
    """The 64 B sender count that delivers the most packets on the floor path (as the traffic section
    does on its reference path); counts alternate over two passes so that drift hits them alike."""
    delivered: dict[int, list[float]] = {n: [] for n in range(1, _max_senders() + 1)}
    for _ in range(1 if ctx.quick else 2):
        for n in delivered:
            run = _attempt(
                pair,
                f"udp calibration ({n})",
                functools.partial(loadgen.udp_pps, pair, params.udp_seconds, n),
                errors,
            )
            if run is not None:
                delivered[n].append(run.rate)
    medians = {n: statistics.median(rates) for n, rates in delivered.items() if rates}
    senders = max(medians, key=lambda n: medians[n]) if medians else 1
    by_count = ", ".join(f"{n}: {r / 1e3:.0f}" for n, r in medians.items())
    ctx.log(f"multinode: {senders} UDP sender(s) (kpps by count: {by_count})")
    return {"senders": senders, "on": pair.name, "delivered_pps": {str(n): r for n, r in delivered.items()}}


def _attempt(pair: PodPair, metric: str, fn: Callable[[], Any], errors: list[str]) -> Any:
    """A failing tool records None (that round's pairs are left out) and the error."""
    try:
        return fn()
    except loadgen.ToolError as exc:
        errors.append(f"{pair.name} {metric}: {exc}")
        return None


def _tcp(pair: PodPair, params: Params, bucket: dict[str, list[Any]], errors: list[str]) -> None:
    tcp = _attempt(pair, "tcp", lambda: loadgen.tcp_gbps(pair, params.tcp_seconds), errors)
    bucket["tcp_gbps"].append(tcp.rate if tcp else None)


def _udp(pair: PodPair, params: Params, bucket: dict[str, list[Any]], errors: list[str]) -> None:
    senders = params.udp_senders or 1
    udp = _attempt(pair, "udp", lambda: loadgen.udp_pps(pair, params.udp_seconds, senders), errors)
    bucket["udp_pps"].append(udp.rate if udp else None)
    bucket["udp_loss"].append(udp.loss if udp else None)


def _latency(pair: PodPair, params: Params, bucket: dict[str, list[Any]], errors: list[str]) -> None:
    lat = _attempt(pair, "latency", lambda: loadgen.latency_us(pair, params.latency_seconds), errors)
    bucket["lat_p50_us"].append(lat["p50"] if lat else None)
    bucket["lat_p99_us"].append(lat["p99"] if lat else None)


# One metric at a time over all paths (see the module docstring); each appends exactly one value per
# series, so the rounds' pairs line up.
_KINDS: dict[str, Callable[[PodPair, Params, dict[str, list[Any]], list[str]], None]] = {
    "tcp": _tcp,
    "udp": _udp,
    "latency": _latency,
}

# (path, reference): the cross-node targets, the cost of spanning nodes, and the before/after check.
COMPARISONS = ((CROSS, FLOOR), (SAME, FLOOR), (CROSS, SAME), (SAME, BASE))


def _paired(samples: Samples) -> dict[str, dict[str, Any]]:
    """Per comparison "path/reference" and metric: median paired ratio with its interval."""
    out: dict[str, dict[str, Any]] = {}
    for path, reference in COMPARISONS:
        if path not in samples or reference not in samples:
            continue
        per: dict[str, Any] = {}
        for metric in METRICS:
            est = stats.estimate(stats.ratios(samples[path][metric], samples[reference][metric]))
            per[metric] = est.as_dict() if est else None
        out[f"{path}/{reference}"] = per
    return out


def _verdict(samples: Samples, path: str, reference: str, metric: str, bound: float) -> dict[str, Any]:
    if path not in samples or reference not in samples:
        return {"bound": bound, "verdict": stats.Verdict.NO_DATA.value}
    est = stats.estimate(stats.ratios(samples[path][metric], samples[reference][metric]))
    judge = stats.at_most if metric in LOWER_IS_BETTER else stats.at_least
    return {"bound": bound, "verdict": judge(est, bound).value, "ratio": est.as_dict() if est else None}


def _targets(samples: Samples, first_packet: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cross_node_vs_vxlan": {
            "tcp_gbps": _verdict(samples, CROSS, FLOOR, "tcp_gbps", TARGET_MIN_RATIO),
            "udp_pps": _verdict(samples, CROSS, FLOOR, "udp_pps", TARGET_MIN_RATIO),
            "lat_p50_us": _verdict(samples, CROSS, FLOOR, "lat_p50_us", TARGET_MAX_LATENCY_RATIO),
        },
        "first_packet_median_ms": {
            "bound": TARGET_FIRST_PACKET_MS,
            "median": first_packet["replica_added_to_first_packet_ms"]["median"] if first_packet else None,
            "verdict": (
                stats.Verdict.NO_DATA.value
                if not first_packet or first_packet["replica_added_to_first_packet_ms"]["median"] is None
                else (
                    stats.Verdict.MET.value
                    if first_packet["replica_added_to_first_packet_ms"]["median"] <= TARGET_FIRST_PACKET_MS
                    else stats.Verdict.MISSED.value
                )
            ),
        },
    }
    if BASE in samples:
        out["same_node_vs_baseline"] = {
            "tcp_gbps": _verdict(samples, SAME, BASE, "tcp_gbps", KEEP_MIN_RATIO),
            "udp_pps": _verdict(samples, SAME, BASE, "udp_pps", KEEP_MIN_RATIO),
            "lat_p50_us": _verdict(samples, SAME, BASE, "lat_p50_us", KEEP_MAX_LATENCY_RATIO),
        }
    return out


# -- remote replica -> first packet ----------------------------------------------------------------


def _first_packet(
    topo: MultiNodeTopology, repetitions: int, ctx: BenchContext, errors: list[str]
) -> dict[str, Any]:
    pair = topo.pairs["first"]
    with in_netns(pair.server):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # lives in the server pod
    sock.setblocking(False)
    sock.bind(("0.0.0.0", FIRST_PACKET_PORT))
    first_ms: list[float] = []
    call_ms: list[float] = []
    drops_before = topo.drops()
    not_quiet = 0
    with tempfile.TemporaryDirectory(prefix="flexsfc-multinode-") as scratch:
        report = os.path.join(scratch, "sender.json")
        # One sender for all repetitions, longer than they can take; stopped at the end.
        seconds = repetitions * (QUIET_TIMEOUT_S + FIRST_PACKET_TIMEOUT_S + 1) + SENDER_START_TIMEOUT_S + 10
        argv = ["ip", "netns", "exec", pair.client, sys.executable, "-m", udpflow.__name__, "send"]
        argv += [SERVER_IP, str(FIRST_PACKET_PORT), "--flows", "1", "--pps", str(FIRST_PACKET_PPS)]
        argv += ["--seconds", str(seconds), "--out", report]
        sender = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        sender_started = time.monotonic()
        try:
            with topo.on_node("node1") as dp:
                # Warm-up: the sender is sending (its start-up is no part of a figure) and the path
                # works before the first repetition takes the replica out again.
                dp.set_replicas(FIRST_XC, Side.B, [topo.remote_server()])
                ready, _, _ = select.select([sock], [], [], SENDER_START_TIMEOUT_S)
                if not ready:
                    raise RuntimeError(f"first packet: nothing arrived within {SENDER_START_TIMEOUT_S} s")
                for rep in range(repetitions):
                    dp.set_replicas(FIRST_XC, Side.B, [])
                    if not _quiet(sock):
                        not_quiet += 1
                        errors.append(
                            f"first packet rep {rep}: datagrams still arrive with no replica on node 1"
                        )
                        continue
                    if sender.poll() is not None:
                        reason = sender.stderr.read()[-400:] if sender.stderr else ""
                        raise RuntimeError(f"first-packet sender exited ({sender.returncode}): {reason}")
                    t0 = time.monotonic()
                    dp.set_replicas(FIRST_XC, Side.B, [topo.remote_server()])
                    t1 = time.monotonic()
                    ready, _, _ = select.select([sock], [], [], FIRST_PACKET_TIMEOUT_S)
                    t2 = time.monotonic()
                    call_ms.append((t1 - t0) * 1e3)
                    if not ready:
                        errors.append(f"first packet rep {rep}: nothing within {FIRST_PACKET_TIMEOUT_S} s")
                        continue
                    first_ms.append((t2 - t0) * 1e3)
                dp.set_replicas(FIRST_XC, Side.B, [])
        finally:
            sender.kill()
            sender.wait(timeout=5)
            sock.close()
        sent_for = time.monotonic() - sender_started
    # Drops other than "no replica" (the point of the empty side) would be packets lost as the
    # replica comes and goes: the path must never drop them for want of its tunnel state.
    drops = {
        node: {
            k: v - drops_before[node].get(k, 0)
            for k, v in counters.items()
            if v != drops_before[node].get(k, 0)
        }
        for node, counters in topo.drops().items()
    }
    ctx.log(
        f"multinode: remote replica -> first packet median {median(first_ms) or float('nan'):.2f} ms "
        f"over {len(first_ms)} repetitions"
    )
    return {
        "repetitions": repetitions,
        "sender_pps": FIRST_PACKET_PPS,
        "sender_interval_ms": 1e3 / FIRST_PACKET_PPS,
        "sender_seconds": round(sent_for, 1),
        "replica_added_to_first_packet_ms": summary(first_ms, SPREAD, ndigits=3),
        "set_replicas_ms": summary(call_ms, SPREAD, ndigits=3),
        "not_quiet_repetitions": not_quiet,
        "drops_during": drops,
        "samples_ms": [round(v, 3) for v in first_ms],
    }


def _quiet(sock: socket.socket) -> bool:
    """Drain the socket until no datagram arrives for QUIET_S (True), or QUIET_TIMEOUT_S passes."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], QUIET_S)
        if not ready:
            return True
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(2048)
    return False
