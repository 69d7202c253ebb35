"""HostPorts against real links: which attachment records the agent may attach to (real veths and
network namespaces, all private to the test and removed after it)."""

import subprocess
from typing import Any

import pytest

from flexsfc.agent.hostports import HostPorts
from flexsfc.cni.state import owner_alias
from flexsfc.model.records import AttachmentRecord
from flexsfc.testing.netlab import add_veth
from flexsfc.util.netns import in_netns, netns_path

pytestmark = pytest.mark.root


def record(ifindex: int, netns: str, container_id: str = "cid-1") -> AttachmentRecord:
    return AttachmentRecord(
        container_id=container_id,
        ifname="eth1",
        netns=netns,
        network="net",
        host_ifname="",
        host_ifindex=ifindex,
        mac="02:00:00:00:00:01",
        mode="L2",
    )


def test_only_a_marked_veth_whose_peer_is_in_the_pods_namespace_is_trusted(netns_factory: Any) -> None:
    host, pod, other = netns_factory("hphost"), netns_factory("hppod"), netns_factory("hpother")
    with in_netns(host):
        ours = add_veth("ours0", "eth1", peer_netns=pod)
        elsewhere = add_veth("else0", "eth1", peer_netns=other)  # marked, but its peer is elsewhere
        unmarked = add_veth("plain0", "eth2", peer_netns=pod)
    for name in ("ours0", "else0"):
        subprocess.run(
            ["ip", "-n", host, "link", "set", name, "alias", owner_alias("cid-1", "eth1")], check=True
        )

    check = HostPorts(owner_alias, netns=host)
    trusted, refused = check.check(
        [
            record(ours, netns_path(pod)),
            record(ours, ""),  # no namespace in the record: the mark alone decides
            record(ours, "/run/netns/no-such-namespace"),  # cannot be opened: the mark alone decides
            record(elsewhere, netns_path(pod)),
            record(unmarked, netns_path(pod)),
            record(ours, netns_path(pod), container_id="cid-2"),  # another attachment's record
            record(1, netns_path(pod)),  # loopback
            record(99999, netns_path(pod)),
        ]
    )
    assert [(r.host_ifindex, r.netns) for r in trusted] == [
        (ours, netns_path(pod)),
        (ours, ""),
        (ours, "/run/netns/no-such-namespace"),
    ]
    reasons = {(r.record.host_ifindex, r.record.container_id): r.reason for r in refused}
    assert "is not in" in reasons[(elsewhere, "cid-1")]
    assert "lacks flexsfc-cni's mark" in reasons[(unmarked, "cid-1")]
    assert "lacks flexsfc-cni's mark" in reasons[(ours, "cid-2")]
    assert "not a veth" in reasons[(1, "cid-1")]
    assert "no such interface" in reasons[(99999, "cid-1")]
