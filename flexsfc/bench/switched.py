"""Packet rate and TCP throughput of each path with the path switched under one running sender.

The `traffic` section compares variants built as separate chains, measured seconds apart by fresh
tool runs. On this VM the rate one sender reaches moves by 10-30 % from one second to the next, so
30 such pairs still leave an interval of +-8 % around a ratio: wider than the 3 % margin of the
data-plane targets. Here one client pod and one server pod are joined by every variant's path at
once (flexsfc.bench.switched_paths); one sender runs for the whole phase, and every cycle visits
each path for SLOT_S seconds in a shuffled order. The rate of a slot is what the server pod's IP
layer received during it (its netns's InReceives and InOctets counters, read at both ends of the
slot). A cycle's ratios pair slots a fraction of a second apart, with the same sender process and
socket, so both the machine's drift and everything about the endpoints cancel out. What is left is
the rate's own jitter (short dips to half the rate, from the scheduler and the hypervisor): 800
cycles put the median ratio within an interval of about +-2.5 %, three times narrower than the
`traffic` section's 30 rounds, in a third of the time.

Two phases: 64 B UDP from one unthrottled iperf3 sender (its CPU runs the whole forwarding path in
softirq, so the rate is what sender plus path cost), then one iperf3 TCP stream.
"""

import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from flexsfc.bench import paired, tools
from flexsfc.bench.common import BenchContext, SectionSkipped, communicate_or_kill, section_result, summary
from flexsfc.bench.switched_paths import BARE_PEER, SwitchedPaths, delivered
from flexsfc.bench.topology import SERVER_IP, Variant

# Seconds measured per path per cycle. One sender's rate over 0.2 s slots varies by 20 % (short dips
# to half the rate); 50 ms slots vary more (30 %) but give four times the pairs: for the same time the
# interval of the median ratio is about 1.4 times narrower.
SLOT_S = 0.05
SETTLE_S = 0.005  # after a switch, before the slot starts: the packets in flight on the old path land
WARM_UP_S = 1.0  # after the sender starts
VETH, BRIDGE = Variant.VETH.value, Variant.BRIDGE.value
XC_PATHS = (Variant.XC_PEER.value, Variant.XC_REDIRECT.value)  # the candidates the targets apply to
PATHS = (VETH, BRIDGE, *XC_PATHS, BARE_PEER)
THROUGHPUT_TARGET = 0.97  # of the direct veth (issue 3)


def run(ctx: BenchContext) -> dict[str, Any]:
    if shutil.which("iperf3") is None:
        raise SectionSkipped("iperf3 not installed: run scripts/setup.sh")
    from flexsfc.bench.dataplane_access import dataplane_unavailable

    reason = dataplane_unavailable()
    if reason:
        raise SectionSkipped(reason)
    started = time.monotonic()
    cycles = ctx.pick(3, 800)
    rng = random.Random(ctx.seed)
    phases: dict[str, Any] = {}
    with SwitchedPaths(PATHS) as paths, tools.Servers(paths, 1) as servers:
        for path in PATHS:
            paths.switch(path)
            if not _wait_reachable(paths):
                raise SectionSkipped(f"{path}: server unreachable from the client")
        server_pid = servers.procs[0].pid
        for phase, argv, rate_of in (
            ("udp_pps", _udp_sender_argv, lambda d, s: d.packets / s),
            ("tcp_gbps", _tcp_sender_argv, lambda d, s: d.octets * 8 / s / 1e9),
        ):
            ctx.log(f"switched: {phase}, {cycles} cycles of {len(PATHS)} x {SLOT_S} s")
            slots = _run_phase(paths, server_pid, argv, rate_of, cycles, rng)
            phases[phase] = {"slots": slots, "analysis": analyse(slots)}
    data = {
        "slot_s": SLOT_S,
        "settle_s": SETTLE_S,
        "cycles": cycles,
        "paths": list(PATHS),
        "counter": "server pod's IP layer: InReceives (udp_pps), IpExt InOctets (tcp_gbps)",
        "targets": {"vs_veth_at_least": THROUGHPUT_TARGET, "vs_bridge_above": 1.0},
        "phases": phases,
    }
    return section_result(ctx, "switched", data, started)


