"""Figure 5: throughput, 64 B packet rate and latency of 2-pod and 3-pod chains, per interconnection.

All topologies are built first. Every round then measures one metric at a time on every variant of
a chain, back to back in a shuffled order: a variant's figure and the direct veth's figure it is
compared with are taken seconds apart, so the slow drifts of this shared VM hit both alike. What
remains is run-to-run noise of 10-20 %, which the comparison states instead of hiding: each is the
median of the paired ratios with its sign-test 95 % confidence interval, and each target gets a
verdict that may be "unresolved" (flexsfc.bench.stats). Medians of the raw figures and their ratios
are kept for the plot.

The 64 B rate is measured with as many unthrottled senders as the machine can deliver: a short
calibration on the direct veth tries 1 to min(CPUs, 4) senders and keeps the count with the highest
delivered rate. More senders than that do not add forwarding work: they overload the receivers,
whose sockets then drop most of what arrives (two senders on two CPUs offer 565-748 kpps here and
227-277 kpps arrive), and the delivered rate measures how the scheduler splits the CPUs, not the
path. The lost share is kept per run (`udp_loss`).

The eBPF cost per packet is measured in an extra phase per cross-connection run (BPF_ENABLE_STATS on,
64 B UDP): statistics add two clock reads to every program run, so they stay off while the compared
metrics are measured (except in quick mode, which reads them during its UDP phase).
"""

import contextlib
import functools
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from flexsfc.bench import stats
from flexsfc.bench.context import BenchContext, SectionSkipped, section_result
from flexsfc.bench.stats import median, summary
from flexsfc.bench.tools import loadgen, progstats
from flexsfc.bench.topologies.chain import ChainTopology
from flexsfc.bench.topologies.pods import Variant

METRICS = (
    "tcp_gbps",
    "udp_pps",
    "lat_p50_us",
    "lat_same_cpu_p50_us",
    "tcp_gbit_per_cpu_s",
    "udp_pkts_per_cpu_s",
)

# Targets of the data-plane issue, each judged on the paired ratios' confidence interval.
TARGET_MIN_RATIO = 0.97  # TCP and 64 B pps versus the direct veth
TARGET_MAX_LATENCY_RATIO = 1.05
TARGET_MAX_NS_PER_PACKET = 100.0


@dataclass(frozen=True)
class TrafficParams:
    rounds: int
    tcp_seconds: int
    udp_seconds: int
    latency_seconds: int  # sockperf -t: it keeps ~55 % of it after its warm-up, and adds ~2.2 s
    prog_cost_seconds: int
    udp_senders: int | None = None  # None: calibrated on the direct veth (see the module docstring)
    chains: tuple[int, ...] = (2, 3)

    @property
    def senders(self) -> int:
        if self.udp_senders is None:
            raise RuntimeError("the UDP sender count is calibrated before the first round")
        return self.udp_senders


DEFAULT_ROUNDS = 9  # the fewest pairs whose sign-test interval (2nd to 8th of 9) covers 95 %
MAX_UDP_SENDERS = 4
CALIBRATION_PASSES = 2


def params_for(ctx: BenchContext) -> TrafficParams:
    if ctx.quick:
        base = TrafficParams(rounds=1, tcp_seconds=1, udp_seconds=1, latency_seconds=1, prog_cost_seconds=0)
    else:
        base = TrafficParams(
            rounds=DEFAULT_ROUNDS, tcp_seconds=1, udp_seconds=1, latency_seconds=1, prog_cost_seconds=1
        )
    overrides: dict[str, Any] = {}
    if ctx.traffic_rounds is not None:
        overrides["rounds"] = ctx.traffic_rounds
    if ctx.traffic_chains:
        overrides["chains"] = tuple(sorted(set(ctx.traffic_chains)))
    if ctx.udp_senders is not None:
        overrides["udp_senders"] = ctx.udp_senders
    return TrafficParams(**{**asdict(base), **overrides})


Samples = dict[str, dict[str, dict[str, list[Any]]]]  # chain -> variant -> metric -> one value per round


