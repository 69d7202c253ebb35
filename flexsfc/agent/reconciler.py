"""The node agent's level-triggered reconciler: desired cross-connections + local replicas -> data plane.

Every call computes the whole desired data-plane state from the whole picture and applies only the
difference, so calling it twice with the same picture changes nothing, and a restarted agent converges
from whatever the pinned data plane holds.

Cross-connections are namespaced: each is named in the data plane by "namespace/name"
(`types.dataplane_name`) and chain settings are looked up by (namespace, chain), so two tenants using
the same names never share state. What is still contested (one host port wanted by two sides) is a
conflict: reported on every pass, left with whoever holds it, never moved back and forth. What the
data plane should hold (ports, neighbours, who keeps a contested port) is computed by
flexsfc.agent.desired; this module reads the data plane and applies the difference.
"""

import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from flexsfc.agent.desired import (
    ChainSettingsMap,
    SideKey,
    answered_neighbours,
    apply_leaving,
    chain_settings_of,
    desired_ports,
    port_owners,
    settle_conflicts,
)
from flexsfc.agent.types import NfReplica, Topology, dataplane_name, replicas_by_nf
from flexsfc.dataplane.api import DataplaneAPI, Neighbour, ReplicaPort
from flexsfc.dataplane.naming import is_legacy_key
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Side

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")


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
        settings = chain_settings_of(chain_settings)

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
                want[(name, side)] = apply_leaving(ports, have[(name, side)])
        report.errors.extend(report.unplaced)
        for message in settle_conflicts(want, have, port_owners(replicas)):
            report.conflicts.append(message)
            report.errors.append(message)

        answered = answered_neighbours(specs)
        for name, xc in specs.items():
            try:
                self._reconcile_xc(report, name, want, have, answered, existing, settings(xc))
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

    def _reconcile_xc(
        self,
        report: ReconcileReport,
        name: str,
        want: Mapping[SideKey, list[ReplicaPort]],
        have: Mapping[SideKey, list[ReplicaPort]],
        answered: Mapping[SideKey, list[Neighbour]],
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
            neighbours = answered[(name, side)]
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
