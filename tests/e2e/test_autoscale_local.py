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

MANIFESTS = """
apiVersion: flexsfc.io/v1alpha1
kind: ServiceFunctionChain
metadata: {name: as-chain}
spec:
  networkFunctions:
    - {name: client, links: {firewall: eth1}}
    - {name: firewall, links: {client: eth1, server: eth2}}
    - {name: server, links: {firewall: eth1}}
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: as-client-eth1}
spec:
  config: '{"cniVersion": "1.0.0", "name": "as-client-eth1", "type": "flexsfc-cni",
    "macGenerationString": "as-client-eth1",
    "ipam": {"type": "static", "addresses": [{"address": "CLIENT_IP/24"}]}}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: as-fw-eth1}
spec:
  config: '{"cniVersion": "1.0.0", "name": "as-fw-eth1", "type": "flexsfc-cni",
    "macGenerationString": "as-fw-eth1"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: as-fw-eth2}
spec:
  config: '{"cniVersion": "1.0.0", "name": "as-fw-eth2", "type": "flexsfc-cni",
    "macGenerationString": "as-fw-eth2"}'
---
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: as-server-eth1}
spec:
  config: '{"cniVersion": "1.0.0", "name": "as-server-eth1", "type": "flexsfc-cni",
    "macGenerationString": "as-server-eth1",
    "ipam": {"type": "static", "addresses": [{"address": "SERVER_IP/24"}]}}'
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  replicas: 1
  selector: {matchLabels: {flexsfc.io/network-function: client}}
  template:
    metadata:
      labels: {flexsfc.io/network-function: client}
      annotations: {k8s.v1.cni.cncf.io/networks: as-client-eth1@eth1}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - {name: client, command: [sleep, infinity]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: firewall}
spec:
  replicas: 1
  selector: {matchLabels: {flexsfc.io/network-function: firewall}}
  template:
    metadata:
      labels: {flexsfc.io/network-function: firewall}
      annotations: {k8s.v1.cni.cncf.io/networks: "as-fw-eth1@eth1, as-fw-eth2@eth2"}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: firewall
          command: [sh, -c]
          args:
            - |
              set -e
              ip link add br0 type bridge
              ip link set eth1 master br0
              ip link set eth2 master br0
              ip link set eth1 up
              ip link set eth2 up
              ip link set br0 up
              exec sleep infinity
          readinessProbe:
            exec: {command: [sh, -c, "ip -o link show br0 | grep -q LOWER_UP"]}
          lifecycle:
            preStop:
              exec: {command: [sleep, "1"]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: server}
spec:
  replicas: 1
  selector: {matchLabels: {flexsfc.io/network-function: server}}
  template:
    metadata:
      labels: {flexsfc.io/network-function: server}
      annotations: {k8s.v1.cni.cncf.io/networks: as-server-eth1@eth1}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
        - name: server
          command: [sh, -c, "socat TCP-LISTEN:7,reuseaddr,fork EXEC:cat & exec sleep infinity"]
""".replace("CLIENT_IP", CLIENT_IP).replace("SERVER_IP", SERVER_IP)


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
