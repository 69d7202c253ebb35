"""Figure 5: throughput, 64 B packet rate and latency of 2-pod and 3-pod chains, per interconnection.

All topologies are built first; then every round runs every (chain, variant) once in a shuffled
order, so slow drifts of this shared, noisy VM hit all variants alike. Results are medians over the
rounds and ratios to the direct veth of the same chain, taken from the same run.

The eBPF cost per packet is measured in an extra phase per cross-connection run (BPF_ENABLE_STATS on,
64 B UDP): statistics add two clock reads to every program run, so they stay off while the compared
metrics are measured (except in quick mode, which reads them during its UDP phase).
"""

import contextlib
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from flexsfc.bench import progstats, tools
from flexsfc.bench.common import BenchContext, SectionSkipped, median, section_result, summary
from flexsfc.bench.topology import ChainTopology, Variant

METRICS = (
    "tcp_gbps",
    "udp_pps",
    "lat_p50_us",
    "lat_same_cpu_p50_us",
    "tcp_gbit_per_cpu_s",
    "udp_pkts_per_cpu_s",
)

# Targets of the data-plane issue, checked (not asserted) on the medians.
TARGET_MIN_RATIO = 0.97  # TCP and 64 B pps versus the direct veth
TARGET_MAX_LATENCY_RATIO = 1.05
TARGET_MAX_NS_PER_PACKET = 100.0


@dataclass(frozen=True)
class TrafficParams:
    rounds: int
    tcp_seconds: int
    udp_seconds: int
    latency_seconds: int
    prog_cost_seconds: int
    udp_senders: int = 2
    chains: tuple[int, ...] = (2, 3)


def params_for(ctx: BenchContext) -> TrafficParams:
    if ctx.quick:
        return TrafficParams(rounds=1, tcp_seconds=1, udp_seconds=1, latency_seconds=1, prog_cost_seconds=0)
    return TrafficParams(rounds=6, tcp_seconds=3, udp_seconds=2, latency_seconds=2, prog_cost_seconds=1)


def available_variants() -> tuple[list[Variant], str | None]:
    """All four variants when the data plane is there, else veth and bridge and the reason."""
    from flexsfc.bench.dataplane_access import dataplane_unavailable

    reason = dataplane_unavailable()
    if reason is None:
        return list(Variant), None
    return [Variant.VETH, Variant.BRIDGE], reason


def run(ctx: BenchContext) -> dict[str, Any]:
    missing = [tool for tool in ("iperf3", "sockperf", "nft") if shutil.which(tool) is None]
    if missing:
        raise SectionSkipped(f"{', '.join(missing)} not installed: run scripts/setup.sh")
    started = time.monotonic()
    params = params_for(ctx)
    variants, xc_missing = available_variants()
    if xc_missing:
        ctx.log(f"traffic: cross-connection variants skipped: {xc_missing}")
    combos = [(pods, variant) for pods in params.chains for variant in variants]
    samples: dict[str, dict[str, dict[str, list[Any]]]] = {
        _chain(p): {v.value: {m: [] for m in (*METRICS, "lat_p99_us", "ns_per_packet")} for v in variants}
        for p in params.chains
    }
    errors: list[str] = []
    order: list[str] = []
    rng = random.Random(ctx.seed)
    with contextlib.ExitStack() as stack:
        running: dict[tuple[int, Variant], tuple[ChainTopology, list[int]]] = {}
        for pods, variant in combos:
            topo = stack.enter_context(ChainTopology(pods, variant))
            stack.enter_context(tools.Servers(topo, params.udp_senders))
            if not topo.reachable():
                errors.append(f"{topo.name}: server unreachable from the client; variant not measured")
                continue
            prog_ids = topo.prog_ids() if variant.is_xc else []
            if variant.is_xc and not prog_ids:
                raise SectionSkipped(f"no eBPF program found attached on {topo.name}'s host veths")
            running[(pods, variant)] = (topo, prog_ids)
        if not running:
            raise SectionSkipped("no topology could pass traffic: " + "; ".join(errors))
        for round_index in range(params.rounds):
            shuffled = [combo for combo in combos if combo in running]
            rng.shuffle(shuffled)
            for pods, variant in shuffled:
                topo, prog_ids = running[(pods, variant)]
                order.append(f"{round_index}:{topo.name}")
                ctx.log(f"traffic: round {round_index + 1}/{params.rounds} {topo.name}")
                bucket = samples[_chain(pods)][variant.value]
                _measure(topo, prog_ids, params, bucket, errors)
    data = {
        "params": asdict(params),
        "variants": [v.value for v in variants],
        "skipped_variants": xc_missing,
        "order": order,
        "samples": samples,
        "summary": {
            chain: {v: {m: summary(vals) for m, vals in per.items()} for v, per in by_variant.items()}
            for chain, by_variant in samples.items()
        },
        "ratios_to_veth": _ratios(samples),
        "round_ratios_to_veth": _round_ratios(samples),
        "targets": _targets(samples),
        "errors": errors,
    }
    return section_result(ctx, "traffic", data, started)


