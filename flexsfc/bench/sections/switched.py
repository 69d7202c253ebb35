"""Packet rate, TCP throughput and latency of each path, with the path switched under one running
sender.

The `traffic` section compares variants built as separate chains, measured seconds apart by fresh
tool runs. On this VM the rate one sender reaches moves by 10-30 % from one second to the next, so
30 such pairs still leave an interval of +-8 % around a ratio: wider than the 3 % margin of the
data-plane targets. Here one client pod and one server pod are joined by every variant's path at
once (flexsfc.bench.topologies.switched); one sender runs for the whole phase, and every cycle visits
each path for SLOT_S seconds in a shuffled order. The rate of a slot is what the path's interface in
the server pod received during it (its receive counters, read at both ends of the slot). A cycle's
ratios pair slots a fraction of a second apart, with the same sender process and socket, so both
the machine's drift and everything about the endpoints cancel out. What is left is the rate's own
jitter (short dips to half the rate, from the scheduler and the hypervisor), which the median of
800 pairs mostly ignores: intervals of about +-1 %, five to eight times narrower than those of the
`traffic` section's 30 rounds.

Three phases: 64 B UDP from one unthrottled iperf3 sender (its CPU runs the whole forwarding path in
softirq, so the rate is what sender plus path cost), one iperf3 TCP stream, and a 64 B UDP
ping-pong (flexsfc.bench.tools.pingpong) whose round trips carry the slots' clock.
"""

import contextlib
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flexsfc.bench import stats
from flexsfc.bench.context import BenchContext, SectionSkipped, section_result
from flexsfc.bench.stats import summary
from flexsfc.bench.tools import loadgen, pingpong
from flexsfc.bench.tools.process import communicate_or_kill
from flexsfc.bench.topologies.pods import SERVER_IP, Variant
from flexsfc.bench.topologies.switched import BARE_PEER, SwitchedPaths

# Seconds measured per path per cycle. One sender's rate over 0.2 s slots varies by 20 % (short dips
# to half the rate), over 50 ms slots by 30 %; but four times the pairs in the same time gave a
# median ratio's interval four times narrower (+-1 % against +-4 %, 21:00 and 21:07 on 2026-11-26).
SLOT_S = 0.05
# After a switch, before the slot starts: TCP's first segments on the new path (a few may overtake
# the last ones on a path with one more queue) settle. Counting per interface needs no more.
SETTLE_S = 0.005
WARM_UP_S = 1.0  # after the sender starts
VETH, BRIDGE = Variant.VETH.value, Variant.BRIDGE.value
XC_PATHS = (Variant.XC_PEER.value, Variant.XC_REDIRECT.value)  # the candidates the targets apply to
PATHS = (VETH, BRIDGE, *XC_PATHS, BARE_PEER)


@dataclass(frozen=True)
class Target:
    """Issue 3's bounds for a phase: the ratio to the veth and to the bridge, and which way is better."""

    vs_veth: float
    vs_bridge: float
    lower_is_better: bool = False

    def verdict(self, est: stats.RatioEstimate | None, bound: float) -> stats.Verdict:
        return stats.at_most(est, bound) if self.lower_is_better else stats.at_least(est, bound)


TARGETS = {
    "udp_pps": Target(vs_veth=0.97, vs_bridge=1.0),
    "tcp_gbps": Target(vs_veth=0.97, vs_bridge=1.0),
    "latency_us": Target(vs_veth=1.05, vs_bridge=1.0, lower_is_better=True),
}


def run(ctx: BenchContext) -> dict[str, Any]:
    if shutil.which("iperf3") is None:
        raise SectionSkipped("iperf3 not installed: run scripts/setup.sh")
    started = time.monotonic()
    cycles = ctx.pick(3, 800)
    rng = random.Random(ctx.seed)
    phases: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        paths = stack.enter_context(SwitchedPaths(PATHS))
        stack.enter_context(loadgen.Servers(paths, 1, latency=False))
        stack.enter_context(_ping_server(paths))
        for path in PATHS:
            paths.switch(path)
            if not paths.reachable():
                raise loadgen.ToolError(f"{path}: the server is unreachable from the client over this path")
        for phase in TARGETS:
            ctx.log(f"switched: {phase}, {cycles} cycles of {len(PATHS)} x {SLOT_S} s")
            slots = _measure(phase, paths, cycles, rng)
            phases[phase] = {"slots": slots, "analysis": analyse(slots, TARGETS[phase])}
    data = {
        "slot_s": SLOT_S,
        "settle_s": SETTLE_S,
        "cycles": cycles,
        "paths": list(PATHS),
        "values": {
            "udp_pps": "packets/s received by the path's interface in the server pod",
            "tcp_gbps": "Gbit/s of frames received by the path's interface in the server pod",
            "latency_us": "median one-way latency (half the UDP round trip, 64 B) of the slot's samples, µs",
        },
        "targets": {phase: asdict(target) for phase, target in TARGETS.items()},
        "phases": phases,
    }
    return section_result(ctx, "switched", data, started)