def run(ctx: BenchContext) -> dict[str, Any]:
    missing = [tool for tool in ("iperf3", "sockperf", "nft") if shutil.which(tool) is None]
    if missing:
        raise SectionSkipped(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    started = time.monotonic()
    params = params_for(ctx)
    variants = list(Variant)
    samples: Samples = {
        _chain(p): {
            v.value: {m: [] for m in (*METRICS, "lat_p99_us", "ns_per_packet", "udp_loss")} for v in variants
        }
        for p in params.chains
    }
    errors: list[str] = []
    order: list[str] = []
    rng = random.Random(ctx.seed)
    calibration: dict[str, Any] = {"senders": params.udp_senders, "fixed": True}
    server_slots = params.udp_senders or _max_senders()
    with contextlib.ExitStack() as stack:
        running: dict[int, dict[Variant, tuple[ChainTopology, list[int]]]] = {p: {} for p in params.chains}
        for pods in params.chains:
            for variant in variants:
                topo = stack.enter_context(ChainTopology(pods, variant))
                stack.enter_context(loadgen.Servers(topo, server_slots))
                if not topo.reachable():
                    errors.append(f"{topo.name}: server unreachable from the client; variant not measured")
                    continue
                prog_ids = topo.prog_ids() if variant.is_xc else []
                if variant.is_xc and not prog_ids:
                    raise SectionSkipped(f"no eBPF program found attached on {topo.name}'s host veths")
                running[pods][variant] = (topo, prog_ids)
        if not any(running.values()):
            raise SectionSkipped("no topology could pass traffic: " + "; ".join(errors))
        if params.udp_senders is None:
            calibration = _calibrate_senders(_calibration_topology(running), params, ctx, errors)
            params = replace(params, udp_senders=calibration["senders"])
        for round_index in range(params.rounds):
            chain_order = list(params.chains)
            rng.shuffle(chain_order)
            for pods in chain_order:
                ctx.log(f"traffic: round {round_index + 1}/{params.rounds} {_chain(pods)}")
                for kind in _KINDS:
                    shuffled = list(running[pods])
                    rng.shuffle(shuffled)
                    for variant in shuffled:
                        if kind == "program-cost" and not variant.is_xc:
                            continue
                        topo, prog_ids = running[pods][variant]
                        order.append(f"{round_index}:{kind}:{topo.name}")
                        bucket = samples[_chain(pods)][variant.value]
                        _KINDS[kind](topo, prog_ids, params, bucket, errors)
    data = {
        "params": asdict(params),
        "udp_sender_calibration": calibration,
        "variants": [v.value for v in variants],
        "skipped_variants": None,  # the key of results from before every variant was always built
        "order": order,
        "samples": samples,
        "summary": {
            chain: {v: {m: summary(vals) for m, vals in per.items()} for v, per in by_variant.items()}
            for chain, by_variant in samples.items()
        },
        "ratios_to_veth": _ratios(samples),
        "paired_to_veth": _paired(samples, Variant.VETH.value),
        "paired_to_bridge": _paired(samples, Variant.BRIDGE.value),
        "confidence": stats.CONFIDENCE,
        "targets": _targets(samples),
        "errors": errors,
    }
    return section_result(ctx, "traffic", data, started)


def _max_senders() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_UDP_SENDERS))


def _calibration_topology(
    running: dict[int, dict[Variant, tuple[ChainTopology, list[int]]]],
) -> ChainTopology:
    """The shortest chain's direct veth (what every ratio divides by), else any running topology."""
    for pods in sorted(running):
        if Variant.VETH in running[pods]:
            return running[pods][Variant.VETH][0]
    return next(topo for by_variant in running.values() for topo, _ in by_variant.values())


