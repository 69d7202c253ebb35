"""PNG plots of the benchmark results (matplotlib, Agg backend), one function per section.

Every function takes the section's JSON result (as written to docs/results/<section>.json) and the
output directory, and returns the paths it wrote, so plots can be regenerated from JSON alone.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): no display needed
from matplotlib.figure import Figure

VARIANT_COLORS = {
    "veth": "#4c72b0",
    "bridge": "#dd8452",
    "xc-redirect": "#55a868",
    "xc-peer": "#c44e52",
    "bare-peer": "#8172b3",
}
VARIANT_LABELS = {
    "veth": "direct veth",
    "bridge": "Linux bridge",
    "xc-redirect": "flexsfc xc (bpf_redirect)",
    "xc-peer": "flexsfc xc (bpf_redirect_peer)",
    "bare-peer": "bare bpf_redirect_peer",
}


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    path = out_dir / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_resources(result: dict[str, Any], out_dir: Path) -> list[Path]:
    d = result["data"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(d["instances"], d["whole_chain_millicpu"], "o-", label="whole chain scaled")
    ax.plot(d["instances"], d["nf_level_millicpu"], "s-", label=f"only {d['scaled_nf']} scaled (flexsfc)")
    ax.set_xlabel(f"instances of the stressed NF ({d['scaled_nf']})")
    ax.set_ylabel("requested milliCPU of the chain")
    ax.set_xticks(d["instances"])
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Fig. 4: CPU requested, NF-level vs whole-chain scaling")
    return [_save(fig, out_dir, "fig4_resources.png")]


def plot_traffic(result: dict[str, Any], out_dir: Path) -> list[Path]:
    d = result["data"]
    variants: list[str] = d["variants"]
    chains = list(d["summary"])
    panels = [
        ("tcp_gbps", "iperf3 TCP (Gbit/s)", 1.0),
        ("udp_pps", "64 B UDP (kpps received)", 1e-3),
        ("lat_p50_us", "UDP ping-pong latency p50 (µs, one way)", 1.0),
        ("lat_same_cpu_p50_us", "same, client and server on one CPU (µs)", 1.0),
        ("tcp_gbit_per_cpu_s", "TCP Gbit per CPU-second of iperf3", 1.0),
        ("udp_pkts_per_cpu_s", "64 B UDP kpkts per CPU-second of iperf3", 1e-3),
        ("ns_per_packet", "eBPF program ns per packet (live, bpf_stats)", 1.0),
    ]
    panels = [p for p in panels if p[0] in d["summary"][next(iter(d["summary"]))][variants[0]]]
    cols = 3
    rows = -(-len(panels) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(15, 4.3 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    width = 0.8 / max(len(variants), 1)
    for ax, (metric, title, scale) in zip(axes, panels, strict=False):
        for i, variant in enumerate(variants):
            xs, ys, errs_lo, errs_hi, labels = [], [], [], [], []
            for c, chain in enumerate(chains):
                s = d["summary"][chain][variant][metric]
                if s["median"] is None:
                    continue
                xs.append(c + (i - (len(variants) - 1) / 2) * width)
                ys.append(s["median"] * scale)
                errs_lo.append((s["median"] - s["p25"]) * scale)
                errs_hi.append((s["p75"] - s["median"]) * scale)
                labels.append(_ratio_label(d, chain, variant, metric))
            bars = ax.bar(
                xs,
                ys,
                width,
                yerr=[errs_lo, errs_hi],
                capsize=2,
                color=VARIANT_COLORS.get(variant),
                label=VARIANT_LABELS.get(variant, variant),
            )
            ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
        ax.set_xticks(range(len(chains)), [c.replace("pod", "-pod chain") for c in chains])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(
        "Fig. 5: interconnection comparison (median over interleaved rounds; labels: median of the "
        "ratios to the direct veth measured seconds before or after; whiskers: quartiles)",
        fontsize=10,
    )
    return [_save(fig, out_dir, "fig5_traffic.png")]


def _ratio_label(d: dict[str, Any], chain: str, variant: str, metric: str) -> str:
    """The paired ratio to the veth (results of older runs: the ratio of the medians)."""
    est = d.get("paired_to_veth", {}).get(chain, {}).get(variant, {}).get(metric)
    if est:
        return f"{est['median']:.2f}"
    ratio = d["ratios_to_veth"][chain][variant].get(metric)
    return f"{ratio:.2f}" if ratio is not None else ""


def plot_gantt(
    rows: list[tuple[str, float, float]],
    title: str,
    out_dir: Path,
    name: str,
    marker_ms: float | None = None,
    zoom: tuple[float, float] | None = None,
) -> Path:
    """Paper-style reaction-time bars: one row per component, from its start offset, for its duration.

    `zoom` (start, end in ms) adds a right-hand panel magnifying that window, where the
    millisecond-scale agent work sits next to much longer pod start-up or termination phases.
    """
    panels = 2 if zoom else 1
    fig, axes = plt.subplots(
        1, panels, figsize=(8 + 4 * (panels - 1), 0.5 * len(rows) + 1.5), sharey=True, squeeze=False,
        gridspec_kw={"width_ratios": [2, 1][:panels]},
    )  # fmt: skip
    colors = plt.get_cmap("tab10")
    end = max((start + duration for _, start, duration in rows), default=1.0) or 1.0
    for p, ax in enumerate(axes[0]):
        for i, (_label, start, duration) in enumerate(rows):
            ax.barh(i, duration, left=start, color=colors(i % 10))
            ax.text(start + duration, i, f" {duration:.2f} ms", va="center", fontsize=8, clip_on=True)
        if p == 0:
            ax.set_xlim(0, end * 1.18)
        elif zoom:
            span = zoom[1] - zoom[0]
            ax.set_xlim(zoom[0], zoom[1] + 0.35 * span)
            ax.set_title("zoom", fontsize=9)
        if marker_ms is not None:
            ax.axvline(marker_ms, linestyle="--", color="black", linewidth=1)
        ax.set_xlabel("milliseconds (medians)")
        ax.grid(axis="x", alpha=0.3)
    ax0 = axes[0][0]
    ax0.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax0.invert_yaxis()
    fig.suptitle(title, fontsize=10)
    return _save(fig, out_dir, name)


def plot_remap(result: dict[str, Any], out_dir: Path) -> list[Path]:
    d = result["data"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, direction in zip(axes, ("scale_out", "scale_in"), strict=True):
        rows = d[direction]
        ns = [r["n_before"] for r in rows]
        width = 0.38
        xs = range(len(ns))
        ax.bar(
            [x - width / 2 for x in xs], [r["maglev_remapped"] for r in rows], width, label="flexsfc Maglev"
        )
        ax.bar([x + width / 2 for x in xs], [r["modulo_remapped"] for r in rows], width, label="PoC modulo")
        ax.plot(xs, [r["ideal_remapped"] for r in rows], "k_", markersize=14, label="minimum possible")
        ax.set_xticks(list(xs), [f"{r['n_before']}->{r['n_after']}" for r in rows])
        ax.set_xlabel("replicas")
        ax.set_title(f"{direction.replace('_', '-')}: share of flows mapped to another replica", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("share of flows")
    axes[0].legend(fontsize=8)
    return [_save(fig, out_dir, "remap.png")]


PATH_GROUP_LABELS = {
    "program": "eBPF program",
    "tc_hook": "TC ingress hook",
    "redirect": "redirect into the pod",
    "receive_loop": "receive loop, once more",
}


def plot_path_cost(result: dict[str, Any], out_dir: Path) -> list[Path]:
    d = result["data"]
    variants = list(d["over_veth"])
    fig, ax = plt.subplots(figsize=(7, 2.8))
    left = [0.0] * len(variants)
    for group in d["groups"]:
        widths = [max(0.0, d["over_veth"][v][group] or 0.0) for v in variants]
        ax.barh(variants, widths, left=left, label=PATH_GROUP_LABELS.get(group, group))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    for y, v in enumerate(variants):
        total = d["over_veth"][v]["total"]
        if total is not None:
            ax.text(left[y] + 1, y, f"{total:.0f} ns", va="center", fontsize=8)
    ax.set_xlabel("CPU per packet over the direct veth (ns, median of paired rounds)")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Where a cross-connection's per-packet cost goes (perf cpu-clock samples)", fontsize=10)
    return [_save(fig, out_dir, "path_cost.png")]


SWITCHED_AXES = {"udp_pps": "64 B UDP rate", "tcp_gbps": "TCP throughput", "latency_us": "p50 latency"}


def plot_switched(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Paired ratio to the direct veth per path, with its confidence interval and the 0.97 target."""
    d = result["data"]
    analyses = {phase: d["phases"].get(phase, {}).get("analysis", {}) for phase in SWITCHED_AXES}
    shown = [
        p for p in d["paths"] if any("median" in a.get(p, {}).get("vs_veth", {}) for a in analyses.values())
    ]
    fig, axes = plt.subplots(1, len(SWITCHED_AXES), figsize=(10, 2.8), sharey=True)
    for ax, (phase, title) in zip(axes, SWITCHED_AXES.items(), strict=True):
        for y, path in enumerate(shown):
            est = analyses[phase].get(path, {}).get("vs_veth", {})
            if "median" not in est:
                continue
            ax.errorbar(
                est["median"],
                y,
                xerr=[[est["median"] - est["low"]], [est["high"] - est["median"]]],
                fmt="o",
                color=VARIANT_COLORS.get(path),
                capsize=3,
            )
        ax.axvline(1.0, color="grey", lw=0.8)
        target = d["targets"].get(phase)
        if target:
            ax.axvline(target["vs_veth"], color="black", ls="--", lw=0.8)
        ax.set_xlabel(f"{title} / direct veth", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(shown)), [VARIANT_LABELS.get(p, p) for p in shown], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"Path switched under one sender: {d['cycles']} cycles of {d['slot_s'] * 1000:.0f} ms slots "
        "(median ratio with its sign-test interval; dashed: target)",
        fontsize=9,
    )
    return [_save(fig, out_dir, "switched.png")]


