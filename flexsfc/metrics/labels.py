"""Who is behind a data-plane port: host ifindex -> (namespace, pod, chain, nf, interface).

The data plane counts per host-side veth ifindex and knows nothing of pods. The front end that feeds
the reconciler (node agent, local runtime) holds the picture that names them, so it keeps a
:class:`PortIndex` up to date with the same (cross-connections, replicas) it reconciles, and the
exporter asks it on every scrape.
"""

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from flexsfc.agent.types import NfReplica, ReplicaPhase, dataplane_name, side_ports
from flexsfc.model.types import CrossConnectionSpec, Side


@dataclass(frozen=True)
class PortLabel:
    namespace: str
    pod: str
    chain: str
    nf: str
    interface: str  # interface name inside the pod
    cross_connection: str
    side: str  # "A" or "B"


@dataclass(frozen=True)
class XcLabel:
    namespace: str
    chain: str
    nf_a: str
    nf_b: str
    name: str = ""  # the CrossConnection's own name (the data plane keys it by namespace/name)

    def nf(self, side: Side) -> str:
        return self.nf_a if side is Side.A else self.nf_b


class PortLabels(Protocol):
    """Lookup the exporter needs; anything with these two methods will do."""

    def port(self, ifindex: int) -> PortLabel | None: ...

    def cross_connection(self, name: str) -> XcLabel | None: ...


def build_port_labels(
    cross_connections: Iterable[CrossConnectionSpec], replicas: Iterable[NfReplica]
) -> tuple[dict[int, PortLabel], dict[str, XcLabel]]:
    """Index every interface of every replica that sits on a side of a cross-connection.

    GONE replicas are left out (their ports are leaving the data plane); pending, running and
    terminating ones are kept so a draining replica's last packets are still attributed to it.
    """
    xcs = list(cross_connections)
    live = [r for r in replicas if r.phase is not ReplicaPhase.GONE]
    ports: dict[int, PortLabel] = {}
    xc_labels: dict[str, XcLabel] = {}
    for xc in xcs:
        xc_labels[dataplane_name(xc)] = XcLabel(xc.namespace, xc.chain, xc.side_a.nf, xc.side_b.nf, xc.name)
        for side in Side:
            for replica, record in side_ports(xc, side, live):
                ports[record.host_ifindex] = PortLabel(
                    namespace=replica.namespace,
                    pod=replica.pod_name,
                    chain=xc.chain,
                    nf=replica.nf,
                    interface=record.ifname,
                    cross_connection=xc.name,
                    side=side.value,
                )
    return ports, xc_labels


class PortIndex:
    """Thread-safe PortLabels: updated by the front end, read by the scrape thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ports: dict[int, PortLabel] = {}
        self._xcs: dict[str, XcLabel] = {}

    def update(self, cross_connections: Iterable[CrossConnectionSpec], replicas: Iterable[NfReplica]) -> None:
        ports, xcs = build_port_labels(cross_connections, replicas)
        with self._lock:
            self._ports, self._xcs = ports, xcs

    def port(self, ifindex: int) -> PortLabel | None:
        with self._lock:
            return self._ports.get(ifindex)

    def cross_connection(self, name: str) -> XcLabel | None:
        with self._lock:
            return self._xcs.get(name)

    def ports(self) -> dict[int, PortLabel]:
        with self._lock:
            return dict(self._ports)


class PicturePortLabels:
    """PortLabels computed on each lookup batch from the front end's live picture (no update calls).

    `cross_connections` and `replicas` return the picture the reconciler works on, e.g. for the
    local runtime `lambda: runtime.plan.cross_connections` and `runtime.agent.replicas`. The index is
    rebuilt at most once per `max_age` seconds, so one scrape costs one rebuild.
    """

    def __init__(
        self,
        cross_connections: Callable[[], Iterable[CrossConnectionSpec]],
        replicas: Callable[[], Iterable[NfReplica]],
        *,
        max_age: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._xcs_source = cross_connections
        self._replicas_source = replicas
        self._max_age = max_age
        self._clock = clock
        self._index = PortIndex()
        self._built_at: float | None = None
        self._lock = threading.Lock()

    def _fresh(self) -> PortIndex:
        with self._lock:
            now = self._clock()
            if self._built_at is None or now - self._built_at > self._max_age:
                self._index.update(self._xcs_source(), self._replicas_source())
                self._built_at = now
            return self._index

    def port(self, ifindex: int) -> PortLabel | None:
        return self._fresh().port(ifindex)

    def cross_connection(self, name: str) -> XcLabel | None:
        return self._fresh().cross_connection(name)
