"""The traffic section's analysis on made-up samples: rounds pair up, targets get verdicts, and the
UDP sender calibration keeps the count that delivers most.

No traffic here (that is tests/e2e/test_bench_smoke.py); only the arithmetic on its results.
"""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flexsfc.bench.sections import traffic

ROUNDS = 10


def _series(base: float, factors: list[float]) -> list[Any]:
    return [base * f for f in factors]


def _samples(xc_tcp: list[float]) -> traffic.Samples:
    drift = [1.0, 0.8, 1.2, 0.9, 1.1, 0.85, 1.15, 0.95, 1.05, 1.0]  # the machine, shared by a round's pairs
    empty: list[Any] = [None] * ROUNDS

    def variant(
        scale: float, tcp: list[float] | None = None, ns: list[Any] | None = None
    ) -> dict[str, list[Any]]:
        per = {m: _series(scale * 100, drift) for m in traffic.METRICS}
        per["lat_p50_us"] = _series(10 / scale, drift)
        per["lat_same_cpu_p50_us"] = _series(5 / scale, drift)
        if tcp is not None:
            per["tcp_gbps"] = [30 * d * t for d, t in zip(drift, tcp, strict=True)]
        per["lat_p99_us"] = list(empty)
        per["ns_per_packet"] = ns or []
        return per

    return {
        "2pod": {
            "veth": variant(1.0, tcp=[1.0] * ROUNDS),
            "bridge": variant(0.9),
            "xc-peer": variant(0.99, tcp=xc_tcp, ns=[80.0 + i for i in range(ROUNDS)]),
        }
    }


def test_paired_ratios_cancel_the_drift_shared_by_a_round() -> None:
    samples = _samples(xc_tcp=[0.99] * ROUNDS)
    est = traffic._paired(samples, "veth")["2pod"]["xc-peer"]["udp_pps"]
    # Raw figures spread by +-20 % with the drift; their ratios do not spread at all.
    assert est["low"] == est["high"] == est["median"] == 0.99
    assert est["pairs"] == ROUNDS


def test_targets_report_met_missed_and_unresolved() -> None:
    straddling = [0.95, 0.99, 1.0, 0.96, 0.98, 0.94, 1.01, 0.97, 0.99, 0.95]
    verdicts = traffic._targets(_samples(xc_tcp=straddling))["2pod/xc-peer"]
    assert verdicts["pps_ratio_ge_0.97"] == "met"  # 0.99 in every round
    assert verdicts["tcp_ratio_ge_0.97"] == "unresolved"
    assert verdicts["pps_better_than_bridge"] == "met"
    assert verdicts["latency_better_than_bridge"] == "met"
    assert verdicts["ns_per_packet_lt_100"] == "met"
    assert verdicts["ns_per_packet"]["median"] == 84.5


def test_a_failed_round_drops_only_its_own_pair() -> None:
    samples = _samples(xc_tcp=[0.99] * ROUNDS)
    samples["2pod"]["veth"]["udp_pps"][3] = None
    assert traffic._paired(samples, "veth")["2pod"]["xc-peer"]["udp_pps"]["pairs"] == ROUNDS - 1


def _calibrate(monkeypatch: Any, udp_pps: Any, max_senders: int, errors: list[str]) -> dict[str, Any]:
    monkeypatch.setattr(traffic.loadgen, "udp_pps", udp_pps)
    monkeypatch.setattr(traffic, "_max_senders", lambda: max_senders)
    ctx = traffic.BenchContext(out_dir=Path("/nonexistent"), log=lambda line: None)
    params = traffic.TrafficParams(
        rounds=1, tcp_seconds=1, udp_seconds=1, latency_seconds=1, prog_cost_seconds=1
    )
    return traffic._calibrate_senders(SimpleNamespace(name="2pod-veth"), params, ctx, errors)  # type: ignore[arg-type]


def test_the_calibration_keeps_the_sender_count_that_delivers_most(monkeypatch: Any) -> None:
    # The tool is replaced by a table of rates (the real iperf3 runs in tests/e2e/test_bench_smoke.py):
    # two senders offer more but overload the receiver, which delivers less than one sender alone.
    delivered = {1: 400e3, 2: 250e3, 3: 240e3}
    calls: list[int] = []

    def fake_udp_pps(topo: Any, seconds: float, senders: int) -> traffic.loadgen.Throughput:
        calls.append(senders)
        return traffic.loadgen.Throughput(delivered[senders], 1.0, offered=senders * 380e3)

    errors: list[str] = []
    result = _calibrate(monkeypatch, fake_udp_pps, 3, errors)
    assert result["senders"] == 1
    assert calls == [1, 2, 3] * traffic.CALIBRATION_PASSES  # counts alternate over the passes
    assert result["trials"]["2"][0]["loss"] == 1 - 250e3 / 760e3
    assert errors == []


def test_a_failing_count_is_reported_and_never_chosen(monkeypatch: Any) -> None:
    def fake_udp_pps(topo: Any, seconds: float, senders: int) -> traffic.loadgen.Throughput:
        if senders == 1:
            raise traffic.loadgen.ToolError("iperf3 refused")
        return traffic.loadgen.Throughput(300e3, 1.0, offered=300e3)

    errors: list[str] = []
    result = _calibrate(monkeypatch, fake_udp_pps, 2, errors)
    assert result["senders"] == 2
    assert result["trials"]["1"] == []
    assert len(errors) == traffic.CALIBRATION_PASSES and "iperf3 refused" in errors[0]
