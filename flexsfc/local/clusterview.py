"""What the supervisor of simulated nodes (`flexsfc up --nodes N`) reads of them.

Each node's agent process owns that node's data plane; this process pushes them the picture
(flexsfc.local.cluster) and opens each node's pins read-only, refreshed before every read, for the
status (the pods' counters come from their own node's data plane), the sessions (merged across the
nodes) and the nodes' own records. A failed node's readers are dropped (`drop`).
"""

import contextlib
import dataclasses
import logging
import threading
from collections import Counter
from typing import Any

from flexsfc.agent.locked import LockedDataplane
from flexsfc.dataplane.api import DataplaneReader
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.nodes import SimulatedNodes
from flexsfc.local.observe import Observer
from flexsfc.local.pod import Pod
from flexsfc.local.status import NodeStatus, PodStatus, SessionRecord
from flexsfc.model.types import Side

log = logging.getLogger(__name__)


class ClusterView:
    """The simulated nodes of one runtime and their data planes as this process reads them."""

    def __init__(self, nodes: SimulatedNodes, read_lock: threading.Lock) -> None:
        self.nodes = nodes
        self.observers: dict[str, Observer] = {}
        self.readers: dict[str, Any] = {}  # node -> its Dataplane, opened read-only here
        self.read_lock = read_lock  # a refresh and the reads after it, one status at a time
        self.locked: dict[str, LockedDataplane] = {}  # the same readers, behind their locks

    @classmethod
    def start(cls, config: RuntimeConfig, read_lock: threading.Lock) -> "ClusterView":
        """Start the nodes (namespaces, fabric, agents) and open their data planes for reading."""
        view = cls(SimulatedNodes(config), read_lock)
        view.nodes.start()
        try:
            from flexsfc.dataplane.facade import Dataplane

            # Readers only (no upgrade): each node's agent is the writer of its data plane.
            view.readers = {n.name: Dataplane(n.pin_dir) for n in view.nodes.live()}
        except BaseException:
            view.nodes.remove()
            raise
        view.locked = {name: LockedDataplane(dp) for name, dp in view.readers.items()}
        view.observers = {name: Observer(reader) for name, reader in view.locked.items()}
        return view

    def readings(self) -> dict[str, Any]:
        """Each live node's data plane read (call under `read_lock`, after `refresh`)."""
        return {n: o.read_dataplane() for n, o in self.observers.items() if self.live(n)}

    def fresh_reader(self, node: str) -> DataplaneReader | None:
        """The node's data plane as read here, refreshed (it now holds the ports its agent added)."""
        reader = self.readers.get(node)
        if reader is None or not self.live(node):
            return None
        with self.read_lock:
            try:
                reader.refresh()
            except Exception:
                return None
        return self.locked.get(node)

    def refresh(self) -> None:
        """The nodes' agents write their data planes: what this process opened re-reads their
        cross-connections and ports before a read (a reader's view is not kept current)."""
        for name, reader in list(self.readers.items()):
            if self.live(name):
                try:
                    reader.refresh()
                except Exception as exc:  # a status read must not take the supervisor down
                    log.warning("node %s: data plane refresh failed: %s", name, exc)

    def remote_picks(self, readings: dict[str, Any]) -> Counter[str]:
        """Pod UID -> sessions other nodes created toward it: a first packet picks its replica on
        the node it enters, which counts it on its own port for the (remote) replica."""
        picks: Counter[str] = Counter()
        for name, reader in self.locked.items():
            if name not in readings:
                continue
            stats = readings[name].stats
            try:
                for xc in reader.list_xcs():
                    for side in Side:
                        for port in reader.replicas(xc, side):
                            if port.remote is not None and port.ifindex in stats:
                                picks[port.identity] += stats[port.ifindex].sessions_created
            except Exception as exc:  # a status read must not take the supervisor down
                log.warning("node %s: reading its remote ports failed: %s", name, exc)
        return picks

    def live(self, node: str) -> bool:
        return node not in self.nodes.failed

    def node_status(self, pods: list[PodStatus]) -> tuple[NodeStatus, ...]:
        result = []
        for node in self.nodes.all.values():
            agent, info = self.nodes.agent_status(node)
            process = self.nodes.agents.get(node.name)
            result.append(
                NodeStatus(
                    name=node.name,
                    address=node.address,
                    netns=node.netns,
                    agent_pid=process.pid if process is not None else 0,
                    agent=agent,
                    pods=sum(1 for p in pods if p.node == node.name),
                    pushes=int(info.get("pushes", 0)),
                    last_error=str(info.get("lastError", "")),
                )
            )
        return tuple(result)

    def sessions(self, pods: list[Pod], xc: str | None, limit: int) -> list[SessionRecord]:
        """Every node's session entries, one record per flow: a node resolves only its own ports
        (a replica on another node is a tunnel target there), so each end's pod is taken from the
        node that hosts it."""
        merged: dict[tuple[object, ...], SessionRecord] = {}
        with self.read_lock:
            self.refresh()
            records: list[SessionRecord] = []
            for name, observer in list(self.observers.items()):
                if not self.live(name):
                    continue
                try:
                    records += observer.sessions([p for p in pods if p.node == name], xc, limit)
                except ValueError:
                    continue  # the node does not hold that cross-connection (yet): no session there
        for rec in records:
            key = (rec.xc, rec.proto, rec.addr_lo, rec.port_lo, rec.addr_hi, rec.port_hi)
            seen = merged.get(key)
            if seen is not None:
                pod_a, pod_b = rec.pod_a or seen.pod_a, rec.pod_b or seen.pod_b
                merged[key] = dataclasses.replace(rec, pod_a=pod_a, pod_b=pod_b)
            else:
                merged[key] = rec
        return list(merged.values())

    def drop(self, name: str) -> LockedDataplane | None:
        """Stop reading a failed node (under `read_lock`: no status read is using its maps); returns
        its locked reader, which the caller may still hold. `close_reader` then closes it."""
        self.observers.pop(name, None)
        return self.locked.pop(name, None)

    def close_reader(self, name: str) -> None:
        reader = self.readers.pop(name, None)
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()

    def close(self) -> None:
        """Close what this process opened of the nodes' data planes."""
        for reader in self.readers.values():
            with contextlib.suppress(Exception):
                reader.close()
