"""Control-plane scale: the node agent's reconciler applying 1 to N cross-connections.

The real reconciler (flexsfc.agent.reconciler.Reconciler) drives a real data plane in a private
network namespace; every cross-connection joins two single-replica NFs (L3, one neighbour per side)
through real veths. For each size: the first reconcile (create every cross-connection, attach every
port, program tables and neighbours), a reconcile with nothing changed, one replica added to one NF
(the scale-out event at this size), and the reconcile that deletes everything.

One data plane holds at most flexsfc.dataplane.maps.MAX_XC - 1 cross-connections and POOL_SLOTS Maglev
slots, of which each cross-connection reserves 4 x M (two sides, double-buffered). The chain setting
maglevTableSize is therefore the small M = 1021 here (the default 16381 fits only 64 per node), so
1000 cross-connections fit; sizes beyond the capacity are reported as not possible rather than measured.
"""

import ipaddress
import statistics
import time
from typing import Any

from flexsfc.agent.reconciler import Reconciler
from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.bench.context import BenchContext, section_result
from flexsfc.dataplane import maps
from flexsfc.model.constants import DEFAULT_MAGLEV_TABLE_SIZE
from flexsfc.model.mac import derive_mac
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Mode, XcSide
from flexsfc.testing import netlab
from flexsfc.util.netns import in_netns

SIZES = (1, 10, 100, 1000)
TABLE_SIZE = 1021  # per-chain Maglev M, small so 1000 xcs fit the slot pool (4 x M slots each)


def _veths(host: netlab.Host, count: int) -> list[int]:
    """`count` veth pairs in the host namespace (host ends up, peers down there too); their ifindexes."""
    return [host.add_port().ifindex for _ in range(count)]


def _picture(
    n: int, ifindexes: list[int], extra: int | None
) -> tuple[list[CrossConnectionSpec], list[NfReplica], dict[str, ChainSettings]]:
    """n cross-connections nfa<i> <-> nfb<i>, one replica each (plus `extra` as a 2nd nfb0 replica)."""
    xcs, replicas = [], []
    for i in range(n):
        sides = []
        for label, host in (("a", ifindexes[2 * i]), ("b", ifindexes[2 * i + 1])):
            nf, mac = f"nf{label}{i}", derive_mac(f"cp-{label}{i}", "eth1")
            sides.append(XcSide(nf, "eth1", f"net-{nf}", Mode.L3, mac, addresses=(_addr(i, label),)))
            replicas.append(_replica(nf, f"{nf}-0", host, mac))
            if extra is not None and i == 0 and label == "b":
                replicas.append(_replica(nf, f"{nf}-1", extra, mac))
        xcs.append(CrossConnectionSpec(f"xc{i}", "bench", "bench", sides[0], sides[1]))
    return xcs, replicas, {"bench": ChainSettings(maglev_table_size=TABLE_SIZE)}


def _addr(i: int, label: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    return ipaddress.ip_interface(f"10.{100 + i // 250}.{i % 250}.{1 if label == 'a' else 2}/24")


def _replica(nf: str, pod: str, host_ifindex: int, mac: str) -> NfReplica:
    record = AttachmentRecord(
        container_id=pod,
        ifname="eth1",
        netns=f"/run/netns/{pod}",
        network=f"net-{nf}",
        host_ifname=f"h-{pod}",
        host_ifindex=host_ifindex,
        mac=mac,
        mode="L3",
    )
    return NfReplica(
        uid=f"uid-{pod}",
        namespace="bench",
        pod_name=pod,
        nf=nf,
        phase=ReplicaPhase.RUNNING,
        interfaces=(record,),
    )


def _limits() -> tuple[int, int]:
    # xc id 0 is reserved by the data plane ("no cross-connection"), so MAX_XC - 1 fit.
    return maps.MAX_XC - 1, maps.POOL_SLOTS // (4 * TABLE_SIZE)


def _measure(n: int, ifindexes: list[int], extra: int) -> dict[str, float]:
    with netlab.private_dataplane("bench-cp", session_capacity=1 << 16) as dp:
        reconciler = Reconciler(dp)
        xcs, replicas, settings = _picture(n, ifindexes, None)
        timings = {}
        for label, (want_xcs, want_replicas) in (
            ("first_ms", (xcs, replicas)),
            ("noop_ms", (xcs, replicas)),
            ("scale_out_one_ms", _picture(n, ifindexes, extra)[:2]),
            ("delete_all_ms", ([], [])),
        ):
            t0 = time.perf_counter_ns()
            reconciler.reconcile(want_xcs, want_replicas, chain_settings=settings)
            timings[label] = (time.perf_counter_ns() - t0) / 1e6
        return timings


def run(ctx: BenchContext) -> dict[str, Any]:
    started = time.monotonic()
    repetitions = ctx.pick(1, 3)
    max_xc, pool_xc = _limits()
    capacity = min(max_xc, pool_xc)
    sizes = [s for s in SIZES if s <= capacity]
    if ctx.quick:
        sizes = [s for s in sizes if s <= 100]
    not_possible = {
        str(s): f"over one data plane's capacity of {capacity} cross-connections "
        f"(usable xc ids {max_xc}, Maglev pool fits {pool_xc} at table size {TABLE_SIZE})"
        for s in SIZES
        if s > capacity
    }
    if capacity not in sizes and not ctx.quick and capacity < max(SIZES):
        sizes.append(capacity)  # the largest size one node holds
    note = (
        f"Maglev table size M = {TABLE_SIZE} per chain (spec.settings.maglevTableSize), not the default "
        f"{DEFAULT_MAGLEV_TABLE_SIZE}: each cross-connection reserves 4 x M of the "
        f"{maps.POOL_SLOTS} pool slots"
    )
    ctx.log(f"control_plane: {note}")
    rows = []
    with netlab.private_netns("cp", prefix="fbench") as ns, in_netns(ns):
        ifindexes = _veths(netlab.Host(ns), 2 * max(sizes) + 1)
        extra = ifindexes.pop()
        for n in sizes:
            ctx.log(f"control_plane: {n} cross-connections")
            samples = [_measure(n, ifindexes, extra) for _ in range(repetitions)]
            row: dict[str, Any] = {"cross_connections": n, "ports": 2 * n}
            for key in samples[0]:
                row[key] = statistics.median(s[key] for s in samples)
            row["first_ms_per_xc"] = row["first_ms"] / n
            rows.append(row)
    data = {
        "repetitions": repetitions,
        "maglev_table_size": TABLE_SIZE,
        "note": note,
        "rows": rows,
        "not_possible": not_possible,
    }
    return section_result(ctx, "control_plane", data, started)
