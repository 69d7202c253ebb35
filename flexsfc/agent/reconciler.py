"""The node agent's level-triggered reconciler: desired cross-connections + local replicas -> data plane.

Every call computes the whole desired data-plane state from the whole picture and applies only the
difference, so calling it twice with the same picture changes nothing, and a restarted agent converges
from whatever the pinned data plane holds.

Cross-connections are namespaced: each is named in the data plane by "namespace/name"
(`types.dataplane_name`) and chain settings are looked up by (namespace, chain), so two tenants using
the same names never share state. What is still contested (one host port wanted by two sides) is a
conflict: reported on every pass, left with whoever holds it, never moved back and forth.
"""

import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import ParamSpec, TypeVar

from flexsfc.agent.types import (
    ChainKey,
    NfReplica,
    ReplicaPhase,
    Topology,
    dataplane_name,
    replicas_by_nf,
    side_ports,
)
from flexsfc.dataplane.api import DataplaneAPI, Neighbour, RemoteEndpoint, ReplicaPort, ReplicaState
from flexsfc.dataplane.naming import is_legacy_key
from flexsfc.dataplane.tunnels import remote_key
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Side, XcSide

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")

# Chain settings by (namespace, chain); a bare chain name applies in every namespace (front ends
# that only ever hold one namespace's chains, like the local runtime, may still key by name).
ChainSettingsMap = Mapping[ChainKey, ChainSettings] | Mapping[str, ChainSettings]
SideKey = tuple[str, Side]  # (data-plane name, side)

_PHASE_TO_STATE: dict[ReplicaPhase, ReplicaState] = {
    ReplicaPhase.RUNNING: ReplicaState.ACTIVE,
    ReplicaPhase.TERMINATING: ReplicaState.DRAINING,
    ReplicaPhase.GONE: ReplicaState.LEAVING,
}


@dataclass(frozen=True)
class StepTiming:
    step: str  # "read", "ensure_xc", "set_replicas", "set_neighbours", "delete_xc"
    target: str  # what the step acted on, e.g. "chain-a-b/A"
    ns: int


@dataclass
class ReconcileReport:
    """What one reconcile pass changed and how long each step took.

    Cross-connections are named as in the data plane ("namespace/name"). `errors` are prefixed with
    that name; `conflicts` (also in `errors`) are contested ports, which a pass reports without
    failing: they stay as they are until the picture no longer contests them.
    """

    xcs_created: list[str] = field(default_factory=list)
    xcs_deleted: list[str] = field(default_factory=list)
    xcs_renamed: list[str] = field(default_factory=list)  # "old -> new": legacy bare names migrated
    sides_updated: list[str] = field(default_factory=list)  # "xc/A"
    neighbours_updated: list[str] = field(default_factory=list)
    ports_attached: list[int] = field(default_factory=list)
    ports_detached: list[int] = field(default_factory=list)
    steps: list[StepTiming] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    # Replicas on a node without an address (also in `errors`): standing, like conflicts.
    unplaced: list[str] = field(default_factory=list)
    total_ns: int = 0

    @property
    def failed(self) -> bool:
        """Whether a step failed (conflicts alone are reported, not failures: retrying cannot help)."""
        return len(self.errors) > len(self.conflicts) + len(self.unplaced)

    @property
    def changed(self) -> bool:
        return bool(
            self.xcs_created
            or self.xcs_deleted
            or self.xcs_renamed
            or self.sides_updated
            or self.neighbours_updated
            or self.ports_attached
            or self.ports_detached
        )

    def step_ms(self) -> dict[str, float]:
        """Milliseconds per kind of step (``read`` included), in the order the steps first ran."""
        totals: dict[str, int] = {}
        for step in self.steps:
            totals[step.step] = totals.get(step.step, 0) + step.ns
        return {name: ns / 1e6 for name, ns in totals.items()}

    def step_summary(self) -> str:
        """The changing steps, e.g. "set_replicas 1.20 ms, set_neighbours 0.05 ms"."""
        return ", ".join(f"{name} {ms:.2f} ms" for name, ms in self.step_ms().items() if name != "read")

    def summary(self) -> str:
        parts = [
            f"{label}={len(items)}"
            for label, items in (
                ("xc+", self.xcs_created),
                ("xc-", self.xcs_deleted),
                ("xc~", self.xcs_renamed),
                ("sides", self.sides_updated),
                ("neigh", self.neighbours_updated),
                ("attach", self.ports_attached),
                ("detach", self.ports_detached),
            )
            if items
        ]
        return (" ".join(parts) or "no change") + f" in {self.total_ns / 1e6:.2f} ms"


class ReconcileError(RuntimeError):
    def __init__(self, report: ReconcileReport) -> None:
        super().__init__("reconcile failed: " + "; ".join(report.errors))
        self.report = report


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