@contextlib.contextmanager
def _ping_server(paths: SwitchedPaths) -> Iterator[None]:
    server = subprocess.Popen(
        ["ip", "netns", "exec", paths.server, *pingpong.server_argv()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        server.kill()
        server.wait(timeout=5)


def _measure(phase: str, paths: SwitchedPaths, cycles: int, rng: random.Random) -> list[dict[str, Any]]:
    """The slots of one phase, each with its value (see run's "values")."""
    if phase == "udp_pps":
        argv = [
            "iperf3", "-c", SERVER_IP, "-p", str(loadgen.UDP_BASE_PORT), "-u", "-l", str(loadgen.UDP_PAYLOAD),
            "-b", "0", "-t",
        ]  # fmt: skip
        slots = _run_phase(paths, lambda seconds: [*argv, str(seconds)], cycles, rng)
        for slot in slots:
            slot["value"] = slot["packets"] / slot["seconds"]
        return slots
    if phase == "tcp_gbps":
        argv = ["iperf3", "-c", SERVER_IP, "-p", str(loadgen.TCP_PORT), "-t"]
        slots = _run_phase(paths, lambda seconds: [*argv, str(seconds)], cycles, rng)
        for slot in slots:
            slot["value"] = slot["octets"] * 8 / slot["seconds"] / 1e9
        return slots
    with tempfile.TemporaryDirectory(prefix="flexsfc-switched-") as scratch:
        samples = Path(scratch) / "round_trips.bin"
        slots = _run_phase(
            paths,
            lambda seconds: pingpong.client_argv(SERVER_IP, loadgen.UDP_PAYLOAD, seconds, samples),
            cycles,
            rng,
        )
        medians = pingpong.one_way_medians_us(samples, [(slot["start"], slot["end"]) for slot in slots])
    for slot, median in zip(slots, medians, strict=True):
        slot["value"] = median
    return slots


def _run_phase(
    paths: SwitchedPaths, sender_argv: Callable[[int], list[str]], cycles: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Run the sender while every cycle visits each path for SLOT_S seconds; one record per slot
    with its window (time.monotonic()) and what the path's server-side interface received."""
    # Ample time: the phase ends by stopping the sender, never by the sender running out.
    seconds = int(WARM_UP_S + cycles * len(PATHS) * (SLOT_S + SETTLE_S) * 2) + 10
    paths.switch(VETH)
    slots: list[dict[str, Any]] = []
    with tempfile.TemporaryFile("w+") as errors:  # a pipe nobody reads for minutes could fill up
        sender = subprocess.Popen(
            ["ip", "netns", "exec", paths.client, *sender_argv(seconds)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            text=True,
        )
        try:
            time.sleep(WARM_UP_S)
            for cycle in range(cycles):
                order = list(PATHS)
                rng.shuffle(order)
                for path in order:
                    paths.switch(path)
                    time.sleep(SETTLE_S)
                    before = paths.received(path)
                    start = time.monotonic()
                    time.sleep(SLOT_S)
                    got = paths.received(path) - before
                    end = time.monotonic()
                    if sender.poll() is not None:  # this slot may have seen only part of the traffic
                        errors.seek(0)
                        reason = errors.read()[-400:]
                        raise loadgen.ToolError(f"sender exited early ({sender.returncode}): {reason}")
                    slots.append(
                        {
                            "cycle": cycle,
                            "path": path,
                            "start": start,
                            "end": end,
                            "seconds": end - start,
                            "packets": got.packets,
                            "octets": got.octets,
                        }
                    )
        finally:
            _stop(sender)
            with contextlib.suppress(Exception):  # never hide why the phase ended
                paths.switch(VETH)
    return slots


def _stop(sender: subprocess.Popen[str]) -> None:
    """SIGINT first, so iperf3 ends its test cleanly; killed when it does not stop."""
    try:
        if sender.poll() is None:
            sender.send_signal(signal.SIGINT)
        communicate_or_kill(sender, 5)
    finally:
        if sender.poll() is None:  # interrupted while waiting
            sender.kill()


def analyse(slots: list[dict[str, Any]], target: Target) -> dict[str, Any]:
    """Per path: its slot values, and the paired ratio to the veth of the same cycle with its
    confidence interval; for the cross-connections also the ratio to the bridge, and the verdicts
    against the target. A throughput slot that carried nothing is a result (0), not a gap: it counts
    in the ratios; a latency slot without a sample cannot be paired. Both are reported."""
    by_cycle: dict[int, dict[str, float | None]] = {}
    for slot in slots:
        by_cycle.setdefault(slot["cycle"], {})[slot["path"]] = slot["value"]
    present = {slot["path"] for slot in slots}
    out: dict[str, Any] = {}
    for path in [p for p in PATHS if p in present]:
        mine = [c.get(path) for c in by_cycle.values()]
        entry: dict[str, Any] = {
            "value": summary(v for v in mine if v is not None),
            "empty_slots": sum(1 for v in mine if not v),
        }
        judged = path in XC_PATHS
        for reference, bound in ((VETH, target.vs_veth), (BRIDGE, target.vs_bridge)):
            if path == reference or reference not in present or (reference == BRIDGE and not judged):
                continue
            references = [c.get(reference) for c in by_cycle.values()]
            pairs = [v / r for v, r in zip(mine, references, strict=True) if v is not None and r]
            est = stats.estimate(pairs)
            comparison: dict[str, Any] = est.as_dict() if est else {}
            if judged:
                comparison.update(bound=bound, verdict=target.verdict(est, bound).value)
            entry[f"vs_{reference}"] = comparison
        out[path] = entry
    return out
