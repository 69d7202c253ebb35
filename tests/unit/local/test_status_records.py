"""The runtime's typed records against the documents the control socket and the state file carry (no root).

A Runtime over an in-memory data plane, with the example chain at zero replicas and one pod put in
place by hand (nothing is started), answers typed records; their JSON must keep the keys, their order
and the values the supervisor has always sent, and read back to equal records.
"""

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexsfc.agent.types import ReplicaPhase
from flexsfc.dataplane.api import PortStats, ReplicaPort, ReplicaState, SessionEntry
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.pod import Pod
from flexsfc.local.runtime import Runtime, RuntimeRequestError, read_state
from flexsfc.local.state import RuntimeState
from flexsfc.local.status import (
    ApplyResult,
    Attachment,
    PodStatus,
    ProcessInfo,
    Reaction,
    ReadyStatus,
    RuntimeStatus,
    ScaleResult,
    SessionRecord,
)
from flexsfc.local.supervisor import ControlServer
from flexsfc.model.loader import load_plan
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import Plan, Side
from flexsfc.testing.memory import MemoryDataplane

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "transparent-firewall"
XC = "transparent-firewall-nat-firewall"
DP_XC = f"default/{XC}"  # its name in the data plane: cross-connections are namespaced


class FixedCountersDataplane(MemoryDataplane):
    """Keeps what the reconciler sets; counters, sessions and DP_XC's side B are fixed."""

    def replicas(self, xc: str, side: Side) -> list[ReplicaPort]:
        if (xc, side) == (DP_XC, Side.B):
            return [ReplicaPort(10, "u-1"), ReplicaPort(30, "u-2", ReplicaState.DRAINING)]
        return super().replicas(xc, side)

    def port_stats(self) -> dict[int, PortStats]:
        return {10: PortStats(10, 1, 100, 2, 200, 3), 11: PortStats(11, 4, 400, 5, 500, 6)}

    def drop_stats(self) -> dict[str, int]:
        return {"no_replica": 3, "not_ip": 0}

    def sessions(self, xc: str | None = None, limit: int = 10000) -> list[SessionEntry]:
        entries = [
            SessionEntry(DP_XC, 6, "10.0.0.1", 40000, "10.0.0.2", 9000, 20, 10),
            SessionEntry(DP_XC, 17, "10.0.0.1", 40001, "10.0.0.2", 9000, 20, 99),
        ]
        return [e for e in entries if xc in (None, e.xc)]


def _plan(firewall: int = 0) -> Plan:
    """The example chain with no replica but `firewall` of the firewall: the tests add that pod by hand."""
    plan = load_plan(EXAMPLE)
    deployments = [
        dataclasses.replace(d, replicas=firewall if d.nf == "firewall" else 0) for d in plan.deployments
    ]
    return dataclasses.replace(plan, deployments=deployments)


def _record(ifname: str, ifindex: int) -> AttachmentRecord:
    return AttachmentRecord(
        container_id="u1",
        ifname=ifname,
        netns="/run/netns/fxt-firewall-abc",
        network=f"n-{ifname}",
        host_ifname=f"h{ifindex}",
        host_ifindex=ifindex,
        mac="02:00:00:00:00:01",
        mode="L2",
        ips=("10.0.0.3/24",),
    )


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    config = RuntimeConfig(state_dir=str(tmp_path / "rt"), pin_dir=str(tmp_path / "pins"), netns_prefix="fxt")
    rt = Runtime(config, dataplane_factory=FixedCountersDataplane)
    rt.apply(_plan(), "/manifests")
    rs = rt.sets["default/firewall"]
    pod = Pod(
        name="firewall-abc",
        uid="u-1",
        namespace="default",
        deployment="firewall",
        nf="firewall",
        netns="fxt-firewall-abc",
        spec=rs.pod_spec,
        attachments=[Attachment("eth1", "n-eth1", {"type": "flexsfc-cni"}, added=False)],
        log_path="/tmp/firewall-abc.log",
        workdir="/tmp/firewall-abc",
        phase=ReplicaPhase.RUNNING,
        records=[_record("eth1", 10), _record("eth2", 11)],
        processes=[ProcessInfo("firewall", 4242, 17)],
    )
    pod.times.running = 12.5
    with rt._lock:
        rs.pods[pod.uid] = pod
        rs.desired = 1
    try:
        yield rt
    finally:
        with rt._lock:
            # Never started: nothing of it to stop; at 0 replicas the monitor starts no replacement.
            rs.desired = 0
            rs.pods.clear()
        assert rt.shutdown() == []


