"""What a cross-connection costs per packet, by part of the path: CPU-clock samples of the whole
machine (flexsfc.bench.tools.perfsample) during 64 B UDP through a 2-pod chain, divided by the
packets sent.

Four ways from the client pod to the server pod, alternated in a shuffled order every round:

- ``veth``: a veth pair straight between the pods (the reference);
- ``xc-peer``: host-side veths joined by a flexsfc cross-connection forwarding with bpf_redirect_peer;
- ``bare-peer``: the same topology with the client port's filter running a 4-instruction
  `bpf_redirect_peer(server port)` instead: what any TC-ingress cross-connection pays with no logic;
- ``xc-peer-tcx``: the cross-connection program attached to both ports through TCX links
  (BPF_TCX_INGRESS, kernel >= 6.6) instead of the data plane's cls_bpf filters: no classify loop,
  but no classid tag either, so the program finds its port through the port maps.

The kernel functions the cross-connection adds fall into four groups (GROUPS): the program itself,
the TC ingress hook that runs it (with TCX, `tcx_run` is inlined into the receive loop), the
redirect into the next pod, and the receive loop that runs once more per packet. Each is reported in
ns per packet, and the cross-connection's figure over the veth of the same round. The rates
themselves are not compared here (that is the `traffic` section): the point is to resolve costs of a
few tens of ns that paired rates on this VM cannot.

One sender: the sender's CPU then runs the whole forwarding path in its softirq and nothing is
overloaded (more senders overload the receiver, and cache misses inflate every figure).
"""

import contextlib
import functools
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from typing import Any

from flexsfc.bench.context import BenchContext, SectionSkipped, section_result
from flexsfc.bench.stats import median, summary
from flexsfc.bench.tools import loadgen, perfsample
from flexsfc.bench.topologies.chain import ChainTopology
from flexsfc.bench.topologies.pods import Variant
from flexsfc.dataplane import libbpf, maps, tcfilter
from flexsfc.dataplane.facade import TC_HANDLE, TC_PRIORITY
from flexsfc.testing import bpfasm

SENDERS = 1

# Part of the path -> kernel functions (perf names without compiler clone suffixes).
GROUPS: dict[str, re.Pattern[str]] = {
    "program": re.compile(r"^bpf_prog_"),
    "tc_hook": re.compile(
        r"^(tc_run|tcx_run|sch_handle_ingress|tcf_classify|__tcf_classify|cls_bpf_classify)$"
    ),
    "redirect": re.compile(
        r"^(skb_do_redirect|dev_get_by_index_rcu|bpf_redirect|bpf_redirect_peer|__bpf_redirect\w*)$"
    ),
    "receive_loop": re.compile(r"^__netif_receive_skb_core$"),
}
VARIANTS = ("veth", "xc-peer", "bare-peer", "xc-peer-tcx")


def run(ctx: BenchContext) -> dict[str, Any]:
    missing = perfsample.available() or _missing_tools()
    if missing:
        raise SectionSkipped(missing)
    started = time.monotonic()
    rounds, seconds = ctx.pick((1, 1), (5, 3))
    rng = random.Random(ctx.seed)
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        veth = stack.enter_context(ChainTopology(2, Variant.VETH))
        stack.enter_context(loadgen.Servers(veth, SENDERS))
        xc = stack.enter_context(ChainTopology(2, Variant.XC_PEER))
        stack.enter_context(loadgen.Servers(xc, SENDERS))
        for topo in (veth, xc):
            if not topo.reachable():
                raise SectionSkipped(f"{topo.name}: server unreachable from the client")
        ports = stack.enter_context(_PortPrograms(xc))
        variants = [v for v in VARIANTS if v != "xc-peer-tcx" or ports.tcx_error is None]
        setups: dict[str, tuple[ChainTopology, Callable[[], None]]] = {
            "veth": (veth, lambda: None),
            **{v: (xc, functools.partial(ports.use, v)) for v in variants if v != "veth"},
        }
        for round_index in range(rounds):
            order = list(variants)
            rng.shuffle(order)
            for variant in order:
                topo, prepare = setups[variant]
                prepare()
                ctx.log(f"path_cost: round {round_index + 1}/{rounds} {variant}")
                rate, profile = perfsample.sample(
                    functools.partial(loadgen.udp_pps, topo, seconds, SENDERS), seconds
                )
                runs.append(_run_record(variant, round_index, rate, seconds, profile))
    data = {
        "unit": "ns of CPU per packet sent (CPU-clock samples / sampling rate / packets)",
        "rounds": rounds,
        "seconds": seconds,
        "senders": SENDERS,
        "sample_hz": perfsample.SAMPLE_HZ,
        "groups": {name: pattern.pattern for name, pattern in GROUPS.items()},
        "skipped_variants": {"xc-peer-tcx": ports.tcx_error} if ports.tcx_error else {},
        "runs": runs,
        "summary": _summary(runs),
        "over_veth": _over_veth(runs),
    }
    return section_result(ctx, "path_cost", data, started)