def plot_session_fill(result: dict[str, Any], out_dir: Path) -> list[Path]:
    d = result["data"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for series in d["series"]:
        ax.plot(series["sessions"], series["ns_per_packet"], "o-", label=series["label"])
    ax.set_xscale("symlog", linthresh=1000)
    ax.set_xlabel("sessions in the table")
    ax.set_ylabel("ns per packet (BPF_PROG_TEST_RUN)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Per-packet cost as the session table fills", fontsize=10)
    return [_save(fig, out_dir, "session_fill.png")]


def plot_control_plane(result: dict[str, Any], out_dir: Path) -> list[Path]:
    d = result["data"]
    rows = d["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["cross_connections"] for r in rows]
    for key, label in (
        ("first_ms", "first reconcile (create all)"),
        ("delete_all_ms", "delete all"),
        ("scale_out_one_ms", "one replica added"),
        ("noop_ms", "next reconcile (no change)"),
    ):
        ax.plot(xs, [r[key] for r in rows], "o-", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cross-connections")
    ax.set_ylabel("reconcile time (ms, median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Control-plane scale", fontsize=10)
    return [_save(fig, out_dir, "control_plane.png")]


def plot_scale_loss(result: dict[str, Any], out_dir: Path) -> list[Path]:
    d = result["data"]
    events = d["events"]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    xs = range(len(events))
    width = 0.38
    ax.bar([x - width / 2 for x in xs], [e["flows_moved_median"] for e in events], width, label="flows moved")
    ax.bar(
        [x + width / 2 for x in xs],
        [e["flows_on_leaving_replica_median"] for e in events],
        width,
        label="flows on the leaving replica",
    )
    for x, e in zip(xs, events, strict=True):
        sent = sum(r["sent"] for r in e["runs"])
        lost = sum(r["lost"] for r in e["runs"])
        ax.annotate(f"lost {lost} of {sent:,} pkts", (x, 0), xytext=(0, -28), textcoords="offset points",
                    ha="center", fontsize=8)  # fmt: skip
    ax.set_xticks(list(xs), [e["event"] for e in events], fontsize=8)
    ax.set_ylabel(f"flows of {d['flows']} (median of {d['trials']} trials)")
    ax.set_title("Established flows moved and packets lost during scale events", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return [_save(fig, out_dir, "scale_loss.png")]


def _median(stats: dict[str, Any] | None) -> float:
    return float((stats or {}).get("median") or 0.0)


def _agent_window(rows: list[tuple[str, float, float]]) -> tuple[float, float] | None:
    """The window from the first agent row to the end of the last row (the zoomed panel)."""
    agent = [start for label, start, _ in rows if label.startswith("agent")]
    if not agent:
        return None
    return min(agent), max(start + duration for _, start, duration in rows)


def plot_reaction(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Figs. 6 and 7 from the reaction section's result (medians over the repetitions)."""
    d = result["data"]
    reps = d.get("repetitions")
    steps = d.get("agent_steps") or {}
    # Interfaces per replica = TC detaches per scale-in (detach happens only there).
    per_event = round((steps.get("tc_detach_us") or {}).get("n", 0) / reps) if reps else 0
    attach_ms = _median(steps.get("tc_attach_us")) / 1000 * per_event
    detach_ms = _median(steps.get("tc_detach_us")) / 1000 * per_event
    rows6: list[tuple[str, float, float]] = []
    for label, start, duration in d["gantt_scale_out"]:
        if str(label).startswith("agent reconcile") and per_event:
            rows6.append((f"agent: TC attach x{per_event}", float(start), attach_ms))
            rest = max(0.0, float(duration) - attach_ms)
            rows6.append(("agent: rest (maps, Maglev, state)", float(start) + attach_ms, rest))
        else:
            rows6.append((str(label), float(start), float(duration)))
    fig6 = plot_gantt(
        rows6,
        f"Fig. 6: reaction to a new replica ({d.get('nf')}, median of {reps})",
        out_dir,
        "fig6_reaction_new_replica.png",
        zoom=_agent_window(rows6),
    )
    scale_in = d["scale_in"]
    pre_stop_ms = float(d.get("pre_stop_seconds", 0.0)) * 1000
    out_of_table = _median(scale_in.get("terminating_to_out_of_table_ms"))
    drain = _median(scale_in.get("terminating_reconcile_ms"))
    gone = _median(scale_in.get("gone_reconcile_ms"))
    rows7 = [
        ("pod termination (preStop delay)", 0.0, pre_stop_ms),
        ("terminating -> out of Maglev table", 0.0, out_of_table),
        ("agent reconcile: drain (maps, Maglev)", max(0.0, out_of_table - drain), drain),
    ]
    if per_event:
        rows7.append((f"agent when gone: TC detach x{per_event}", pre_stop_ms, detach_ms))
        rows7.append(("agent when gone: rest", pre_stop_ms + detach_ms, max(0.0, gone - detach_ms)))
    else:
        rows7.append(("agent reconcile: gone (TC detach)", pre_stop_ms, gone))
    fig7 = plot_gantt(
        rows7,
        f"Fig. 7: reaction to a terminating replica (median of {reps}; dashed: out of the chain)",
        out_dir,
        "fig7_reaction_terminating.png",
        marker_ms=out_of_table,
        zoom=(0.0, max(out_of_table, drain) * 1.1 or 1.0),
    )
    paths = [fig6, fig7]
    if steps:
        fig, ax = plt.subplots(figsize=(6, 3))
        labels = sorted(steps)
        ax.barh(range(len(labels)), [_median(steps[k]) for k in labels], color="#55a868")
        ax.set_yticks(range(len(labels)), [k.replace("_us", "") for k in labels])
        ax.set_xlabel("µs per call (median)")
        ax.set_title("Agent work split: cost of one data-plane operation", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        paths.append(_save(fig, out_dir, "reaction_agent_steps.png"))
    return paths


MULTINODE_AXES = {"tcp_gbps": "TCP throughput", "udp_pps": "64 B UDP rate", "lat_p50_us": "p50 latency"}


def plot_multinode(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Paired ratio of each comparison (path / reference) per metric, with its interval; dashed: the
    cross-node targets against plain VXLAN."""
    d = result["data"]
    comparisons = [c for c in d["paired"] if any(d["paired"][c].get(m) for m in MULTINODE_AXES)]
    bounds = {m: t.get("bound") for m, t in d["targets"].get("cross_node_vs_vxlan", {}).items()}
    fig, axes = plt.subplots(1, len(MULTINODE_AXES), figsize=(11, 0.6 * len(comparisons) + 1.6), sharey=True)
    for ax, (metric, title) in zip(axes, MULTINODE_AXES.items(), strict=True):
        for y, comparison in enumerate(comparisons):
            est = d["paired"][comparison].get(metric)
            if not est:
                continue
            ax.errorbar(
                est["median"],
                y,
                xerr=[[est["median"] - est["low"]], [est["high"] - est["median"]]],
                fmt="o",
                capsize=3,
            )
        ax.axvline(1.0, color="grey", lw=0.8)
        if bounds.get(metric):
            ax.axvline(bounds[metric], color="black", ls="--", lw=0.8)
        ax.set_xlabel(f"{title} ratio", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(comparisons)), comparisons, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(
        f"Multi-node: {d['params']['rounds']} interleaved rounds (median paired ratio with its sign-test "
        "interval; dashed: cross-node target vs plain VXLAN)",
        fontsize=9,
    )
    return [_save(fig, out_dir, "multinode.png")]


PLOTTERS: dict[str, Callable[[dict[str, Any], Path], list[Path]]] = {
    "resources": plot_resources,
    "traffic": plot_traffic,
    "switched": plot_switched,
    "path_cost": plot_path_cost,
    "reaction": plot_reaction,
    "remap": plot_remap,
    "session_fill": plot_session_fill,
    "control_plane": plot_control_plane,
    "scale_loss": plot_scale_loss,
    "multinode": plot_multinode,
}
