"""The switched-path section's pairing and verdicts on made-up slots, and its reading of the kernel's
IP counters from this process's own network namespace (the real /proc files).

The topology and the traffic run in tests/e2e/test_bench_smoke.py (every section, as root).
"""

import os

import pytest

from flexsfc.bench import switched
from flexsfc.bench.switched_paths import delivered


def _slots(rates: dict[str, list[float]]) -> list[dict[str, object]]:
    return [
        {"cycle": cycle, "path": variant, "rate": rate}
        for variant, series in rates.items()
        for cycle, rate in enumerate(series)
    ]


def test_each_ratio_pairs_slots_of_the_same_cycle() -> None:
    # The machine's rate doubles half-way through; within each cycle the xc has 0.99 of the veth.
    veth = [100.0] * 10 + [200.0] * 10
    analysis = switched.analyse(_slots({"veth": veth, "xc-peer": [v * 0.99 for v in veth]}))
    est = analysis["xc-peer"]["vs_veth"]
    assert est["median"] == est["low"] == est["high"] == pytest.approx(0.99)
    assert est["pairs"] == 20
    assert est["verdict"] == "met"
    assert "vs_veth" not in analysis["veth"]


def test_verdicts_against_the_veth_target_and_the_bridge() -> None:
    veth = [100.0 + i for i in range(20)]
    analysis = switched.analyse(
        _slots(
            {
                "veth": veth,
                "bridge": [v * 0.7 for v in veth],
                "xc-redirect": [v * 0.9 for v in veth],
                "xc-peer": [v * (0.95 if i % 2 else 1.0) for i, v in enumerate(veth)],
            }
        )
    )
    assert analysis["xc-redirect"]["vs_veth"]["verdict"] == "missed"
    assert analysis["xc-peer"]["vs_veth"]["verdict"] == "unresolved"  # straddles 0.97
    assert analysis["xc-peer"]["vs_bridge"]["verdict"] == "met"
    # The bridge is a reference, not a candidate: its ratio is given without a verdict.
    assert "verdict" not in analysis["bridge"]["vs_veth"]
    assert list(analysis) == ["veth", "bridge", "xc-peer", "xc-redirect"]  # the order of switched.PATHS


def test_a_slot_missing_from_a_cycle_drops_only_that_pair() -> None:
    slots = _slots({"veth": [100.0] * 8, "xc-peer": [98.0] * 8})
    slots = [s for s in slots if not (s["path"] == "veth" and s["cycle"] == 3)]
    assert switched.analyse(slots)["xc-peer"]["vs_veth"]["pairs"] == 7


def test_delivered_reads_the_ip_counters_of_a_process_namespace() -> None:
    before = delivered(os.getpid())
    assert before.packets >= 0 and before.octets >= 0
    assert delivered(os.getpid()).packets >= before.packets
