"""The cluster picture pushed to node agents (flexsfc.agent.picture): round trip and bad input."""

import copy
import ipaddress
from typing import Any

import pytest

from flexsfc.agent.picture import Picture, PictureError, ReplicaEntry, parse_picture
from flexsfc.agent.types import ReplicaPhase
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Mode, SessionTimeouts, XcSide


def _picture() -> Picture:
    xc = CrossConnectionSpec(
        name="c-fw-server",
        chain="c",
        namespace="t1",
        side_a=XcSide("fw", "eth2", "fw-eth2", Mode.L2, "02:00:00:00:00:01"),
        side_b=XcSide(
            "server",
            "eth1",
            "server-eth1",
            Mode.L3,
            "02:00:00:00:00:02",
            (ipaddress.ip_interface("10.0.0.2/24"), ipaddress.ip_interface("fd00::2/64")),
        ),
    )
    settings = {("t1", "c"): ChainSettings(maglev_table_size=251, session_timeouts=SessionTimeouts(tcp=30))}
    replicas = (
        ReplicaEntry("u1", "t1", "fw-1", "fw", ReplicaPhase.RUNNING, "node1"),
        ReplicaEntry("u2", "t1", "fw-2", "fw", ReplicaPhase.TERMINATING, "node2"),
        ReplicaEntry("u3", "t1", "server-1", "server", ReplicaPhase.PENDING, "node2"),
    )
    return Picture("node1", {"node1": "10.250.0.1", "node2": "10.250.0.2"}, (xc,), settings, replicas)


def _raw() -> dict[str, Any]:
    return _picture().to_json()


def test_round_trip() -> None:
    picture = _picture()
    assert parse_picture(picture.to_json()) == picture


def test_for_node_and_topology() -> None:
    other = _picture().for_node("node2")
    assert other.node == "node2"
    topology = other.topology("flexsfc-vx")
    assert topology.node == "node2" and topology.nodes["node1"] == "10.250.0.1"
    assert topology.tunnel_device == "flexsfc-vx"


def _record(ifname: str, ifindex: int) -> AttachmentRecord:
    return AttachmentRecord(
        container_id="c1",
        ifname=ifname,
        netns="/run/netns/p",
        network="fw",
        host_ifname=f"h{ifindex}",
        host_ifindex=ifindex,
        mac="02:00:00:00:00:01",
        mode="L2",
        pod_uid="u1",
    )


def test_local_replicas_get_records_remote_none() -> None:
    record_b = _record("eth2", 12)
    record_a = _record("eth1", 11)
    asked = []

    def records_of(uid: str) -> list[AttachmentRecord]:
        asked.append(uid)
        return [record_b, record_a] if uid == "u1" else []

    replicas = {r.uid: r for r in _picture().nf_replicas(records_of)}
    assert asked == ["u1"]  # remote replicas' records are never looked up: they are not this node's
    assert [r.ifname for r in replicas["u1"].interfaces] == ["eth1", "eth2"]
    assert replicas["u1"].node == "node1"
    assert replicas["u2"].interfaces == () and replicas["u2"].node == "node2"
    assert replicas["u2"].phase is ReplicaPhase.TERMINATING


def _broken(path: list[Any], value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(_raw())
    target: Any = raw
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return raw


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["version"], 2, "picture.version"),
        (["node"], "", "picture.node"),
        (["node"], "node9", "picture.node"),
        (["nodes"], [], "picture.nodes"),
        (["nodes", "node2"], "not-an-ip", "picture.nodes.node2"),
        (["nodes", "node2"], "fd00::1", "picture.nodes.node2"),
        (["nodes", "node2"], "10.250.0.1", "picture.nodes.node2"),  # duplicate address
        (["crossConnections"], {}, "picture.crossConnections"),
        (["crossConnections", 0, "name"], KeyError, "picture.crossConnections[0].name"),
        (["crossConnections", 0, "sideA", "mode"], "L4", "picture.crossConnections[0].sideA.mode"),
        (["crossConnections", 0, "sideB", "addresses", 0], "10.0.0.2", "sideB.addresses[0]"),
        (["crossConnections", 0, "sideB"], None, "picture.crossConnections[0].sideB"),
        (["chains", 0, "maglevTableSize"], 0, "picture.chains[0].maglevTableSize"),
        (["chains", 0, "sessionTimeouts", "udp"], "30", "picture.chains[0].sessionTimeouts.udp"),
        (["replicas", 1, "phase"], "sleeping", "picture.replicas[1].phase"),
        (["replicas", 1, "node"], "node7", "picture.replicas[1].node"),
        (["replicas", 2, "uid"], "u1", "picture.replicas[2].uid"),  # listed twice
        (["replicas", 0], "u1", "picture.replicas[0]"),
    ],
)
def test_bad_input_names_the_field(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(PictureError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_picture(_broken(path, value))


def test_not_an_object() -> None:
    with pytest.raises(PictureError, match="picture: must be an object"):
        parse_picture(["node1"])
