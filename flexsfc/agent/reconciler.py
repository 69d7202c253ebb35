"""The node agent's level-triggered reconciler: desired cross-connections + local replicas -> data plane.

Every call computes the whole desired data-plane state from the whole picture and applies only the
difference, so calling it twice with the same picture changes nothing, and a restarted agent converges
from whatever the pinned data plane holds.
"""

import contextlib
import ipaddress
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from flexsfc.agent.types import NfReplica, ReplicaPhase, replicas_by_nf, side_ports
from flexsfc.dataplane.api import DataplaneAPI, Neighbour, ReplicaPort, ReplicaState
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Side, XcSide

log = logging.getLogger(__name__)

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
    """What one reconcile pass changed and how long each step took."""

    xcs_created: list[str] = field(default_factory=list)
    xcs_deleted: list[str] = field(default_factory=list)
    sides_updated: list[str] = field(default_factory=list)  # "xc/A"
    neighbours_updated: list[str] = field(default_factory=list)
    ports_attached: list[int] = field(default_factory=list)
    ports_detached: list[int] = field(default_factory=list)
    steps: list[StepTiming] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    total_ns: int = 0

    @property
    def changed(self) -> bool:
        return bool(
            self.xcs_created
            or self.xcs_deleted
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


def desired_ports(xc: CrossConnectionSpec, side: Side, replicas: Iterable[NfReplica]) -> list[ReplicaPort]:
    """The replica set of one side: replicas of the side's NF that have the side's interface.

    RUNNING -> ACTIVE, TERMINATING -> DRAINING, GONE -> LEAVING (a source only, until the replica
    leaves the picture: then its ports are removed); PENDING replicas are not listed. Sorted by
    identity (the pod UID) so equal pictures give equal lists.
    """
    ports = [
        ReplicaPort(ifindex=record.host_ifindex, identity=replica.uid, state=_PHASE_TO_STATE[replica.phase])
        for replica, record in side_ports(xc, side, replicas)
        if replica.phase in _PHASE_TO_STATE
    ]
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

    Neighbours are not part of the DataplaneAPI read side, so the reconciler remembers what it
    programmed and, after a restart, reads them back when the data plane offers `neighbours(xc, side)`
    (the eBPF facade does); otherwise it programs them once more, an idempotent replacement.
    """

    def __init__(self, dataplane: DataplaneAPI) -> None:
        self.dataplane = dataplane
        self._neighbours: dict[tuple[str, Side], list[Neighbour]] = {}
        self.last_report: ReconcileReport | None = None

    def reconcile(
        self,
        cross_connections: Iterable[CrossConnectionSpec],
        replicas: Iterable[NfReplica],
        *,
        chain_settings: Mapping[str, ChainSettings] | None = None,
    ) -> ReconcileReport:
        report = ReconcileReport()
        started = time.perf_counter_ns()
        xcs = list(cross_connections)
        by_nf = replicas_by_nf(replicas)
        settings = chain_settings or {}

        existing = self._timed(report, "read", "xcs", self.dataplane.list_xcs)
        wanted = {xc.name for xc in xcs}

        for xc in xcs:
            try:
                self._reconcile_xc(report, xc, by_nf, existing, settings)
            except Exception as exc:  # one broken xc must not stop the others
                log.exception("reconcile of cross-connection %s failed", xc.name)
                report.errors.append(f"{xc.name}: {exc}")

        for name in sorted(set(existing) - wanted):
            try:
                before = self._ports_of(name)
                self._timed(report, "delete_xc", name, self.dataplane.delete_xc, name)
                report.xcs_deleted.append(name)
                report.ports_detached.extend(sorted(before))
                for side in Side:
                    self._neighbours.pop((name, side), None)
            except Exception as exc:
                log.exception("delete of cross-connection %s failed", name)
                report.errors.append(f"{name}: {exc}")

        report.total_ns = time.perf_counter_ns() - started
        self.last_report = report
        if report.changed or report.errors:
            log.debug("reconcile: %s", report.summary())
            for step in report.steps:
                if step.step != "read":
                    log.debug("  step %s %s %.3f ms", step.step, step.target, step.ns / 1e6)
        if report.errors:
            raise ReconcileError(report)
        return report

    def forget(self) -> None:
        """Drop remembered neighbours (the data plane was destroyed under us)."""
        self._neighbours.clear()

    # -- internals -------------------------------------------------------------------------------

    def _reconcile_xc(
        self,
        report: ReconcileReport,
        xc: CrossConnectionSpec,
        by_nf: Mapping[tuple[str, str], list[NfReplica]],
        existing: Mapping[str, int],
        settings: Mapping[str, ChainSettings],
    ) -> None:
        if xc.name not in existing:
            chain = settings.get(xc.chain)
            size = chain.maglev_table_size if chain else None
            self._timed(
                report, "ensure_xc", xc.name, self.dataplane.ensure_xc, xc.name, maglev_table_size=size
            )
            report.xcs_created.append(xc.name)

        for side in Side:
            target = f"{xc.name}/{side.value}"
            want = desired_ports(xc, side, by_nf.get((xc.namespace, xc.side(side).nf), ()))
            have = sorted(self.dataplane.replicas(xc.name, side), key=lambda p: (p.identity, p.ifindex))
            want = _apply_leaving(want, have)
            if want != have:
                self._timed(report, "set_replicas", target, self.dataplane.set_replicas, xc.name, side, want)
                report.sides_updated.append(target)
                have_idx = {p.ifindex for p in have}
                want_idx = {p.ifindex for p in want}
                report.ports_attached.extend(sorted(want_idx - have_idx))
                report.ports_detached.extend(sorted(have_idx - want_idx))

            # The neighbours of side S are answered to packets arriving from the other side.
            neighbours = desired_neighbours(xc.side(side))
            if self._programmed_neighbours(xc.name, side) != neighbours:
                self._timed(
                    report, "set_neighbours", target, self.dataplane.set_neighbours, xc.name, side, neighbours
                )
                self._neighbours[(xc.name, side)] = neighbours
                report.neighbours_updated.append(target)

    def _programmed_neighbours(self, xc: str, side: Side) -> list[Neighbour] | None:
        """What the data plane answers for (xc, side): remembered, else read back when it can be."""
        key = (xc, side)
        if key not in self._neighbours:
            reader = getattr(self.dataplane, "neighbours", None)  # optional beyond DataplaneAPI
            if reader is None:
                return None
            try:
                self._neighbours[key] = _normalised(reader(xc, side))
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
    def _timed(report: ReconcileReport, step: str, target: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            report.steps.append(StepTiming(step, target, time.perf_counter_ns() - start))