def _calibrate_senders(
    topo: ChainTopology, params: TrafficParams, ctx: BenchContext, errors: list[str]
) -> dict[str, Any]:
    """The 64 B sender count that delivers the most packets on `topo`; counts alternate over passes
    so that a drift of the machine hits each of them alike."""
    counts = range(1, _max_senders() + 1)
    trials: dict[int, list[dict[str, float | None]]] = {n: [] for n in counts}
    for _ in range(1 if ctx.quick else CALIBRATION_PASSES):
        for n in counts:
            run = _attempt(
                topo,
                f"udp calibration ({n} senders)",
                functools.partial(loadgen.udp_pps, topo, params.udp_seconds, n),
                errors,
            )
            if run is not None:
                trials[n].append({"pps": run.rate, "offered_pps": run.offered, "loss": run.loss})
    delivered: dict[int, float] = {}
    for n, runs in trials.items():
        rate = median(t["pps"] for t in runs)
        if rate is not None:
            delivered[n] = rate
    senders = max(delivered, key=lambda n: delivered[n]) if delivered else 1
    ctx.log(
        f"traffic: {senders} UDP sender(s) (delivered kpps by count: "
        + ", ".join(f"{n}: {rate / 1e3:.0f}" for n, rate in delivered.items())
        + ")"
    )
    return {"senders": senders, "on": topo.name, "trials": {str(n): runs for n, runs in trials.items()}}


def _chain(pods: int) -> str:
    return f"{pods}pod"


Bucket = dict[str, list[Any]]


def _attempt(topo: ChainTopology, metric: str, fn: Callable[[], Any], errors: list[str]) -> Any:
    """A failing tool records None (the round's pair is then left out) and the error."""
    try:
        return fn()
    except loadgen.ToolError as exc:
        errors.append(f"{topo.name} {metric}: {exc}")
        return None


def _measure_tcp(
    topo: ChainTopology, prog_ids: list[int], params: TrafficParams, bucket: Bucket, errors: list[str]
) -> None:
    tcp = _attempt(topo, "tcp", lambda: loadgen.tcp_gbps(topo, params.tcp_seconds), errors)
    bucket["tcp_gbps"].append(tcp.rate if tcp else None)
    bucket["tcp_gbit_per_cpu_s"].append(tcp.per_cpu if tcp else None)


def _measure_udp(
    topo: ChainTopology, prog_ids: list[int], params: TrafficParams, bucket: Bucket, errors: list[str]
) -> None:
    # Quick mode (prog_cost_seconds == 0) reads the program cost during the UDP phase itself: one
    # phase less, at the price of statistics overhead in that UDP figure.
    shared_phase = bool(prog_ids) and params.prog_cost_seconds == 0
    with _program_cost(prog_ids if shared_phase else [], bucket):
        udp = _attempt(topo, "udp", lambda: loadgen.udp_pps(topo, params.udp_seconds, params.senders), errors)
    bucket["udp_pps"].append(udp.rate if udp else None)
    bucket["udp_loss"].append(udp.loss if udp else None)
    bucket["udp_pkts_per_cpu_s"].append(udp.per_cpu if udp else None)


def _measure_latency(
    topo: ChainTopology, prog_ids: list[int], params: TrafficParams, bucket: Bucket, errors: list[str]
) -> None:
    latency = _attempt(topo, "latency", lambda: loadgen.latency_us(topo, params.latency_seconds), errors)
    bucket["lat_p50_us"].append(latency["p50"] if latency else None)
    bucket["lat_p99_us"].append(latency["p99"] if latency else None)


def _measure_latency_same_cpu(
    topo: ChainTopology, prog_ids: list[int], params: TrafficParams, bucket: Bucket, errors: list[str]
) -> None:
    same_cpu = _attempt(
        topo,
        "latency-same-cpu",
        lambda: loadgen.latency_us(topo, params.latency_seconds, same_cpu=True),
        errors,
    )
    bucket["lat_same_cpu_p50_us"].append(same_cpu["p50"] if same_cpu else None)


def _measure_program_cost(
    topo: ChainTopology, prog_ids: list[int], params: TrafficParams, bucket: Bucket, errors: list[str]
) -> None:
    if prog_ids and params.prog_cost_seconds > 0:
        with _program_cost(prog_ids, bucket):
            _attempt(
                topo,
                "prog-cost",
                lambda: loadgen.udp_pps(topo, params.prog_cost_seconds, params.senders),
                errors,
            )


