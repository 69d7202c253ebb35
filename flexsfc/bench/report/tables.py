"""Markdown tables from the JSON results, for writing docs/evaluation.md after a run.

python -m flexsfc.bench.report.tables [docs/results]
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flexsfc.bench.context import read_json


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def resources(d: dict[str, Any]) -> str:
    rows = [
        [n, a, b, f"{s * 100:.0f} %"]
        for n, a, b, s in zip(
            d["instances"], d["nf_level_millicpu"], d["whole_chain_millicpu"], d["saving_ratio"], strict=True
        )
    ]
    return _table(["instances", "NF-level (mCPU)", "whole chain (mCPU)", "saved"], rows)


def _with_interval(est: dict[str, Any] | None, digits: int = 2) -> str:
    """A paired ratio as "median [low, high]"."""
    if not est:
        return "n/a"
    return f"{est['median']:.{digits}f} [{est['low']:.{digits}f}, {est['high']:.{digits}f}]"


TRAFFIC_METRICS = [
    ("tcp_gbps", "TCP Gbit/s", 1.0),
    ("udp_pps", "64 B kpps", 1e-3),
    ("lat_p50_us", "p50 µs", 1.0),
    ("lat_same_cpu_p50_us", "p50 µs same CPU", 1.0),
    ("tcp_gbit_per_cpu_s", "TCP Gbit/CPU-s", 1.0),
    ("udp_pkts_per_cpu_s", "UDP kpkt/CPU-s", 1e-3),
]


def traffic(d: dict[str, Any]) -> str:
    """Medians, and the median of the paired ratios to the veth of the same round with its
    confidence interval."""
    header = ["chain", "variant"]
    for _, label, _ in TRAFFIC_METRICS:
        header += [label, "paired ratio [CI]"]
    header += ["64 B lost %", "eBPF ns/pkt"]
    rows = []
    for chain, by_variant in d["summary"].items():
        for variant, s in by_variant.items():
            row: list[Any] = [chain, variant]
            for key, _, scale in TRAFFIC_METRICS:
                value = (s.get(key) or {}).get("median")
                row.append(value * scale if value is not None else None)
                est = d.get("paired_to_veth", {}).get(chain, {}).get(variant, {}).get(key)
                row.append("1" if variant == "veth" else _with_interval(est))
            loss = (s.get("udp_loss") or {}).get("median")  # not recorded by runs before 2026-11-26
            row.append(loss * 100 if loss is not None else None)
            row.append(s["ns_per_packet"]["median"])
            rows.append(row)
    return _table(header, rows)


def traffic_targets(d: dict[str, Any]) -> str:
    """Each cross-connection variant against the data-plane targets: the verdict and what decided it."""
    checks = [
        ("tcp_ratio_ge_0.97", "TCP ≥ 0.97 veth", "paired_to_veth", "tcp_gbps"),
        ("pps_ratio_ge_0.97", "pps ≥ 0.97 veth", "paired_to_veth", "udp_pps"),
        ("latency_ratio_le_1.05", "p50 ≤ 1.05 veth", "paired_to_veth", "lat_p50_us"),
        ("pps_better_than_bridge", "pps > bridge", "paired_to_bridge", "udp_pps"),
        ("latency_better_than_bridge", "p50 < bridge", "paired_to_bridge", "lat_p50_us"),
    ]
    header = ["chain/variant", *(label for _, label, _, _ in checks), "ns/pkt < 100"]
    rows = []
    for name, verdicts in d["targets"].items():
        chain, variant = name.split("/")
        row: list[Any] = [name]
        for key, _, reference, metric in checks:
            est = d.get(reference, {}).get(chain, {}).get(variant, {}).get(metric)
            row.append(f"{verdicts[key]}: {_with_interval(est)}")
        cost = verdicts.get("ns_per_packet")
        row.append(f"{verdicts['ns_per_packet_lt_100']}: {_with_interval(cost)}")
        rows.append(row)
    return _table(header, rows)


def traffic_best(d: dict[str, Any]) -> str:
    """Best round of each variant (max rate, min latency): the machine's quiet moments."""
    metrics = [("tcp_gbps", "max", 1.0), ("udp_pps", "max", 1e-3), ("lat_p50_us", "min", 1.0)]
    rows = []
    for chain, by_variant in d["summary"].items():
        base = by_variant["veth"]
        for variant, s in by_variant.items():
            row: list[Any] = [chain, variant]
            for key, pick, scale in metrics:
                value, ref = s[key][pick], base[key][pick]
                row += [value * scale if value is not None else None, value / ref if value and ref else None]
            rows.append(row)
    header = ["chain", "variant", "TCP Gbit/s", "ratio", "64 B kpps", "ratio", "p50 µs", "ratio"]
    return _table(header, rows)


def remap(d: dict[str, Any]) -> str:
    rows = [
        [f"{r['n_before']}->{r['n_after']}", r["ideal_remapped"], r["maglev_remapped"], r["modulo_remapped"]]
        for r in d["scale_out"] + d["scale_in"]
    ]
    return _table(["replicas", "minimum", "flexsfc Maglev", "PoC modulo"], rows)


def scale_loss(d: dict[str, Any]) -> str:
    rows = [
        [
            e["event"],
            sum(r["sent"] for r in e["runs"]),
            sum(r["lost"] for r in e["runs"]),
            e["flows_moved_median"],
            e["flows_on_leaving_replica_median"],
        ]
        for e in d["events"]
    ]
    return _table(
        ["event", "packets sent (all trials)", "lost", "flows moved (median)", "flows on leaving"], rows
    )