def _chain(pods: int) -> str:
    return f"{pods}pod"


def _measure(
    topo: ChainTopology,
    prog_ids: list[int],
    params: TrafficParams,
    bucket: dict[str, list[Any]],
    errors: list[str],
) -> None:
    """One run of every metric on one topology; a failing tool records None and the error."""

    def attempt(metric: str, fn: Any) -> Any:
        try:
            return fn()
        except tools.ToolError as exc:
            errors.append(f"{topo.name} {metric}: {exc}")
            return None

    tcp = attempt("tcp", lambda: tools.tcp_gbps(topo, params.tcp_seconds))
    bucket["tcp_gbps"].append(tcp.rate if tcp else None)
    bucket["tcp_gbit_per_cpu_s"].append(tcp.per_cpu if tcp else None)
    # Quick mode (prog_cost_seconds == 0) reads the program cost during the UDP phase itself: one
    # phase less, at the price of statistics overhead in that UDP figure.
    shared_phase = bool(prog_ids) and params.prog_cost_seconds == 0
    with _program_cost(prog_ids if shared_phase else [], bucket):
        udp = attempt("udp", lambda: tools.udp_pps(topo, params.udp_seconds, params.udp_senders))
    bucket["udp_pps"].append(udp.rate if udp else None)
    bucket["udp_pkts_per_cpu_s"].append(udp.per_cpu if udp else None)
    latency = attempt("latency", lambda: tools.latency_us(topo, params.latency_seconds))
    bucket["lat_p50_us"].append(latency["p50"] if latency else None)
    bucket["lat_p99_us"].append(latency["p99"] if latency else None)
    same_cpu = attempt(
        "latency-same-cpu", lambda: tools.latency_us(topo, params.latency_seconds, same_cpu=True)
    )
    bucket["lat_same_cpu_p50_us"].append(same_cpu["p50"] if same_cpu else None)
    if prog_ids and not shared_phase:
        with _program_cost(prog_ids, bucket):
            attempt("prog-cost", lambda: tools.udp_pps(topo, params.prog_cost_seconds, params.udp_senders))


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


def _round_ratios(samples: dict[str, dict[str, dict[str, list[Any]]]]) -> dict[str, dict[str, Any]]:
    """Median over rounds of (variant / veth of the same round): pairs runs close in time."""
    out: dict[str, dict[str, Any]] = {}
    for chain, by_variant in samples.items():
        base = by_variant.get(Variant.VETH.value, {})
        out[chain] = {}
        for variant, per in by_variant.items():
            out[chain][variant] = {}
            for metric in METRICS:
                pairs = zip(per[metric], base.get(metric, []), strict=False)
                ratios = [v / r for v, r in pairs if v and r]
                out[chain][variant][metric] = round(median(ratios), 4) if ratios else None
    return out


def _targets(samples: dict[str, dict[str, dict[str, list[Any]]]]) -> dict[str, dict[str, Any]]:
    """The data-plane issue's targets for each cross-connection variant, evaluated on the medians."""
    ratios = _ratios(samples)
    out: dict[str, dict[str, Any]] = {}
    for chain, by_variant in ratios.items():
        bridge = by_variant.get(Variant.BRIDGE.value, {})
        for variant in (Variant.XC_PEER.value, Variant.XC_REDIRECT.value):
            if variant not in by_variant:
                continue
            r = by_variant[variant]
            cost = median(samples[chain][variant]["ns_per_packet"])
            out[f"{chain}/{variant}"] = {
                "tcp_ratio_ge_0.97": _ge(r["tcp_gbps"], TARGET_MIN_RATIO),
                "pps_ratio_ge_0.97": _ge(r["udp_pps"], TARGET_MIN_RATIO),
                "latency_ratio_le_1.05": _le(r["lat_p50_us"], TARGET_MAX_LATENCY_RATIO),
                "latency_same_cpu_ratio_le_1.05": _le(r["lat_same_cpu_p50_us"], TARGET_MAX_LATENCY_RATIO),
                "pps_better_than_bridge": _gt(r["udp_pps"], bridge.get("udp_pps")),
                "latency_better_than_bridge": _gt(bridge.get("lat_p50_us"), r["lat_p50_us"]),
                "latency_same_cpu_better_than_bridge": _gt(
                    bridge.get("lat_same_cpu_p50_us"), r["lat_same_cpu_p50_us"]
                ),
                "ns_per_packet": cost,
                "ns_per_packet_lt_100": _gt(TARGET_MAX_NS_PER_PACKET, cost),
            }
    return out


def _ge(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _gt(a: float | None, b: float | None) -> bool | None:
    return None if a is None or b is None else a > b