# One metric at a time over all variants of a chain (see the module docstring). Each appends exactly
# one value (None when its tool failed) to each of its series, so the rounds' pairs line up.
_KINDS: dict[str, Callable[[ChainTopology, list[int], TrafficParams, Bucket, list[str]], None]] = {
    "tcp": _measure_tcp,
    "udp": _measure_udp,
    "latency": _measure_latency,
    "latency-same-cpu": _measure_latency_same_cpu,
    "program-cost": _measure_program_cost,
}


@contextlib.contextmanager
def _program_cost(prog_ids: list[int], bucket: dict[str, list[Any]]) -> Iterator[None]:
    """Appends the programs' ns per run over the block to bucket["ns_per_packet"] (no-op without ids)."""
    if not prog_ids:
        yield
        return
    with progstats.stats_enabled():
        before = progstats.counters(prog_ids)
        yield
        cost = progstats.counters(prog_ids) - before
    bucket["ns_per_packet"].append(cost.ns_per_run)


def _ratios(samples: dict[str, dict[str, dict[str, list[Any]]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Median of each variant divided by the median of the direct veth in the same chain."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for chain, by_variant in samples.items():
        base = by_variant.get(Variant.VETH.value, {})
        out[chain] = {}
        for variant, per in by_variant.items():
            out[chain][variant] = {}
            for metric in METRICS:
                value, ref = median(per[metric]), median(base.get(metric, []))
                out[chain][variant][metric] = round(value / ref, 4) if value and ref else None
    return out


def _paired(samples: Samples, reference: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Per chain, variant and metric: the median of variant / reference over the rounds, with its
    confidence interval (pairs measured seconds apart, see the module docstring)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for chain, by_variant in samples.items():
        base = by_variant.get(reference)
        if base is None:
            continue
        out[chain] = {}
        for variant, per in by_variant.items():
            if variant == reference:
                continue
            out[chain][variant] = {}
            for metric in METRICS:
                est = stats.estimate(stats.ratios(per[metric], base[metric]))
                out[chain][variant][metric] = est.as_dict() if est else None
    return out


def _targets(samples: Samples) -> dict[str, dict[str, Any]]:
    """The data-plane issue's targets for each cross-connection variant: met, missed or unresolved at
    the run's confidence, judged on the paired ratios (and on the rounds' program costs)."""
    out: dict[str, dict[str, Any]] = {}
    for chain, by_variant in samples.items():
        veth = by_variant.get(Variant.VETH.value)
        bridge = by_variant.get(Variant.BRIDGE.value)
        for variant in (Variant.XC_PEER.value, Variant.XC_REDIRECT.value):
            per = by_variant.get(variant)
            if per is None or veth is None:
                continue

            def to(ref: Bucket | None, metric: str, values: Bucket = per) -> stats.RatioEstimate | None:
                return stats.estimate(stats.ratios(values[metric], ref[metric])) if ref else None

            cost = stats.estimate(v for v in per["ns_per_packet"] if v is not None)
            verdicts = {
                "tcp_ratio_ge_0.97": stats.at_least(to(veth, "tcp_gbps"), TARGET_MIN_RATIO),
                "pps_ratio_ge_0.97": stats.at_least(to(veth, "udp_pps"), TARGET_MIN_RATIO),
                "latency_ratio_le_1.05": stats.at_most(to(veth, "lat_p50_us"), TARGET_MAX_LATENCY_RATIO),
                "latency_same_cpu_ratio_le_1.05": stats.at_most(
                    to(veth, "lat_same_cpu_p50_us"), TARGET_MAX_LATENCY_RATIO
                ),
                "pps_better_than_bridge": stats.at_least(to(bridge, "udp_pps"), 1.0),
                "latency_better_than_bridge": stats.at_most(to(bridge, "lat_p50_us"), 1.0),
                "latency_same_cpu_better_than_bridge": stats.at_most(to(bridge, "lat_same_cpu_p50_us"), 1.0),
                "ns_per_packet_lt_100": stats.at_most(cost, TARGET_MAX_NS_PER_PACKET),
            }
            out[f"{chain}/{variant}"] = {
                **{name: verdict.value for name, verdict in verdicts.items()},
                "ns_per_packet": cost.as_dict() if cost else None,
            }
    return out
