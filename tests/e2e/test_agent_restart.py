"""A restarted agent converges from the pinned data plane: with the same picture it changes nothing.

The local runtime runs the paper's chain (real pods, CNI, eBPF data plane); a second, fresh
Reconciler opens the same pinned state in this process, as an agent restarted by its DaemonSet would,
and reconciles the same cross-connections and replicas (read from the runtime's state file).
"""

from pathlib import Path

import pytest
from e2e_local import LocalRuntime, copy_example

from flexsfc.agent.reconciler import Reconciler
from flexsfc.dataplane.facade import Dataplane
from flexsfc.local.scenario import TrafficRun, chain_ends
from flexsfc.local.traffic import summarize
from flexsfc.model.loader import load_plan

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_fresh_agent_on_pinned_state_changes_nothing(local_runtime: LocalRuntime, tmp_path: Path) -> None:
    rt = local_runtime
    path = copy_example("transparent-firewall", tmp_path / "chain")
    plan = load_plan(path)
    rt.up(path)
    state = rt.state()
    assert state is not None
    replicas = [p.replica() for p in state.pods]  # what the runtime's agent was told
    dataplane = Dataplane(rt.config.pin_dir)
    try:
        assert dataplane.reopened
        report = Reconciler(dataplane).reconcile(
            plan.cross_connections,
            replicas,
            chain_settings={(c.namespace, c.name): c.settings for c in plan.chains},
        )
    finally:
        dataplane.close()
    assert not report.changed, report.summary()

    summary = summarize(TrafficRun(rt.config, chain_ends(plan), tcp=4, udp=4, duration=1).start().stop())
    assert summary["udpLost"] == 0 and summary["tcpAlive"] == 4, summary
