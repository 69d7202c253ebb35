"""The path-cost section's arithmetic on a real `perf report` layout and made-up runs.

The sampling itself runs in tests/e2e/test_bench_smoke.py (every section, as root); here only the
parsing of perf's output and the per-packet figures derived from it.
"""

from collections import Counter

import pytest

from flexsfc.bench.sections import path_cost
from flexsfc.bench.tools import loadgen, perfsample

# The layout of `perf report --no-children --sort sym --stdio -F sample,sym` (perf 6.1).
REPORT = """\
# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 29K of event 'cpu-clock'
#
#      Samples  Symbol
# ............  .............................................
#
            40  [.] Nread
           639  [.] __GI___libc_write
           163  [k] __netif_receive_skb_core.constprop.0
            31  [k] __tcf_classify.constprop.0
           206  [k] bpf_prog_0716e843178ed72d_forward
           101  [k] bpf_prog_589dde4831150424_xconnect
            14  [k] bpf_redirect_peer
           114  [k] cls_bpf_classify
           116  [k] skb_do_redirect
            75  [k] tc_run
             9  [k] tcf_classify
             7  [k] dev_get_by_index_rcu
"""


def test_the_report_gives_samples_per_function_without_clone_suffixes() -> None:
    samples = perfsample.parse_report(REPORT)
    assert samples["__netif_receive_skb_core"] == 163
    assert samples["__tcf_classify"] == 31
    assert samples["Nread"] == 40
    assert sum(samples.values()) == 40 + 639 + 163 + 31 + 206 + 101 + 14 + 114 + 116 + 75 + 9 + 7


def test_functions_fall_into_their_part_of_the_path() -> None:
    profile = perfsample.Profile(perfsample.parse_report(REPORT), hz=1000)
    rate = loadgen.Throughput(rate=990_000.0, cpu_seconds_per_second=1.0, offered=1_000_000.0)
    record = path_cost._run_record("xc-peer", 0, rate, 1.0, profile)
    per_packet = record["ns_per_packet"]  # samples / 1000 Hz / 1e6 packets, in ns: 1 sample = 1 ns
    assert per_packet["program"] == pytest.approx(206 + 101)
    assert per_packet["tc_hook"] == pytest.approx(31 + 114 + 75 + 9)
    assert per_packet["redirect"] == pytest.approx(14 + 116 + 7)
    assert per_packet["receive_loop"] == pytest.approx(163)
    assert record["sender_ns_per_packet"] == pytest.approx(1000.0)


def _run(variant: str, round_index: int, **groups: float) -> dict:
    per_packet = {group: groups.get(group, 0.0) for group in path_cost.GROUPS}
    return {
        "variant": variant,
        "round": round_index,
        "ns_per_packet": per_packet,
        "sender_ns_per_packet": 2000.0,
    }


def test_the_cost_over_the_veth_is_paired_by_round() -> None:
    runs = [
        _run("veth", 0, receive_loop=10),
        _run("xc-peer", 0, program=40, tc_hook=20, redirect=20, receive_loop=20),
        _run("bare-peer", 0, program=1, tc_hook=20, redirect=15, receive_loop=20),
        # A slower round: everything costs more, the veth too; the pairing keeps the differences.
        _run("veth", 1, receive_loop=30),
        _run("xc-peer", 1, program=60, tc_hook=30, redirect=30, receive_loop=40),
        _run("bare-peer", 1, program=1, tc_hook=30, redirect=25, receive_loop=40),
    ]
    over = path_cost._over_veth(runs)
    assert over["xc-peer"] == {"program": 50, "tc_hook": 25, "redirect": 25, "receive_loop": 10, "total": 110}
    assert over["bare-peer"]["total"] == 56  # rounds: 46 and 66
    summary = path_cost._summary(runs)
    assert summary["veth"]["total"]["median"] == 20


def test_a_round_without_its_veth_run_is_left_out() -> None:
    runs = [_run("xc-peer", 0, program=40), _run("veth", 1), _run("xc-peer", 1, program=50)]
    assert path_cost._over_veth(runs)["xc-peer"]["program"] == 50


def test_counter_profile_seconds() -> None:
    profile = perfsample.Profile(Counter({"bpf_prog_x": 30, "tc_run": 10}), hz=10)
    assert profile.seconds(path_cost.GROUPS["program"].search) == 3.0
    assert profile.total == 40