def _roundtrip(doc: object) -> object:
    return json.loads(json.dumps(doc))


def test_status_document_keeps_its_keys_order_and_values(runtime: Runtime) -> None:
    runtime.event("a pass", runtime.agent.sync("test"))
    runtime.event("no pass")
    status = runtime.status()
    doc = status.to_json()
    assert list(doc) == [
        "supervisorPid",
        "countersTime",
        "source",
        "chains",
        "crossConnections",
        "deployments",
        "pods",
        "drops",
        "reactions",
        "events",
        "cni",  # added last: the supervisor's CNI socket (it serves the shim as the node agent)
    ]
    assert doc["cni"] == {
        "socket": str(runtime.config.cni_socket),
        "served": {},
        "failed": {},
        "replayed": 0,
    }
    assert RuntimeStatus.from_json(doc).cni == status.cni
    assert doc["source"] == "/manifests" and isinstance(doc["countersTime"], float)
    assert doc["chains"] == [
        {
            "name": "transparent-firewall",
            "namespace": "default",
            "nfs": ["client", "nat", "firewall", "gw", "server"],
        }
    ]
    xc = next(x for x in doc["crossConnections"] if x["name"] == XC)
    assert xc == {
        "name": XC,
        "namespace": "default",
        "chain": "transparent-firewall",
        "sideA": "nat:eth2",
        "sideB": "firewall:eth1",
        "mode": "L3/L2",
        "sessions": 2,
        "activeA": 0,
        "drainingA": 0,
        "activeB": 1,
        "drainingB": 1,
    }
    assert doc["deployments"][2] == {
        "name": "firewall",
        "namespace": "default",
        "nf": "firewall",
        "desired": 1,
        "running": 1,
        "pending": 0,
        "terminating": 0,
        "lastError": "",
    }
    [pod] = doc["pods"]
    assert list(pod) == [
        "name",
        "uid",
        "namespace",
        "deployment",
        "nf",
        "netns",
        "phase",
        "reason",
        "logPath",
        "workdir",
        "attachments",
        "records",
        "processes",
        "times",
        "toPackets",
        "toBytes",
        "fromPackets",
        "fromBytes",
        "sessions",
        "sessionsCreated",
    ]
    assert pod["phase"] == "running"
    assert pod["attachments"] == [
        {"ifname": "eth1", "network": "n-eth1", "config": {"type": "flexsfc-cni"}, "added": False}
    ]
    assert pod["records"][1] == _record("eth2", 11).to_json_dict()
    assert pod["processes"] == [{"container": "firewall", "pid": 4242, "start_ticks": 17}]
    assert pod["times"]["running"] == 12.5 and next(iter(pod["times"])) == "created"
    # Counters summed over ports 10 and 11; one session has port 10 at an end (the other 99).
    assert [pod[k] for k in list(pod)[14:]] == [7, 700, 5, 500, 1, 9]
    assert doc["drops"] == {"no_replica": 3, "not_ip": 0}
    assert [list(e) for e in doc["events"]] == [
        ["time", "message", "error", "reconcileMs", "steps"],
        ["time", "message", "error"],
    ]
    assert RuntimeStatus.from_json(_roundtrip(doc)) == status  # type: ignore[arg-type]
    assert status.pod("firewall-abc").counters is not None
    assert status.deployment("firewall").running == 1