def control_plane(d: dict[str, Any]) -> str:
    rows = [
        [
            r["cross_connections"],
            r["first_ms"],
            r["first_ms_per_xc"],
            r["noop_ms"],
            r["scale_out_one_ms"],
            r["delete_all_ms"],
        ]
        for r in d["rows"]
    ]
    return _table(
        ["xcs", "first (ms)", "per xc (ms)", "no change (ms)", "+1 replica (ms)", "delete all (ms)"], rows
    )


def session_fill(d: dict[str, Any]) -> str:
    rows = [[r["sessions_in_table"], r["hit_ns"], r["new_session_ns"]] for r in d["rows"]]
    return _table(["sessions", "hit ns/pkt (net)", "new session ns/pkt"], rows)


def path_cost(d: dict[str, Any]) -> str:
    """ns per packet by part of the path: medians per variant, and over the veth of the same round."""
    variants = list(d["summary"])
    extra = [v for v in variants if v in d["over_veth"]]
    header = ["part", *variants, *(f"{v} over veth" for v in extra)]
    rows = []
    for group in [*d["groups"], "total"]:
        row: list[Any] = [group]
        row += [d["summary"][v][group]["median"] for v in variants]
        row += [d["over_veth"][v][group] for v in extra]
        rows.append(row)
    senders = [d["summary"][v]["sender_ns_per_packet"]["median"] for v in variants]
    rows.append(["sender CPU per packet", *senders, *([None] * len(extra))])
    return _table(header, rows)


SWITCHED_PHASES = {
    "udp_pps": ("64 B kpps", 1e-3),
    "tcp_gbps": ("TCP Gbit/s", 1.0),
    "latency_us": ("p50 µs", 1.0),
}


def switched(d: dict[str, Any]) -> str:
    """Per phase and path: median rate of a slot, and the paired ratios with their verdicts (three
    digits: a bound of 0.9695 must not print as 0.97 next to "unresolved")."""
    header = ["phase", "path", "median", "vs veth", "verdict vs veth", "vs bridge", "verdict vs bridge"]
    rows = []
    for phase, (label, scale) in SWITCHED_PHASES.items():
        analysis = d["phases"].get(phase, {}).get("analysis", {})
        for variant, entry in analysis.items():
            rate = entry["value"]["median"]
            veth, bridge = entry.get("vs_veth"), entry.get("vs_bridge")
            rows.append(
                [
                    label,
                    variant,
                    None if rate is None else rate * scale,
                    _with_interval(veth, 3) if veth and "median" in veth else "",
                    veth.get("verdict", "") if veth else "",
                    _with_interval(bridge, 3) if bridge and "median" in bridge else "",
                    bridge.get("verdict", "") if bridge else "",
                ]
            )
    return _table(header, rows)


def reaction(d: dict[str, Any]) -> str:
    rows = [[label, start, duration] for label, start, duration in d["gantt_scale_out"]]
    rows += [[k, "", v.get("median")] for k, v in d["scale_in"].items()]
    rows += [[k, "", v.get("median")] for k, v in d.get("agent_steps", {}).items()]
    return _table(["step", "start (ms)", "median"], rows)


MULTINODE_METRICS = [
    ("tcp_gbps", "TCP Gbit/s", 1.0),
    ("udp_pps", "64 B kpps", 1e-3),
    ("lat_p50_us", "p50 µs", 1.0),
]


def multinode(d: dict[str, Any]) -> str:
    """Medians per path; then each comparison's paired ratios with their intervals, the verdicts of
    the targets, and the remote replica -> first packet figure."""
    medians = _table(
        ["path", *(label for _, label, _ in MULTINODE_METRICS)],
        [
            [
                path,
                *(
                    _scaled(d["summary"][path][metric]["median"], scale)
                    for metric, _, scale in MULTINODE_METRICS
                ),
            ]
            for path in d["paths"]
        ],
    )
    verdicts = {
        "xc-cross-node/vxlan": d["targets"].get("cross_node_vs_vxlan", {}),
        "xc-same-node/xc-same-node-baseline": d["targets"].get("same_node_vs_baseline", {}),
    }
    rows = []
    for comparison, per in d["paired"].items():
        judged = verdicts.get(comparison, {})
        cells = []
        for metric, _, _ in MULTINODE_METRICS:
            cell = _with_interval(per.get(metric), 3)
            if metric in judged:
                cell += f" ({judged[metric]['verdict']}, bound {judged[metric]['bound']})"
            cells.append(cell)
        rows.append([comparison, *cells])
    ratios = _table(["ratio", *(label for _, label, _ in MULTINODE_METRICS)], rows)
    first = d.get("first_packet") or {}
    spread = first.get("replica_added_to_first_packet_ms", {})
    line = (
        f"Remote replica added -> first packet: median {_fmt(spread.get('median'), 3)} ms, "
        f"p90 {_fmt(spread.get('p90'), 3)} ms over {spread.get('n', 0)} repetitions "
        f"(target <= {d['targets']['first_packet_median_ms']['bound']} ms: "
        f"{d['targets']['first_packet_median_ms']['verdict']})."
    )
    return f"{medians}\n\n{ratios}\n\n{line}"


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


TABLES: dict[str, Callable[[dict[str, Any]], str]] = {
    "resources": resources,
    "traffic": traffic,
    "traffic_targets": traffic_targets,
    "traffic_best": traffic_best,
    "switched": switched,
    "path_cost": path_cost,
    "reaction": reaction,
    "remap": remap,
    "scale_loss": scale_loss,
    "control_plane": control_plane,
    "session_fill": session_fill,
    "multinode": multinode,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0] if args else "docs/results")
    for name, fn in TABLES.items():
        section = name.removesuffix("_best").removesuffix("_targets")  # extra views of one section
        path = out_dir / f"{section}.json"
        if path.exists():
            print(f"### {name}\n\n{fn(read_json(path)['data'])}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
