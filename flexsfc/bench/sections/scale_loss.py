"""Packets lost and established flows moved while replicas come and go under a UDP stream.

A client sends a paced many-flow UDP stream (flexsfc.bench.tools.udpflow) through one cross-connection to
server replicas that share one IP and MAC. In the middle of the stream the replica set changes the
way the agent changes it: a replica joins (scale-out), or one leaves with a drain first (terminating:
out of the Maglev table, sessions kept) and its port removed later (gone), or is removed at once.
Every replica counts the packets of each flow; the sender counts what it sent.

Lost = sent - received by all replicas. A flow "moved" when more than one replica received it.
Expected: nothing lost, no flow moved on scale-out; on scale-in only the leaving replica's flows move.
"""

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexsfc.bench.context import BenchContext, section_result
from flexsfc.bench.stats import summary
from flexsfc.bench.tools import udpflow
from flexsfc.bench.topologies.fanout import FanoutTopology
from flexsfc.bench.topologies.pods import SERVER_IP

PORT = 9000
REPLICAS = 3


@dataclass(frozen=True)
class ScaleEvent:
    name: str
    before: tuple[int, ...]  # active replicas before the event
    steps: tuple[
        tuple[float, tuple[int, ...], tuple[int, ...]], ...
    ]  # (at share of stream, active, draining)
    leaving: int | None = None  # the replica that leaves (its flows must move)


EVENTS = (
    ScaleEvent("scale-out 2->3", (0, 1), ((0.4, (0, 1, 2), ()),)),
    ScaleEvent("scale-in 3->2 drained", (0, 1, 2), ((0.3, (0, 1), (2,)), (0.6, (0, 1), ())), leaving=2),
    ScaleEvent("scale-in 3->2 abrupt", (0, 1, 2), ((0.4, (0, 1), ()),), leaving=2),
)


def _python_in(pod: str, args: list[str]) -> list[str]:
    return ["ip", "netns", "exec", pod, sys.executable, "-m", udpflow.__name__, *args]


def _trial(
    topo: FanoutTopology, event: ScaleEvent, flows: int, pps: float, seconds: float, workdir: Path
) -> dict[str, Any]:
    topo.set_replicas(list(event.before))
    procs: list[subprocess.Popen[Any]] = []  # receivers, then the sender
    try:
        for i in range(topo.replicas):
            out = workdir / f"recv{i}.json"
            proc = subprocess.Popen(
                _python_in(topo.replica_pod(i), ["recv", str(PORT), "--out", str(out)]),
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
        for proc in procs:
            if proc.stdout is None or proc.stdout.readline().strip() != "ready":
                raise RuntimeError("udpflow receiver did not start")
        sent_path = workdir / "sent.json"
        procs.append(  # stopped with the receivers if anything goes wrong
            sender := subprocess.Popen(
                _python_in(
                    topo.client,
                    [
                        "send",
                        SERVER_IP,
                        str(PORT),
                        "--flows",
                        str(flows),
                        "--pps",
                        str(pps),
                        "--seconds",
                        str(seconds),
                        "--out",
                        str(sent_path),
                    ],
                )
            )
        )
        started = time.monotonic()
        applied = []
        for share, active, draining in event.steps:
            time.sleep(max(0.0, started + share * seconds - time.monotonic()))
            t0 = time.perf_counter_ns()
            topo.set_replicas(list(active), draining)
            applied.append(
                {"at_s": round(time.monotonic() - started, 3), "ms": (time.perf_counter_ns() - t0) / 1e6}
            )
        if sender.wait(timeout=seconds + 30) != 0:
            raise RuntimeError(f"udpflow sender failed with {sender.returncode}")
        time.sleep(0.3)  # let the last packets arrive
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    sent = json.loads(sent_path.read_text())["sent"]
    per_replica = [json.loads((workdir / f"recv{i}.json").read_text())["flows"] for i in range(topo.replicas)]
    received = sum(entry[0] for flows_of in per_replica for entry in flows_of.values())
    holders: dict[str, set[int]] = {}
    for i, flows_of in enumerate(per_replica):
        for flow in flows_of:
            holders.setdefault(flow, set()).add(i)
    moved = sum(1 for h in holders.values() if len(h) > 1)
    on_leaving = sum(1 for h in holders.values() if event.leaving in h) if event.leaving is not None else 0
    return {
        "sent": sum(sent),
        "received": received,
        "lost": sum(sent) - received,
        "flows": flows,
        "flows_moved": moved,
        "flows_on_leaving_replica": on_leaving,
        "flows_per_replica": [len(f) for f in per_replica],
        "dataplane_updates": applied,
    }


def run(ctx: BenchContext) -> dict[str, Any]:
    started = time.monotonic()
    flows = 64
    pps = ctx.pick(2000, 5000)
    seconds = ctx.pick(1.5, 3.0)
    trials = ctx.pick(1, 5)
    results: list[dict[str, Any]] = []
    with FanoutTopology(REPLICAS) as topo, tempfile.TemporaryDirectory(prefix="flexsfc-bench-") as tmp:
        for event in EVENTS:
            runs = []
            for t in range(trials):
                ctx.log(f"scale_loss: {event.name} trial {t + 1}/{trials}")
                workdir = Path(tmp) / f"{event.name.replace(' ', '_').replace('>', '')}-{t}"
                workdir.mkdir()
                runs.append(_trial(topo, event, flows, pps, seconds, workdir))
            results.append(
                {
                    "event": event.name,
                    "runs": runs,
                    "lost_packets_median": summary(r["lost"] for r in runs)["median"],
                    "lost_packets_max": max(r["lost"] for r in runs),
                    "flows_moved_median": summary(r["flows_moved"] for r in runs)["median"],
                    "flows_on_leaving_replica_median": summary(r["flows_on_leaving_replica"] for r in runs)[
                        "median"
                    ],
                }
            )
    data = {
        "replicas": REPLICAS,
        "flows": flows,
        "pps": pps,
        "seconds": seconds,
        "trials": trials,
        "redirect_mode": "peer",
        "events": results,
    }
    return section_result(ctx, "scale_loss", data, started)
