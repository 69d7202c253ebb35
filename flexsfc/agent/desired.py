"""What the node agent wants in its data plane, computed from the picture alone: each side's replica
ports (local and, across nodes, remote), each side's neighbours, and who gets a host port several
sides want. Pure functions: flexsfc.agent.reconciler reads the data plane, asks these what it should
hold and applies the difference.
"""

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

from flexsfc.agent.types import ChainKey, NfReplica, ReplicaPhase, Topology, dataplane_name, side_ports
from flexsfc.dataplane.api import Neighbour, RemoteEndpoint, ReplicaPort, ReplicaState
from flexsfc.dataplane.tunnels import remote_key
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Mode, Side, XcSide

# Chain settings by (namespace, chain); a bare chain name applies in every namespace (front ends
# that only ever hold one namespace's chains, like the local runtime, may still key by name).
ChainSettingsMap = Mapping[ChainKey, ChainSettings] | Mapping[str, ChainSettings]
SideKey = tuple[str, Side]  # (data-plane name, side)

_PHASE_TO_STATE: dict[ReplicaPhase, ReplicaState] = {
    ReplicaPhase.RUNNING: ReplicaState.ACTIVE,
    ReplicaPhase.TERMINATING: ReplicaState.DRAINING,
    ReplicaPhase.GONE: ReplicaState.LEAVING,
}


def desired_ports(
    xc: CrossConnectionSpec,
    side: Side,
    replicas: Iterable[NfReplica],
    topology: Topology | None = None,
    errors: list[str] | None = None,
) -> list[ReplicaPort]:
    """The replica set of one side: replicas of the side's NF that have the side's interface, on
    this node (their records name it) and, with a topology, on every other node (reached through
    the tunnel at their node's address; one without an address is left out and reported in
    `errors`: never a target that would black-hole).

    RUNNING -> ACTIVE, TERMINATING -> DRAINING, GONE -> LEAVING (a source only, until the replica
    leaves the picture: then its ports are removed); PENDING replicas are not listed. Sorted by
    identity (the pod UID) so equal pictures give equal lists, on every node.
    """
    replicas = list(replicas)
    local = replicas if topology is None else [r for r in replicas if topology.is_local(r)]
    ports = [
        ReplicaPort(ifindex=record.host_ifindex, identity=replica.uid, state=_PHASE_TO_STATE[replica.phase])
        for replica, record in side_ports(xc, side, local)
        if replica.phase in _PHASE_TO_STATE
    ]
    if topology is not None:
        spec, name, side_index = xc.side(side), dataplane_name(xc), 0 if side == Side.A else 1
        for replica in replicas:
            if topology.is_local(replica) or replica.phase not in _PHASE_TO_STATE:
                continue
            if replica.nf != spec.nf or replica.namespace != xc.namespace:
                continue
            address = topology.nodes.get(replica.node)
            if not address:
                if errors is not None:
                    errors.append(
                        f"{name}: replica {replica.namespace}/{replica.pod_name} runs on node "
                        f"{replica.node!r}, which has no address: left out of the tables until it has one"
                    )
                continue
            ports.append(
                ReplicaPort(
                    ifindex=remote_key(name, side_index, replica.uid),
                    identity=replica.uid,
                    state=_PHASE_TO_STATE[replica.phase],
                    remote=RemoteEndpoint(replica.node, address),
                )
            )
    return sorted(ports, key=lambda p: (p.identity, p.ifindex))


def apply_leaving(want: list[ReplicaPort], have: list[ReplicaPort]) -> list[ReplicaPort]:
    """Leaving only applies to ports the data plane holds (a gone replica is never attached), and
    it is final: a port the data plane holds as leaving (the CNI plugin marks a pod's ports on DEL,
    before the API tells us the pod is gone) stays so while it is listed at all."""
    held = {p.ifindex: p.state for p in have}
    return [
        replace(p, state=ReplicaState.LEAVING) if held.get(p.ifindex) == ReplicaState.LEAVING else p
        for p in want
        if p.state != ReplicaState.LEAVING or p.ifindex in held
    ]