def _apply_leaving(want: list[ReplicaPort], have: list[ReplicaPort]) -> list[ReplicaPort]:
    """Leaving only applies to ports the data plane holds (a gone replica is never attached), and
    it is final: a port the data plane holds as leaving (the CNI plugin marks a pod's ports on DEL,
    before the API tells us the pod is gone) stays so while it is listed at all."""
    held = {p.ifindex: p.state for p in have}
    return [
        replace(p, state=ReplicaState.LEAVING) if held.get(p.ifindex) == ReplicaState.LEAVING else p
        for p in want
        if p.state != ReplicaState.LEAVING or p.ifindex in held
    ]


def _chain_settings(
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


def _port_owners(replicas: Iterable[NfReplica]) -> dict[int, str]:
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


def _normalised(neighbours: Iterable[Neighbour]) -> list[Neighbour]:
    return sorted(
        (Neighbour(ip=str(ipaddress.ip_address(n.ip)), mac=n.mac.lower()) for n in neighbours),
        key=lambda n: n.ip,
    )


class Reconciler:
    """Applies (cross-connections, replicas) to a :class:`DataplaneAPI`, changing only what differs.

    The reconciler remembers the neighbours it programmed and, after a restart, reads them back
    through the read side (`neighbours(xc, side)`); when that read fails it programs them once more,
    an idempotent replacement.
    """

    def __init__(self, dataplane: DataplaneAPI) -> None:
        self.dataplane = dataplane
        self._neighbours: dict[tuple[str, Side], list[Neighbour]] = {}
        self._conflicts: list[str] = []
        self.last_report: ReconcileReport | None = None
        self._tunnel: tuple[str | None, dict[str, str]] | None = None  # what set_tunnel/set_nodes got

    def reconcile(
        self,
        cross_connections: Iterable[CrossConnectionSpec],
        replicas: Iterable[NfReplica],
        *,
        chain_settings: ChainSettingsMap | None = None,
        topology: Topology | None = None,
    ) -> ReconcileReport:
        """Apply the picture. Raises ReconcileError when a step failed (`report.failed`); conflicts
        alone are only reported (in the returned report's `errors` and `conflicts`).

        With a `topology`, replicas on other nodes become remote ports (reached through this node's
        tunnel device) and the nodes' addresses are the only ones whose tunnel packets are taken."""
        report = ReconcileReport()
        started = time.perf_counter_ns()
        if topology is not None:
            self._apply_topology(report, topology)
        replicas = list(replicas)
        by_nf = replicas_by_nf(replicas)
        settings = _chain_settings(chain_settings)

        specs: dict[str, CrossConnectionSpec] = {}
        for xc in cross_connections:
            name = dataplane_name(xc)
            if name in specs:  # a front end listing one object twice: the first one counts
                message = f"{name}: listed twice in the picture; the first one is applied"
                report.conflicts.append(message)  # as standing as a contested port: not retried
                report.errors.append(message)
                continue
            specs[name] = xc

        existing = dict(self._timed(report, "read", "xcs", self.dataplane.list_xcs))
        self._migrate_legacy(report, specs, existing)

        # Stale cross-connections go first: their ports may be wanted by a desired one (a renamed
        # object), which the data plane refuses while another cross-connection holds them.
        for name in sorted(set(existing) - set(specs)):
            try:
                before = self._ports_of(name)
                self._timed(report, "delete_xc", name, self.dataplane.delete_xc, name)
                del existing[name]
                report.xcs_deleted.append(name)
                report.ports_detached.extend(sorted(before))
                for side in Side:
                    self._neighbours.pop((name, side), None)
            except Exception as exc:
                log.exception("delete of cross-connection %s failed", name)
                report.errors.append(f"{name}: {exc}")

        have: dict[SideKey, list[ReplicaPort]] = {}
        want: dict[SideKey, list[ReplicaPort]] = {}
        for name, xc in specs.items():
            for side in Side:
                held = self.dataplane.replicas(name, side) if name in existing else []
                have[(name, side)] = sorted(held, key=lambda p: (p.identity, p.ifindex))
                ports = desired_ports(
                    xc, side, by_nf.get((xc.namespace, xc.side(side).nf), ()), topology, report.unplaced
                )
                want[(name, side)] = _apply_leaving(ports, have[(name, side)])
        report.errors.extend(report.unplaced)
        self._settle_conflicts(report, want, have, _port_owners(replicas))

        for name, xc in specs.items():
            try:
                self._reconcile_xc(report, name, xc, want, have, existing, settings(xc))
            except Exception as exc:  # one broken xc must not stop the others
                log.exception("reconcile of cross-connection %s failed", name)
                report.errors.append(f"{name}: {exc}")

        report.total_ns = time.perf_counter_ns() - started
        self.last_report = report
        if report.changed or report.errors:
            log.debug("reconcile: %s", report.summary())
            for step in report.steps:
                if step.step != "read":
                    log.debug("  step %s %s %.3f ms", step.step, step.target, step.ns / 1e6)
        if report.conflicts != self._conflicts:  # a standing conflict is logged once, reported always
            for conflict in report.conflicts:
                log.warning("conflict: %s", conflict)
            self._conflicts = list(report.conflicts)
        if report.failed:
            raise ReconcileError(report)
        return report

    def forget(self) -> None:
        """Drop remembered neighbours (the data plane was destroyed under us)."""
        self._neighbours.clear()
        self._tunnel = None

    def _apply_topology(self, report: ReconcileReport, topology: Topology) -> None:
        wanted = (topology.tunnel_device, dict(topology.nodes))
        if self._tunnel == wanted:
            return
        try:
            self._timed(report, "set_nodes", "nodes", self.dataplane.set_nodes, wanted[1])
            self._timed(report, "set_tunnel", str(wanted[0]), self.dataplane.set_tunnel, wanted[0])
        except Exception as exc:
            log.exception("programming the tunnel failed")
            report.errors.append(f"tunnel: {exc}")
            return
        self._tunnel = wanted

    # -- internals -------------------------------------------------------------------------------

    def _migrate_legacy(
        self, report: ReconcileReport, specs: Mapping[str, CrossConnectionSpec], existing: dict[str, int]
    ) -> None:
        """Rename entries an agent from before namespaced keys left (bare names) to the key of the one
        desired cross-connection of that name: ports, tables and sessions stay, forwarding goes on.
        A bare name that is no desired object's, or several namespaces' (the state the old agent
        flipped between them), is not guessed at: it is deleted as stale, and each object created."""
        by_bare: dict[str, list[str]] = {}
        for name, xc in specs.items():
            by_bare.setdefault(xc.name, []).append(name)
        for old in sorted(n for n in existing if is_legacy_key(n)):
            candidates = by_bare.get(old, [])
            if len(candidates) != 1 or candidates[0] in existing:
                continue
            new = candidates[0]
            try:
                self._timed(report, "rename_xc", new, self.dataplane.rename_xc, old, new)
            except Exception as exc:
                log.exception("renaming cross-connection %s to %s failed", old, new)
                report.errors.append(f"{new}: renaming the entry of the previous agent ({old!r}): {exc}")
                continue
            existing[new] = existing.pop(old)
            for side in Side:
                self._neighbours.pop((old, side), None)
            report.xcs_renamed.append(f"{old} -> {new}")

    @staticmethod
    def _settle_conflicts(
        report: ReconcileReport,
        want: dict[SideKey, list[ReplicaPort]],
        have: Mapping[SideKey, list[ReplicaPort]],
        owners: Mapping[int, str],
    ) -> None:
        """A host port is one side's: when several sides want it, it stays where it is (or goes
        nowhere when none of them holds it) and every claimant reports the conflict. The outcome
        depends only on the data plane's state, never on the order of the picture, so passes agree."""
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
                message = f"{key[0]}: port {ifindex} ({what}) is wanted by {names}: {outcome}"
                report.conflicts.append(message)
                report.errors.append(message)

    def _reconcile_xc(
        self,
        report: ReconcileReport,
        name: str,
        xc: CrossConnectionSpec,
        want: Mapping[SideKey, list[ReplicaPort]],
        have: Mapping[SideKey, list[ReplicaPort]],
        existing: Mapping[str, int],
        chain: ChainSettings | None,
    ) -> None:
        if name not in existing:
            size = chain.maglev_table_size if chain else None
            self._timed(report, "ensure_xc", name, self.dataplane.ensure_xc, name, maglev_table_size=size)
            report.xcs_created.append(name)

        for side in Side:
            target = f"{name}/{side.value}"
            wanted, held = want[(name, side)], have[(name, side)]
            if wanted != held:
                self._timed(report, "set_replicas", target, self.dataplane.set_replicas, name, side, wanted)
                report.sides_updated.append(target)
                have_idx = {p.ifindex for p in held}
                want_idx = {p.ifindex for p in wanted}
                report.ports_attached.extend(sorted(want_idx - have_idx))
                report.ports_detached.extend(sorted(have_idx - want_idx))

            # The neighbours of side S are answered to packets arriving from the other side.
            neighbours = desired_neighbours(xc.side(side))
            if self._programmed_neighbours(name, side) != neighbours:
                self._timed(
                    report, "set_neighbours", target, self.dataplane.set_neighbours, name, side, neighbours
                )
                self._neighbours[(name, side)] = neighbours
                report.neighbours_updated.append(target)

    def _programmed_neighbours(self, xc: str, side: Side) -> list[Neighbour] | None:
        """What the data plane answers for (xc, side): remembered, else read back when it can be."""
        key = (xc, side)
        if key not in self._neighbours:
            try:
                self._neighbours[key] = _normalised(self.dataplane.neighbours(xc, side))
            except Exception:
                return None
        return self._neighbours[key]

    def _ports_of(self, xc: str) -> set[int]:
        ports: set[int] = set()
        for side in Side:
            with contextlib.suppress(Exception):  # a half-deleted xc: nothing to report
                ports.update(p.ifindex for p in self.dataplane.replicas(xc, side))
        return ports

    @staticmethod
    def _timed(
        report: ReconcileReport,
        step: str,
        target: str,
        fn: Callable[_P, _R],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _R:
        start = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            report.steps.append(StepTiming(step, target, time.perf_counter_ns() - start))
