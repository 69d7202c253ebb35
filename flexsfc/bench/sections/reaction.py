"""Reaction times of the local runtime and the node agent (paper Figs. 6-7), measured, not asserted.

A local runtime (in this process, real data plane with its own pin dir) runs the paper's chain with
short preStop delays; a client keeps long-lived flows and opens new short flows at a steady rate. The
firewall is scaled 1 -> 2 -> 1 `repetitions` times. For each repetition:
- scale-out: event (scale request) -> pod created -> networks (CNI ADD) -> containers started ->
  running (ready) -> agent reconciled -> first packet delivered to the new replica;
- scale-in: terminating -> out of the Maglev table (agent reconcile done).
The agent's steps are split by timing the data-plane calls it makes: TC attach (tcfilter) and detach (libbpf),
map updates, and Maglev table builds (wrappers installed for the run only). The first-packet time
includes waiting for a new flow that hashes to the new replica (the client opens `new_flows` per second).

`python -m flexsfc.bench.reaction [--repetitions N]` prints the result as JSON.
"""

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from flexsfc.bench.context import BenchContext, section_result
from flexsfc.bench.stats import SPREAD, summary
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.runtime import Runtime
from flexsfc.local.scenario import TrafficRun, chain_ends
from flexsfc.model.loader import load_plan

TARGET_MS = 50.0
EXAMPLE = "transparent-firewall"
NF = "firewall"


def _spread(values: list[float]) -> dict[str, float | int | None]:
    return summary(values, SPREAD, ndigits=3)