def chain_settings_of(
    settings: ChainSettingsMap | None,
) -> Callable[[CrossConnectionSpec], ChainSettings | None]:
    """Lookup of a cross-connection's chain settings: by (namespace, chain), else by bare chain name."""
    scoped: dict[ChainKey, ChainSettings] = {}
    by_name: dict[str, ChainSettings] = {}
    for key, value in (settings or {}).items():
        if isinstance(key, tuple):
            scoped[key] = value
        else:
            by_name[key] = value
    return lambda xc: scoped.get((xc.namespace, xc.chain), by_name.get(xc.chain))


def port_owners(replicas: Iterable[NfReplica]) -> dict[int, str]:
    """Host ifindex -> "namespace/pod interface", to name a contested port in messages."""
    return {
        record.host_ifindex: f"{replica.namespace}/{replica.pod_name} {record.ifname}"
        for replica in replicas
        for record in replica.interfaces
    }


def desired_neighbours(side: XcSide) -> list[Neighbour]:
    """The side's addresses (shared by every replica) with the side's MAC; empty for L2 sides."""
    return sorted(
        (Neighbour(ip=str(ipaddress.ip_interface(addr).ip), mac=side.mac.lower()) for addr in side.addresses),
        key=lambda n: n.ip,
    )


def answered_neighbours(specs: Mapping[str, CrossConnectionSpec]) -> dict[SideKey, list[Neighbour]]:
    """What each side's program answers ARP/ND for, by (data-plane name, side): an L3 side's own
    addresses; for an L2 (bump-in-the-wire) side, those of the first L3 NF beyond it in the chain,
    whose address the other side resolves through it. Answered in place, each requesting replica
    gets its own reply: carried through the L2 NF instead, the identical requests of several
    replicas (one shared address and MAC) share one session, and every reply went to whichever
    replica asked last, leaving the others unresolved for a second or more. A chain that ends in L2
    NFs has nothing beyond them: nothing is answered there, as before."""
    by_nf_side: dict[tuple[str, str, str, Side], CrossConnectionSpec] = {}
    for xc in specs.values():
        for side in Side:
            by_nf_side[(xc.namespace, xc.chain, xc.side(side).nf, side)] = xc
    answered: dict[SideKey, list[Neighbour]] = {}
    for name, xc in specs.items():
        for side in Side:
            current, seen = xc, {name}
            while current.side(side).mode is Mode.L2 and not current.side(side).addresses:
                # The L2 NF's other interface is on the other side of the next cross-connection
                # in the same direction (side B: further down the chain; side A: further up).
                other = Side.A if side is Side.B else Side.B
                beyond = by_nf_side.get((current.namespace, current.chain, current.side(side).nf, other))
                if beyond is None or dataplane_name(beyond) in seen:
                    break
                seen.add(dataplane_name(beyond))
                current = beyond
            answered[(name, side)] = desired_neighbours(current.side(side))
    return answered


def settle_conflicts(
    want: dict[SideKey, list[ReplicaPort]],
    have: Mapping[SideKey, list[ReplicaPort]],
    owners: Mapping[int, str],
) -> list[str]:
    """A host port is one side's: when several sides want it, it stays where it is (or goes
    nowhere when none of them holds it) and every claimant reports the conflict (the messages
    returned, one per claimant). The outcome depends only on the data plane's state, never on the
    order of the picture, so passes agree."""
    conflicts: list[str] = []
    claims: dict[int, list[SideKey]] = {}
    for key, ports in want.items():
        for port in ports:
            claims.setdefault(port.ifindex, []).append(key)
    for ifindex, claimants in sorted(claims.items()):
        if len(claimants) < 2:
            continue
        holders = [k for k in claimants if any(p.ifindex == ifindex for p in have[k])]
        holder = holders[0] if holders else None
        names = ", ".join(f"{name} side {side.value}" for name, side in sorted(claimants))
        outcome = f"it stays with {holder[0]} side {holder[1].value}" if holder else "attached to none"
        what = owners.get(ifindex, "unknown pod")
        for key in sorted(claimants):
            if key != holder:
                want[key] = [p for p in want[key] if p.ifindex != ifindex]
            conflicts.append(f"{key[0]}: port {ifindex} ({what}) is wanted by {names}: {outcome}")
    return conflicts