class _PortPrograms:
    """What runs at ingress of the cross-connection topology's two host ports, per variant: the
    data plane's own tagged cls_bpf filters (xc-peer), a bare redirect in the client port's filter
    (bare-peer), or the same program through TCX links instead of filters (xc-peer-tcx). Leaves the
    data plane's filters in place on exit."""

    def __init__(self, topo: ChainTopology) -> None:
        self.prog_fd = topo.dataplane.prog_fd
        self.client, self.server = topo.host_ifindexes[0], topo.host_ifindexes[1]
        self.tags: dict[int, int] = {}
        for port in (self.client, self.server):
            tag = tcfilter.ingress_tag(port, handle=TC_HANDLE, priority=TC_PRIORITY)
            if not tag:
                raise SectionSkipped(f"no tagged cross-connection filter on {topo.name}'s port {port}")
            self.tags[port] = tag
        self.links: list[int] = []
        self.tcx_error: str | None = None
        self.bare = bpfasm.load_redirect_program(self.server, peer=True)
        try:
            try:  # probe: TCX links need kernel >= 6.6
                self.use("xc-peer-tcx")
            except libbpf.BpfError as exc:
                self.tcx_error = f"TCX links unavailable here: {exc}"
            self.use("xc-peer")
        except BaseException:
            self.__exit__()
            raise

    def __enter__(self) -> "_PortPrograms":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.use("xc-peer")
        finally:
            os.close(self.bare)

    def use(self, variant: str) -> None:
        for link in self.links:
            os.close(link)  # the last fd of an unpinned link: detaches it
        self.links.clear()
        if variant == "xc-peer-tcx":
            for port in (self.client, self.server):
                libbpf.tc_detach_ingress(port, TC_HANDLE, TC_PRIORITY)
                self.links.append(libbpf.tcx_attach_ingress(port, self.prog_fd))
            return
        for port in (self.client, self.server):
            fd = self.bare if variant == "bare-peer" and port == self.client else self.prog_fd
            tcfilter.attach_ingress(
                port, fd, handle=TC_HANDLE, priority=TC_PRIORITY, tag=self.tags[port], name=maps.PROGRAM_NAME
            )


def _missing_tools() -> str | None:
    if shutil.which("iperf3") is None:
        return "iperf3 not installed: run scripts/setup.sh"
    return None


def _run_record(
    variant: str, round_index: int, rate: loadgen.Throughput, seconds: float, profile: perfsample.Profile
) -> dict[str, Any]:
    packets = (rate.offered or rate.rate) * seconds
    per_packet = {group: profile.seconds(pattern.search) / packets * 1e9 for group, pattern in GROUPS.items()}
    top = profile.samples.most_common(12)
    return {
        "variant": variant,
        "round": round_index,
        "pps": rate.rate,
        "offered_pps": rate.offered,
        "samples": profile.total,
        "ns_per_packet": per_packet,
        "sender_ns_per_packet": 1e9 / rate.offered if rate.offered else None,
        "top_functions_ns_per_packet": {name: n / profile.hz / packets * 1e9 for name, n in top},
    }


def _measured(runs: list[dict[str, Any]]) -> list[str]:
    return [v for v in VARIANTS if any(r["variant"] == v for r in runs)]


def _summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for variant in _measured(runs):
        mine = [r for r in runs if r["variant"] == variant]
        out[variant] = {group: summary(r["ns_per_packet"][group] for r in mine) for group in GROUPS}
        out[variant]["total"] = summary(sum(r["ns_per_packet"].values()) for r in mine)
        out[variant]["sender_ns_per_packet"] = summary(r["sender_ns_per_packet"] for r in mine)
    return out


def _over_veth(runs: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Median over rounds of (variant - veth of the same round), per group and in total."""
    by_round: dict[int, dict[str, dict[str, float]]] = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["variant"]] = r["ns_per_packet"]
    out: dict[str, dict[str, float | None]] = {}
    for variant in _measured(runs):
        if variant == "veth":
            continue
        diffs: dict[str, list[float]] = {group: [] for group in (*GROUPS, "total")}
        for per_variant in by_round.values():
            if variant not in per_variant or "veth" not in per_variant:
                continue
            mine, ref = per_variant[variant], per_variant["veth"]
            for group in GROUPS:
                diffs[group].append(mine[group] - ref[group])
            diffs["total"].append(sum(mine.values()) - sum(ref.values()))
        out[variant] = {group: median(values) for group, values in diffs.items()}
    return out
