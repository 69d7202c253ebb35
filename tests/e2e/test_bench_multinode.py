"""`flexsfc bench --quick --only multinode --baseline HEAD` end to end: two simulated nodes, the
cross-node cross-connection, the plain VXLAN floor, the same-node path and the same-node path of the
last commit's data plane all carry traffic, the first-packet measurement gets its packets, and
nothing is left behind.

Real namespaces, veths, VXLAN devices, eBPF and traffic tools; no numeric assertions (figures are for
the benchmark itself, on a quiet machine).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flexsfc.bench.context import read_json

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_multinode_quick(tmp_path: Path) -> None:
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "flexsfc"),
            "bench",
            "--quick",
            "--only",
            "multinode",
            "--baseline",
            "HEAD",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry = read_json(out / "index.json")["sections"]["multinode"]
    assert entry["status"] == "ok", entry.get("reason")
    data = read_json(out / "multinode.json")["data"]
    assert data["paths"] == ["xc-cross-node", "vxlan", "xc-same-node", "xc-same-node-baseline"]
    for path, per in data["samples"].items():  # every path carried every metric's traffic
        for metric in ("tcp_gbps", "udp_pps", "lat_p50_us"):
            assert per[metric] and all(v for v in per[metric]), (path, metric, data["errors"])
    assert set(data["paired"]) == {
        "xc-cross-node/vxlan",
        "xc-same-node/vxlan",
        "xc-cross-node/xc-same-node",
        "xc-same-node/xc-same-node-baseline",
    }
    first = data["first_packet"]
    assert first["replica_added_to_first_packet_ms"]["n"] == first["repetitions"], data["errors"]
    assert first["not_quiet_repetitions"] == 0
    assert data["targets"]["first_packet_median_ms"]["verdict"] in ("met", "missed")
    assert data["setup"]["baseline"]["commit"]
    # No tunnel packet was refused by a receiving node: both agree on identities and node addresses.
    refused = ("tunnel_unknown_node", "tunnel_unknown_target", "tunnel_bad_key")
    for node, drops in data["drops_by_node"].items():
        assert not {k: drops[k] for k in refused if drops.get(k)}, node
    # Everything is gone: the nodes, the pods, the pins (the data planes' and the baseline's).
    left = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [ns for ns in left if ns.startswith("fbench-mn")]
    pins = Path("/sys/fs/bpf/flexsfc")
    assert not [p.name for p in pins.iterdir() if p.name.startswith("bench-mn")] if pins.is_dir() else True


@pytest.mark.root
@pytest.mark.timeout(120)
def test_multinode_topology_removes_everything_after_a_failed_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build that fails half-way (nodes, VXLAN devices, data planes and pods exist) leaves nothing."""
    from flexsfc.bench.topologies import multinode

    def broken(self: multinode.MultiNodeTopology) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(multinode.MultiNodeTopology, "_first_packet_pair", broken)
    topo = multinode.MultiNodeTopology(
        paths=(multinode.MultiNodePath.SAME_NODE, multinode.MultiNodePath.VXLAN)
    )
    with pytest.raises(RuntimeError, match="injected"), topo:
        pass
    tag = f"fbench-{topo._tag}-"
    left = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [ns for ns in left if ns.startswith(tag)]
    pins = Path("/sys/fs/bpf/flexsfc")
    assert (
        not [p.name for p in pins.iterdir() if p.name.startswith(f"bench-{topo._tag}")]
        if pins.is_dir()
        else True
    )
