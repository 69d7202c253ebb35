"""Load makes an NF scale out and back in on the local runtime, and an established session survives.

Everything is real: the local runtime (netns pods, flexsfc-cni, the eBPF data plane with its own pin
directory), a transparent-bridge firewall NF between a client and a server, UDP load from the client
pod's namespace, a long-lived TCP echo session through the chain, and the HPA algorithm driving
`Runtime.scale` from the data plane's per-replica rx counters.
"""

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_local import bridge_chain_manifests
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flexsfc.agent.types import ReplicaPhase
from flexsfc.autoscale.episode import RuntimeAccess, run_autoscale_episode
from flexsfc.autoscale.local import format_tick
from flexsfc.metrics.local import runtime_exporter

pytestmark = [pytest.mark.root, pytest.mark.slow]

CLIENT_IP, SERVER_IP = "10.70.1.1", "10.70.1.2"
# HIGH on one replica asks for ceil(1100 / 400) = 3; spread over 3 it is ~370 each (plus ~60 pps of the
# echo session on the first replica): inside the tolerance, so the size holds. LOW asks for 1.
TARGET_PPS, HIGH_PPS, LOW_PPS, MAX_REPLICAS = 400, 1100, 100, 3

MANIFESTS = bridge_chain_manifests(
    "as-chain",
    "as",
    CLIENT_IP,
    SERVER_IP,
    firewall_grace=5,
    pre_stop_seconds=1,
    server_command='[sh, -c, "socat TCP-LISTEN:7,reuseaddr,fork EXEC:cat & exec sleep infinity"]',
)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[object]:
    from flexsfc.local.config import RuntimeConfig
    from flexsfc.local.runtime import Runtime
    from flexsfc.model.loader import load_plan

    suffix = uuid.uuid4().hex[:6]
    manifests = tmp_path / "chain.yaml"
    manifests.write_text(MANIFESTS)
    config = RuntimeConfig(
        state_dir=str(tmp_path / "state"),
        pin_dir=f"/sys/fs/bpf/flexsfc-test-as-{suffix}",
        netns_prefix=f"as{suffix}",
    )
    rt = None
    try:
        rt = Runtime(config)
        rt.apply(load_plan(manifests), str(manifests))
        rt.wait_ready(60)
        yield rt
    finally:
        errors = rt.shutdown() if rt is not None else []
        shutil.rmtree(config.pin_dir, ignore_errors=True)  # a failed data-plane load may leave it
        assert not [e for e in errors if "data plane destroy" in e], errors


def test_load_scales_firewall_out_and_in_without_losing_session(runtime) -> None:  # type: ignore[no-untyped-def]
    log: list[str] = []
    try:
        result = run_autoscale_episode(
            RuntimeAccess.in_process(runtime),
            "firewall",
            target_pps=TARGET_PPS,
            high_pps=HIGH_PPS,
            low_pps=LOW_PPS,
            max_replicas=MAX_REPLICAS,
            scale_down_window=3.0,
            period=0.5,
            timeout=30,
            on_tick=lambda tick: log.append(format_tick(tick, TARGET_PPS)),
        )
    finally:
        print("\n".join(log))
    print("\n".join(f"{what}: {value}" for what, value in result.summary()))

    moves = [(old, new) for _, old, new in result.moves]
    # Scale-out first (ceil(~1160 / 400) = 3 here; a starved sender on a busy machine may ask for 2
    # first), then only scale-in down to one replica.
    peak = max(new for _, new in moves)
    assert moves[0][0] == 1 and moves[0][1] >= 2 and 2 <= peak <= MAX_REPLICAS, moves
    after_peak = moves[[new for _, new in moves].index(peak) + 1 :]
    assert after_peak and after_peak[-1][1] == 1 and all(new < old for old, new in after_peak), moves
    assert len(result.drained) == peak - 1  # every removed replica was drained first
    # The established TCP session kept working and the data plane never moved it to another replica.
    assert result.session_error is None and result.session_exchanges > 20
    assert result.session_kept_replica is True
    assert result.ok
    [survivor] = [p for p in runtime.pods() if p.nf == "firewall" and p.phase is not ReplicaPhase.GONE]

    # The runtime's exporter names the surviving replica's traffic and the sides' replica counts.
    exporter = runtime_exporter(runtime)
    samples = [
        s
        for f in text_string_to_metric_families(generate_latest(exporter.registry).decode())
        for s in f.samples
    ]
    rx = {
        s.labels["interface"]: s.value
        for s in samples
        if s.name == "flexsfc_nf_rx_packets_total" and s.labels["pod"] == survivor.name
    }
    assert set(rx) == {"eth1", "eth2"} and all(rx.values())  # forward traffic in, echo replies back
    active = {
        s.labels["cross_connection"]
        for s in samples
        if s.name == "flexsfc_xc_replicas"
        and s.labels["nf"] == "firewall"
        and s.labels["state"] == "active"
        and s.value == 1
    }
    assert len(active) == 2  # one replica left on both of the firewall's cross-connections
    reconciles = sum(s.value for s in samples if s.name == "flexsfc_agent_reconcile_duration_seconds_count")
    assert reconciles >= 2 * (peak - 1)  # at least terminating + gone of each removed replica
