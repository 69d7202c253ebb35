"""The switched-path section's pairing, verdicts, table and plot on made-up slots, and the checks the
topology makes before it creates anything.

The topology and the traffic run in tests/e2e/test_bench_smoke.py (every section, as root).
"""

from pathlib import Path

import numpy as np
import pytest

from flexsfc.bench.report import plots, tables
from flexsfc.bench.sections import switched
from flexsfc.bench.tools import pingpong
from flexsfc.bench.topologies.switched import SwitchedPaths

THROUGHPUT = switched.TARGETS["udp_pps"]
LATENCY = switched.TARGETS["latency_us"]


def _slots(rates: dict[str, list[float]]) -> list[dict[str, object]]:
    return [
        {"cycle": cycle, "path": variant, "value": rate}
        for variant, series in rates.items()
        for cycle, rate in enumerate(series)
    ]


def test_each_ratio_pairs_slots_of_the_same_cycle() -> None:
    # The machine's rate doubles half-way through; within each cycle the xc has 0.99 of the veth.
    veth = [100.0] * 10 + [200.0] * 10
    analysis = switched.analyse(_slots({"veth": veth, "xc-peer": [v * 0.99 for v in veth]}), THROUGHPUT)
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
        ),
        THROUGHPUT,
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
    assert switched.analyse(slots, THROUGHPUT)["xc-peer"]["vs_veth"]["pairs"] == 7


def test_latency_is_judged_the_other_way_and_a_slot_without_samples_is_not_paired() -> None:
    veth = [10.0 + 0.1 * i for i in range(20)]
    slots = _slots(
        {
            "veth": veth,
            "bridge": [v * 1.2 for v in veth],
            "xc-peer": [v * 1.02 for v in veth[:19]] + [None],  # type: ignore[list-item]
        }
    )
    entry = switched.analyse(slots, LATENCY)["xc-peer"]
    assert entry["empty_slots"] == 1
    assert entry["vs_veth"]["pairs"] == 19
    assert entry["vs_veth"]["verdict"] == "met"  # 1.02 <= 1.05
    assert entry["vs_bridge"]["verdict"] == "met"  # 0.85 < 1


def test_a_slot_that_carried_nothing_counts_against_its_path() -> None:
    veth = [100.0] * 12
    analysis = switched.analyse(_slots({"veth": veth, "xc-peer": [99.0] * 2 + [0.0] * 10}), THROUGHPUT)
    entry = analysis["xc-peer"]
    assert entry["empty_slots"] == 10
    assert entry["vs_veth"]["pairs"] == 12
    assert entry["vs_veth"]["median"] == 0.0
    assert entry["vs_veth"]["verdict"] == "missed"


@pytest.mark.parametrize(
    "paths",
    [("bridge", "xc-peer"), ("veth", "veth"), ("veth", "xc-nope")],
    ids=["no veth", "twice", "unknown"],
)
def test_bad_path_lists_are_refused_before_anything_is_created(paths: tuple[str, ...]) -> None:
    topo = SwitchedPaths(paths)
    with pytest.raises(ValueError, match="veth among them"):
        topo.build()
    assert topo.namespaces == [] and topo.host_links == []


def test_table_and_plot_cope_with_a_missing_phase(tmp_path: Path) -> None:
    veth = [100.0 + i for i in range(12)]
    slots = _slots(
        {"veth": veth, "bare-peer": [v * 0.97 for v in veth], "xc-peer": [v * 0.9695 for v in veth]}
    )
    data = {
        "paths": list(switched.PATHS),
        "cycles": 12,
        "slot_s": switched.SLOT_S,
        "targets": {"udp_pps": {"vs_veth": 0.97}},
        "phases": {"udp_pps": {"slots": slots, "analysis": switched.analyse(slots, THROUGHPUT)}},
    }
    table = tables.switched(data)
    assert "0.970 [0.970, 0.970] | missed" in table  # three digits: 0.9695 is not shown as met
    assert "bare-peer" in table and "TCP" not in table
    written = plots.plot_switched({"data": data}, tmp_path)
    assert [p.name for p in written] == ["switched.png"] and written[0].stat().st_size > 0


def test_round_trips_fall_into_the_window_they_were_sent_in(tmp_path: Path) -> None:
    """The ping-pong's record layout, as pingpong.c writes it, cut into slot windows."""
    samples = np.zeros(6, dtype=pingpong.SAMPLE)
    samples["sent_ns"] = [
        1_000_000_000,
        1_010_000_000,
        1_020_000_000,
        2_000_000_000,
        2_001_000_000,
        2_002_000_000,
    ]
    samples["rtt_ns"] = [20_000, 30_000, 40_000, 10_000, 12_000, 90_000]
    path = tmp_path / "round_trips.bin"
    samples.tofile(path)
    assert path.stat().st_size == 6 * 12  # packed: u64 + u32
    medians = pingpong.one_way_medians_us(path, [(1.0, 1.05), (2.0, 2.05), (3.0, 3.05)])
    assert medians == [15.0, 6.0, None]  # half the median round trip, in µs