def _wait_reachable(paths: SwitchedPaths, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if paths.reachable(0.25):
            return True
    return False


def _udp_sender_argv(seconds: int) -> list[str]:
    return [
        "iperf3", "-c", SERVER_IP, "-p", str(tools.UDP_BASE_PORT), "-u", "-l", str(tools.UDP_PAYLOAD),
        "-b", "0", "-t", str(seconds),
    ]  # fmt: skip


def _tcp_sender_argv(seconds: int) -> list[str]:
    return ["iperf3", "-c", SERVER_IP, "-p", str(tools.TCP_PORT), "-t", str(seconds)]


def _run_phase(
    paths: SwitchedPaths,
    server_pid: int,
    sender_argv: Callable[[int], list[str]],
    rate_of: Callable[[Any, float], float],
    cycles: int,
    rng: random.Random,
) -> list[dict[str, Any]]:
    # Ample time: the phase ends by stopping the sender, never by the sender running out.
    seconds = int(WARM_UP_S + cycles * len(PATHS) * (SLOT_S + SETTLE_S) * 2) + 10
    paths.switch(VETH)
    sender = subprocess.Popen(
        ["ip", "netns", "exec", paths.client, *sender_argv(seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    slots: list[dict[str, Any]] = []
    try:
        time.sleep(WARM_UP_S)
        for cycle in range(cycles):
            order = list(PATHS)
            rng.shuffle(order)
            for path in order:
                if sender.poll() is not None:
                    err = sender.stderr.read() if sender.stderr else ""
                    raise tools.ToolError(f"sender exited early ({sender.returncode}): {err[-400:]}")
                paths.switch(path)
                time.sleep(SETTLE_S)
                t0, c0 = time.monotonic(), delivered(server_pid)
                time.sleep(SLOT_S)
                t1, c1 = time.monotonic(), delivered(server_pid)
                seconds_measured = t1 - t0
                diff = type(c0)(packets=c1.packets - c0.packets, octets=c1.octets - c0.octets)
                slots.append(
                    {
                        "cycle": cycle,
                        "path": path,
                        "seconds": seconds_measured,
                        "packets": diff.packets,
                        "octets": diff.octets,
                        "rate": rate_of(diff, seconds_measured),
                    }
                )
    finally:
        _stop(sender)
        paths.switch(VETH)
    return slots


def _stop(sender: subprocess.Popen[str]) -> None:
    """SIGINT first: iperf3 then ends its test with the server, which is ready for the next phase."""
    if sender.poll() is None:
        sender.send_signal(signal.SIGINT)
    communicate_or_kill(sender, 5)  # killed when it does not stop


def analyse(slots: list[dict[str, Any]]) -> dict[str, Any]:
    """Per path: rates, and the paired ratio to the veth of the same cycle with its confidence
    interval; for the cross-connections also the ratio to the bridge, and the verdicts against the
    targets (at least THROUGHPUT_TARGET of the veth, above the bridge)."""
    by_cycle: dict[int, dict[str, float]] = {}
    for slot in slots:
        by_cycle.setdefault(slot["cycle"], {})[slot["path"]] = slot["rate"]
    present = {slot["path"] for slot in slots}
    out: dict[str, Any] = {}
    for path in [p for p in PATHS if p in present]:
        mine = [c.get(path) for c in by_cycle.values()]
        entry: dict[str, Any] = {"rate": summary(r for r in mine if r is not None)}
        judged = path in XC_PATHS
        for reference, bound in ((VETH, THROUGHPUT_TARGET), (BRIDGE, 1.0)):
            if path == reference or reference not in present or (reference == BRIDGE and not judged):
                continue
            est = paired.estimate(paired.ratios(mine, [c.get(reference) for c in by_cycle.values()]))
            comparison: dict[str, Any] = est.as_dict() if est else {}
            if judged:
                comparison.update(bound=bound, verdict=paired.at_least(est, bound).value)
            entry[f"vs_{reference}"] = comparison
        out[path] = entry
    return out