def test_status_shows_the_data_planes_anomalies(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.status().anomalies == {} and "anomalies" not in runtime.status().to_json()
    events = {"session_created": 9, "session_collision": 4, "session_table_full": 0, "events_lost": 2}
    monkeypatch.setattr(FixedCountersDataplane, "event_stats", lambda self: events)
    status = runtime.status()
    assert status.anomalies == {"session_collision": 4, "events_lost": 2}
    assert RuntimeStatus.from_json(_roundtrip(status.to_json())).anomalies == status.anomalies  # type: ignore[arg-type]


def test_sessions_name_the_pods_on_both_ends(runtime: Runtime) -> None:
    sessions = runtime.sessions(XC)
    assert [s.to_json() for s in sessions] == [
        {
            "xc": DP_XC,
            "proto": 6,
            "addrLo": "10.0.0.1",
            "portLo": 40000,
            "addrHi": "10.0.0.2",
            "portHi": 9000,
            "podA": "",
            "podB": "firewall-abc",
        },
        {
            "xc": DP_XC,
            "proto": 17,
            "addrLo": "10.0.0.1",
            "portLo": 40001,
            "addrHi": "10.0.0.2",
            "portHi": 9000,
            "podA": "",
            "podB": "",
        },
    ]
    assert [SessionRecord.from_json(s.to_json()) for s in sessions] == sessions


def test_apply_and_scale_results(runtime: Runtime) -> None:
    unchanged = runtime.apply(_plan(firewall=1), "/manifests")
    assert unchanged.to_json() == {"created": [], "scaled": [], "removed": [], "changed": False}
    assert ApplyResult.from_json(unchanged.to_json()) == unchanged
    assert ApplyResult(created=("a",)).to_json() == {
        "created": ["a"],
        "scaled": [],
        "removed": [],
        "changed": True,
    }

    scaled = runtime.scale("firewall", 1)
    assert scaled.to_json() == {"deployment": "firewall", "namespace": "default", "from": 1, "to": 1}
    assert ScaleResult.from_json(scaled.to_json()) == scaled
    with pytest.raises(RuntimeRequestError, match="no Deployment or network function named 'nope'"):
        runtime.scale("nope", 1)


def test_supervisor_sends_the_records_as_json(runtime: Runtime) -> None:
    server = ControlServer(runtime)
    try:
        runtime.reactions.append(
            Reaction("firewall-abc", "firewall", "running->first packet", 1.5, {"read": 0.1})
        )
        ready = server.dispatch({"op": "ready"})
        assert list(ready) == ["ready", "error", "deployments"] and ready["ready"] is True
        assert ReadyStatus.from_json(ready).deployments == tuple(runtime.summary())
        reactions = server.dispatch({"op": "reactions"})
        assert reactions == [
            {
                "pod": "firewall-abc",
                "nf": "firewall",
                "kind": "running->first packet",
                "ms": 1.5,
                "steps": {"read": 0.1},
            }
        ]
        status = server.dispatch({"op": "status"})
        assert json.dumps(status) == json.dumps(RuntimeStatus.from_json(_roundtrip(status)).to_json())  # type: ignore[arg-type]
        sessions = server.dispatch({"op": "sessions", "xc": XC})
        assert sessions == [s.to_json() for s in runtime.sessions(XC)]
    finally:
        server.server_close()


def test_state_file_reads_back_as_written(runtime: Runtime) -> None:
    runtime.persist()
    raw = json.loads(runtime.config.state_file.read_text())
    assert list(raw) == [
        "supervisorPid",
        "source",
        "config",
        "deployments",
        "pods",
        "orphans",
        "failed",
        "reactions",
    ]
    assert raw["config"] == {
        "stateDir": runtime.config.state_dir,
        "pinDir": runtime.config.pin_dir,
        "netnsPrefix": runtime.config.netns_prefix,
    }
    assert raw["deployments"]["default/firewall"] == {"nf": "firewall", "desired": 1, "lastError": ""}
    assert "toPackets" not in raw["pods"][0]  # counters belong to a live status only
    state = read_state(runtime.config)
    assert state is not None and state.to_json() == raw
    assert state.config == runtime.config
    [pod] = state.pods
    assert pod == runtime.pods()[0].status()
    assert [p.name for p in state.running_pods("firewall")] == ["firewall-abc"]
    assert pod.replica() == runtime.pods()[0].replica()
    assert RuntimeState.from_json(state.to_json()) == state


def test_stale_status_holds_only_pods_and_reactions() -> None:
    pod = PodStatus.from_json(
        {
            "name": "p",
            "uid": "u",
            "namespace": "default",
            "deployment": "d",
            "nf": "nf",
            "netns": "fx-p",
            "phase": "gone",
            "reason": "",
            "logPath": "/l",
            "workdir": "/w",
            "attachments": [],
            "records": [],
            "processes": [],
            "times": {},
        }
    )
    assert pod.counters is None and pod.phase is ReplicaPhase.GONE
    stale = RuntimeStatus(pods=(pod,), stale=True)
    assert list(stale.to_json()) == ["pods", "reactions", "stale"]
    assert RuntimeStatus.from_json(stale.to_json()) == stale
