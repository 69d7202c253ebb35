"""The local driver: counters -> per-replica pps -> HPA decision -> scale call.

The scale target is a synthetic replica set (counters advanced by the test, a fake clock): this checks
the driver's arithmetic only. tests/e2e/test_autoscale_local.py runs it on the real local runtime.
"""

from dataclasses import dataclass, field

from flexsfc.agent.types import ReplicaPhase
from flexsfc.autoscale.local import LocalAutoscaler, ReplicaReading, StatusTarget, TargetReading, local_spec


@dataclass
class SyntheticSet:
    name: str = "fw"
    desired: int = 1
    counters: dict[str, int] = field(default_factory=lambda: {"fw-0": 0})
    terminating: set[str] = field(default_factory=set)
    scale_calls: list[int] = field(default_factory=list)

    def read(self) -> TargetReading:
        return TargetReading(
            self.desired,
            tuple(
                ReplicaReading(
                    pod, ReplicaPhase.TERMINATING if pod in self.terminating else ReplicaPhase.RUNNING, n
                )
                for pod, n in self.counters.items()
            ),
        )

    def scale(self, replicas: int) -> None:
        self.scale_calls.append(replicas)
        while len(self.counters) - len(self.terminating) < replicas:
            self.counters[f"fw-{len(self.counters)}"] = 0
        live = [p for p in self.counters if p not in self.terminating]
        self.terminating.update(live[replicas:])
        self.desired = replicas

    def offer(self, total_pps: float, seconds: float) -> None:
        """Spread traffic evenly over the replicas that are not terminating."""
        live = [p for p in self.counters if p not in self.terminating]
        for pod in live:
            self.counters[pod] += int(total_pps * seconds / len(live))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_ramp_up_then_down() -> None:
    target, clock = SyntheticSet(), FakeClock()
    scaler = LocalAutoscaler(target, local_spec(1000, 1, 8, scale_down_window=5), period=1, clock=clock)
    load = [0, 3000, 3000, 3000, 3000, 500, 500, 500, 500, 500, 500, 500, 500]
    desired = []
    for pps in load:
        target.offer(pps, 1.0)
        clock.now += 1.0
        desired.append(scaler.step().desired)
    # t=1: first reading, no rate -> keep 1. t=2: 3000 pps on 1 replica -> 3. Then 1000 each: keep.
    # t=6 load falls to 500 -> recommends 1, held by the 5 s window (t=5 recommended 3) until t=10.
    assert desired == [1, 3, 3, 3, 3, 3, 3, 3, 3, 1, 1, 1, 1]
    assert target.scale_calls == [3, 1]
    # Terminating replicas are not counted: after the scale-in only fw-0 is averaged.
    assert list(scaler.history[-1].pps) == ["fw-0"]


def test_status_target_reads_runtime_status_document() -> None:
    status = {
        "deployments": [{"name": "fw", "nf": "firewall", "desired": 2}],
        "pods": [
            {"name": "fw-a", "deployment": "fw", "phase": "running", "toPackets": 10},
            {"name": "fw-b", "deployment": "fw", "phase": "terminating", "toPackets": 4},
            {"name": "gw-a", "deployment": "gw", "phase": "running", "toPackets": 99},
        ],
    }
    calls: list[tuple[str, int]] = []
    target = StatusTarget("firewall", lambda: status, lambda name, n: calls.append((name, n)))
    reading = target.read()
    assert reading.desired == 2
    assert [(r.pod, r.phase, r.rx_packets) for r in reading.replicas] == [
        ("fw-a", ReplicaPhase.RUNNING, 10),
        ("fw-b", ReplicaPhase.TERMINATING, 4),
    ]
    target.scale(3)
    assert calls == [("fw", 3)]


def test_next_tick_skips_ahead_after_a_late_tick() -> None:
    from flexsfc.autoscale.local import next_tick

    assert next_tick(10.0, 1.0, now=10.4) == 11.0  # on time: stay on the grid
    assert next_tick(10.0, 1.0, now=12.5) == 13.5  # late: one full period from now, no burst


def test_cli_reports_missing_runtime_and_bad_bounds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from flexsfc.cli import main

    runner = CliRunner()
    missing = runner.invoke(main, ["autoscale", "fw", "--target-pps", "100", "--state-dir", str(tmp_path)])
    assert missing.exit_code == 1 and "no local runtime supervisor" in missing.output
    bounds = runner.invoke(main, ["autoscale", "fw", "--target-pps", "100", "--min", "3", "--max", "2"])
    assert bounds.exit_code == 2 and "--max (2) must be >= --min (3)" in bounds.output
    target = runner.invoke(main, ["autoscale", "fw", "--target-pps", "0"])
    assert target.exit_code == 2 and "--target-pps" in target.output


def test_rates_use_the_counter_timestamp_when_the_status_has_one() -> None:
    status = {
        "deployments": [{"name": "fw", "nf": "fw", "desired": 1}],
        "pods": [{"name": "fw-a", "deployment": "fw", "phase": "running", "toPackets": 0}],
        "countersTime": 100.0,
    }
    target = StatusTarget("fw", lambda: status, lambda name, n: None)
    clock = FakeClock()
    scaler = LocalAutoscaler(target, local_spec(1000, 1, 8), period=1, clock=clock)
    scaler.step()
    # The request took long (autoscaler clock +3 s) but the counters were read 2 s after the first.
    status["pods"][0]["toPackets"], status["countersTime"], clock.now = 2000, 102.0, 3.0
    assert scaler.step().pps == {"fw-a": 1000.0}
