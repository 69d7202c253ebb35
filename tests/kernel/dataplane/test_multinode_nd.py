"""Neighbour discovery across nodes when the far side's address is not programmed (issue 16).

Behind an L2 NF (a bump-in-the-wire bridge) the L3 next hop of a replica is not one of the
cross-connection's programmed neighbours: the replica's neighbour solicitation goes through like a
flow, to the node of the replica that answers, and the advertisement must come back to the replica
that asked. Replicas of one side share their addresses and MAC, hence one link-local source: only the
session of the (requester, target) conversation tells the asker apart. The tunnel's receiving node
used to record that session under the packet's addresses (requester, solicited-node multicast)
instead, so the advertisement was hashed to any replica of the side and the asker never resolved
(found by tests/e2e/test_multinode_dualstack.py: IPv6 through a scaled L3 NF in front of an L2 NF).
"""

from dp_traffic import resolve
from test_multinode import V6, XC, chain

from flexsfc.model.types import Side


def test_advertisement_goes_back_to_the_remote_replica_that_solicited() -> None:
    """The asking client replica sits on node2, the server on node1, eight more client replicas on
    every node (one address, one MAC): node1 must send the server's advertisement to the asker."""
    clients = {"c2": "node2", **{f"x{i}": f"node{i % 3 + 1}" for i in range(8)}}
    with chain(3, {"s1": "node1"}, clients, V6) as c:
        c.lab.neighbours(XC, Side.B, [])  # the server's address unknown to the data plane, as behind L2
        resolve(c.clients["c2"].netns, c.server_ip)
        assert c.lab.events("node2")["tunnel_received"] >= 1  # the advertisement came back through it