class StepTimer:
    """Times calls of named functions (module attributes) while installed; restores them after."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def installed(self, targets: dict[str, tuple[Any, str]]) -> Iterator[None]:
        originals = []
        for label, (owner, attr) in targets.items():
            original = getattr(owner, attr)
            originals.append((owner, attr, original))
            setattr(owner, attr, self._wrap(label, original))
        try:
            yield
        finally:
            for owner, attr, original in originals:
                setattr(owner, attr, original)

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        samples = self.samples.setdefault(label, [])

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                samples.append((time.perf_counter_ns() - start) / 1e3)

        return timed


def _chain_copy(dest: Path, pre_stop: float) -> Path:
    src = Path(__file__).resolve().parents[3] / "examples" / EXAMPLE
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:
            if doc.get("kind") == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    hook = (container.get("lifecycle") or {}).get("preStop")
                    if hook:
                        hook["exec"]["command"] = ["sleep", str(pre_stop)]
        (dest / path.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return dest


def measure(
    repetitions: int = 20,
    new_flows: float = 400.0,
    pre_stop: float = 0.2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    from flexsfc.dataplane import libbpf, tables, tcfilter

    tag = uuid.uuid4().hex[:6]
    workdir = Path(tempfile.mkdtemp(prefix="flexsfc-reaction-"))
    config = RuntimeConfig(
        state_dir=str(workdir / "runtime"),
        pin_dir=f"/sys/fs/bpf/flexsfc/bench-{tag}",
        netns_prefix=f"fxb{tag[:4]}",
    )
    path = _chain_copy(workdir / "chain", pre_stop)
    plan = load_plan(path)
    timer = StepTimer()
    targets = {
        "tc_attach_us": (tcfilter, "attach_ingress"),
        "tc_detach_us": (libbpf, "tc_detach_ingress"),
        "map_update_us": (libbpf, "map_update"),
        "maglev_build_us": (tables, "build_table"),
    }
    out: dict[str, list[float]] = {
        k: []
        for k in (
            "event_to_created_ms",
            "created_to_networked_ms",
            "networked_to_started_ms",
            "started_to_running_ms",
            "event_to_running_ms",
            "running_reconcile_ms",
            "running_to_first_packet_ms",
            "terminating_to_out_of_table_ms",
            "terminating_reconcile_ms",
            "gone_reconcile_ms",
        )
    }
    runtime = Runtime(config)
    traffic = None
    try:
        with timer.installed(targets):
            runtime.apply(plan, str(path))
            runtime.wait_ready()
            traffic = TrafficRun(config, chain_ends(plan), tcp=4, udp=4, udp_pps=50, new_flows=new_flows)
            traffic.start()
            time.sleep(1.0)
            for rep in range(repetitions):
                existing = {p.uid for p in runtime.pods()}
                t_event = time.time()
                runtime.scale(NF, 2)
                runtime.wait_ready()
                (pod,) = [p for p in runtime.pods() if p.uid not in existing]
                deadline = time.monotonic() + 10
                while not pod.times.first_packet and time.monotonic() < deadline:
                    time.sleep(0.005)
                t = pod.times
                out["event_to_created_ms"].append((t.created - t_event) * 1e3)
                out["created_to_networked_ms"].append((t.networked - t.created) * 1e3)
                out["networked_to_started_ms"].append((t.started - t.networked) * 1e3)
                out["started_to_running_ms"].append((t.running - t.started) * 1e3)
                out["event_to_running_ms"].append((t.running - t_event) * 1e3)
                if t.first_packet:
                    out["running_to_first_packet_ms"].append((t.first_packet - t.running) * 1e3)
                out["running_reconcile_ms"].append(_reconcile_ms(runtime, f"{pod.name} running"))
                runtime.scale(NF, 1)
                wait_settled_inproc(runtime, NF, 1)
                drained = [
                    r for r in runtime.reactions if r.pod == pod.name and r.kind.startswith("terminating")
                ]
                if drained:
                    out["terminating_to_out_of_table_ms"].append(drained[-1].ms)
                out["terminating_reconcile_ms"].append(_reconcile_ms(runtime, f"{pod.name} terminating"))
                out["gone_reconcile_ms"].append(_reconcile_ms(runtime, f"{pod.name} removed"))
                first_ms = (t.first_packet - t.running) * 1e3 if t.first_packet else float("nan")
                log(
                    f"rep {rep + 1}/{repetitions}: event->running {out['event_to_running_ms'][-1]:.1f} ms, "
                    f"running->first packet {first_ms:.1f} ms"
                )
    finally:
        if traffic is not None:
            traffic.close()
        runtime.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)

    first = out["running_to_first_packet_ms"]
    median_order = [
        ("event -> pod created", "event_to_created_ms"),
        ("netns + CNI ADD", "created_to_networked_ms"),
        ("containers started", "networked_to_started_ms"),
        ("readiness", "started_to_running_ms"),
        ("agent reconcile (maps, Maglev, TC attach)", "running_reconcile_ms"),
        ("running -> first packet", "running_to_first_packet_ms"),
    ]
    gantt, offset = [], 0.0
    for label, key in median_order:
        # The reconcile and the wait for the first packet both start when the replica is running.
        duration = statistics.median(out[key]) if out[key] else 0.0
        gantt.append([label, round(offset, 3), round(duration, 3)])
        if key not in ("running_reconcile_ms", "running_to_first_packet_ms"):
            offset += duration
    return {
        "repetitions": repetitions,
        "nf": NF,
        "example": EXAMPLE,
        "new_flows_per_second": new_flows,
        "pre_stop_seconds": pre_stop,
        "target_running_to_first_packet_ms": TARGET_MS,
        "meets_target": bool(first) and statistics.median(first) <= TARGET_MS,
        "scale_out": {k: _spread(out[k]) for k in [key for _, key in median_order] + ["event_to_running_ms"]},
        "scale_in": {
            k: _spread(out[k])
            for k in ("terminating_to_out_of_table_ms", "terminating_reconcile_ms", "gone_reconcile_ms")
        },
        "agent_steps": {label: _spread(v) for label, v in timer.samples.items()},
        "gantt_scale_out": gantt,
        "samples": {k: [round(x, 3) for x in v] for k, v in out.items()},
    }


def _reconcile_ms(runtime: Runtime, message: str) -> float:
    for event in reversed(runtime.events):
        if event.message.startswith(message) and event.reconcile_ms is not None:
            return event.reconcile_ms
    return float("nan")


def wait_settled_inproc(runtime: Runtime, nf: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Pods leave the runtime's list only after their removal is complete (CNI DEL included).
        if len([p for p in runtime.pods() if p.nf == nf]) == count:
            return
        time.sleep(0.01)
    raise TimeoutError(f"{nf} did not settle at {count}")


def run(ctx: BenchContext) -> dict[str, Any]:
    """Entry point of `flexsfc bench` (section "reaction")."""
    started = time.monotonic()
    data = measure(repetitions=ctx.pick(20, 30), log=ctx.log)
    return section_result(ctx, "reaction", data, started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flexsfc.bench.reaction")
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--new-flows", type=float, default=400.0)
    args = parser.parse_args(argv)
    result = measure(args.repetitions, args.new_flows, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
