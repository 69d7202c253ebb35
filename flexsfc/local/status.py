"""Typed records of the local runtime: what `Runtime` answers, the supervisor sends and the state file holds.

Each record's `to_json()` gives the document the control socket and the state file have always
carried (camelCase keys, in the same order), and `from_json()` reads it back, so the CLI, the demo and
the tests read attributes while the wire format stays as it was. No import beyond the model and the
agent's phase names: the CLI reads these without loading the runtime.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Self

from flexsfc.agent.types import NfReplica, ReplicaPhase
from flexsfc.model.records import AttachmentRecord


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class JsonRecord:
    """A flat frozen dataclass whose JSON keys are its field names in camelCase (tuples as lists)."""

    def to_json(self) -> dict[str, Any]:
        return {
            _camel(f.name): list(value) if isinstance(value, tuple) else value
            for f in fields(self)  # type: ignore[arg-type]
            for value in (getattr(self, f.name),)
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Self:
        values = {f.name: raw[_camel(f.name)] for f in fields(cls) if _camel(f.name) in raw}  # type: ignore[arg-type]
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# -- a pod's parts (the live Pod keeps mutable copies of these) -----------------------------------


@dataclass
class Attachment:
    """One Multus network selection of the pod: what CNI ADD got, so DEL can send the same."""

    ifname: str
    network: str  # NetworkAttachmentDefinition name
    config: dict[str, Any]
    added: bool = False


@dataclass(frozen=True)
class ProcessInfo:
    container: str
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells a reused PID apart


@dataclass
class PodTimes:
    created: float = 0.0
    networked: float = 0.0  # every CNI ADD done
    started: float = 0.0  # container processes started
    running: float = 0.0  # ready
    first_packet: float = 0.0
    terminating: float = 0.0
    drained: float = 0.0
    gone: float = 0.0


# -- pods and deployments --------------------------------------------------------------------------


@dataclass(frozen=True)
class PodCounters(JsonRecord):
    """A pod's data-plane counters, summed over its ports (to = delivered to the pod)."""

    to_packets: int
    to_bytes: int
    from_packets: int
    from_bytes: int
    sessions: int  # session-table entries with one of its ports on either end
    sessions_created: int  # sessions whose first packet chose one of its ports


@dataclass(frozen=True)
class PodStatus:
    """A pod as the state file records it; `counters` only in a live status (not in the state file)."""

    # Mirrors the live pod.Pod's fields on purpose, not through a base: a frozen wire copy whose JSON keys
    # stay fixed while Pod (mutable, holding the spec and processes) changes.

    name: str
    uid: str
    namespace: str
    deployment: str
    nf: str
    netns: str
    phase: ReplicaPhase
    reason: str
    log_path: str
    workdir: str
    attachments: tuple[Attachment, ...]  # copies: never the live pod's own
    records: tuple[AttachmentRecord, ...]
    processes: tuple[ProcessInfo, ...]
    times: PodTimes
    counters: PodCounters | None = None
    node: str = ""  # the simulated node it runs on (`up --nodes N`); "" with one node

    @property
    def key(self) -> str:
        """namespace/name: how `flexsfc status` shows the pod."""
        return f"{self.namespace}/{self.name}"

    def replica(self) -> NfReplica:
        """The replica the agent would be told about for this pod."""
        return NfReplica(
            uid=self.uid,
            namespace=self.namespace,
            pod_name=self.name,
            nf=self.nf,
            phase=self.phase,
            interfaces=self.records,
            node=self.node,
        )

    def with_counters(self, counters: PodCounters) -> "PodStatus":
        return replace(self, counters=counters)

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {
            "name": self.name,
            "uid": self.uid,
            "namespace": self.namespace,
            "deployment": self.deployment,
            "nf": self.nf,
            "netns": self.netns,
            "phase": self.phase.value,
            "reason": self.reason,
            "logPath": self.log_path,
            "workdir": self.workdir,
            "attachments": [asdict(a) for a in self.attachments],
            "records": [r.to_json_dict() for r in self.records],
            "processes": [asdict(p) for p in self.processes],
            "times": asdict(self.times),
        }
        if self.node:
            raw["node"] = self.node
        if self.counters is not None:
            raw.update(self.counters.to_json())
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "PodStatus":
        return cls(
            name=raw["name"],
            uid=raw["uid"],
            namespace=raw["namespace"],
            deployment=raw["deployment"],
            nf=raw["nf"],
            netns=raw["netns"],
            phase=ReplicaPhase(raw["phase"]),
            reason=raw.get("reason", ""),
            log_path=raw["logPath"],
            workdir=raw["workdir"],
            attachments=tuple(Attachment(**a) for a in raw.get("attachments", [])),
            records=tuple(AttachmentRecord.from_json_dict(r) for r in raw.get("records", [])),
            processes=tuple(ProcessInfo(**p) for p in raw.get("processes", [])),
            times=PodTimes(**raw.get("times", {})),
            counters=PodCounters.from_json(raw) if "toPackets" in raw else None,
            node=raw.get("node", ""),
        )


@dataclass(frozen=True)
class DeploymentStatus(JsonRecord):
    """One replica set: desired replicas, pods by phase, and why it last failed to start one."""

    name: str
    namespace: str
    nf: str
    desired: int
    running: int
    pending: int
    terminating: int
    last_error: str

    @property
    def settled(self) -> bool:
        return self.running == self.desired and self.pending == 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# -- the chain and its cross-connections -----------------------------------------------------------


@dataclass(frozen=True)
class ChainStatus(JsonRecord):
    name: str
    namespace: str
    nfs: tuple[str, ...]


@dataclass(frozen=True)
class CrossConnectionStatus(JsonRecord):
    """A cross-connection's sides ("nf:interface"), modes, sessions and replicas per state and side."""

    name: str
    namespace: str
    chain: str
    side_a: str
    side_b: str
    mode: str  # "<side A mode>/<side B mode>"
    sessions: int
    active_a: int
    draining_a: int
    active_b: int
    draining_b: int


@dataclass(frozen=True)
class SessionRecord(JsonRecord):
    """A session-table entry with the pods on both of its ends ("" where no pod owns the port)."""

    # The flow key mirrors dataplane.api.SessionEntry on purpose: a wire record (fixed JSON keys) of this
    # layer, naming pods where the data plane has ifindexes; a shared base would tie the two formats.

    xc: str
    proto: int
    addr_lo: str
    port_lo: int
    addr_hi: str
    port_hi: int
    pod_a: str
    pod_b: str


# -- what happened ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaction(JsonRecord):
    """How long the data plane took to follow a pod's change, with the agent's step times."""

    pod: str
    nf: str
    kind: str  # "running->first packet" or "terminating->out of table"
    ms: float
    steps: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RuntimeEvent:
    time: float
    message: str
    error: bool = False
    reconcile_ms: float | None = None  # set with `steps` when the event came with a reconcile
    steps: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"time": self.time, "message": self.message, "error": self.error}
        if self.reconcile_ms is not None:
            raw["reconcileMs"] = self.reconcile_ms
            raw["steps"] = self.steps or {}
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "RuntimeEvent":
        return cls(raw["time"], raw["message"], raw["error"], raw.get("reconcileMs"), raw.get("steps"))


# -- replies -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CniStatus(JsonRecord):
    """The supervisor's CNI socket (it is the node agent the shim calls): calls served per verb."""

    socket: str = ""
    served: dict[str, int] = field(default_factory=dict)  # verb -> calls answered with exit 0
    failed: dict[str, int] = field(default_factory=dict)  # verb -> calls answered with an error
    replayed: int = 0  # DELs the shim queued while no supervisor listened, applied since start


@dataclass(frozen=True)
class NodeStatus(JsonRecord):
    """A simulated node (`flexsfc up --nodes N`) and its agent as the supervisor last saw them."""

    name: str
    address: str  # underlay IPv4
    netns: str
    agent_pid: int
    agent: str  # "ok", "not answering: ...", "failed" (removed by `flexsfc node fail`)
    pods: int = 0
    pushes: int = 0  # pictures the agent applied
    last_error: str = ""  # the agent's last reconcile errors


@dataclass(frozen=True)
class RuntimeStatus:
    """`Runtime.status()`: the whole runtime with per-replica counters.

    A stale status (the supervisor is gone) holds only the pods and reactions of the state file.
    """

    supervisor_pid: int = 0
    counters_time: float | None = None  # when the counters were read (monotonic): exact rate intervals
    source: str = ""
    chains: tuple[ChainStatus, ...] = ()
    cross_connections: tuple[CrossConnectionStatus, ...] = ()
    deployments: tuple[DeploymentStatus, ...] = ()
    pods: tuple[PodStatus, ...] = ()
    drops: dict[str, int] = field(default_factory=dict)
    reactions: tuple[Reaction, ...] = ()
    events: tuple[RuntimeEvent, ...] = ()
    stale: bool = False
    cni: CniStatus | None = None
    # Collisions, a full session table, events lost: the data plane's counters of what went wrong.
    anomalies: dict[str, int] = field(default_factory=dict)
    nodes: tuple[NodeStatus, ...] = ()  # simulated nodes; () with one node

    def pod(self, name: str) -> PodStatus:
        return next(p for p in self.pods if p.name == name)

    def deployment(self, name: str, namespace: str | None = None) -> DeploymentStatus:
        """A Deployment by its name or its network function's (in `namespace` when given)."""
        return next(
            d for d in self.deployments if name in (d.name, d.nf) and namespace in (None, d.namespace)
        )

    def to_json(self) -> dict[str, Any]:
        if self.stale:
            return {
                "pods": [p.to_json() for p in self.pods],
                "reactions": [r.to_json() for r in self.reactions],
                "stale": True,
            }
        return {
            "supervisorPid": self.supervisor_pid,
            "countersTime": self.counters_time,
            "source": self.source,
            "chains": [c.to_json() for c in self.chains],
            "crossConnections": [x.to_json() for x in self.cross_connections],
            "deployments": [d.to_json() for d in self.deployments],
            "pods": [p.to_json() for p in self.pods],
            "drops": dict(self.drops),
            "reactions": [r.to_json() for r in self.reactions],
            "events": [e.to_json() for e in self.events],
            **({"cni": self.cni.to_json()} if self.cni is not None else {}),
            **({"anomalies": dict(self.anomalies)} if self.anomalies else {}),
            **({"nodes": [n.to_json() for n in self.nodes]} if self.nodes else {}),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "RuntimeStatus":
        return cls(
            supervisor_pid=raw.get("supervisorPid", 0),
            counters_time=raw.get("countersTime"),
            source=raw.get("source", ""),
            chains=tuple(ChainStatus.from_json(c) for c in raw.get("chains", [])),
            cross_connections=tuple(
                CrossConnectionStatus.from_json(x) for x in raw.get("crossConnections", [])
            ),
            deployments=tuple(DeploymentStatus.from_json(d) for d in raw.get("deployments", [])),
            pods=tuple(PodStatus.from_json(p) for p in raw.get("pods", [])),
            drops=dict(raw.get("drops", {})),
            reactions=tuple(Reaction.from_json(r) for r in raw.get("reactions", [])),
            events=tuple(RuntimeEvent.from_json(e) for e in raw.get("events", [])),
            stale=bool(raw.get("stale", False)),
            cni=CniStatus.from_json(raw["cni"]) if raw.get("cni") else None,
            anomalies=dict(raw.get("anomalies", {})),
            nodes=tuple(NodeStatus.from_json(n) for n in raw.get("nodes", [])),
        )


@dataclass(frozen=True)
class ReadyStatus:
    """The `ready` request: every replica set at its desired running pods, or the first error seen."""

    ready: bool
    error: str
    deployments: tuple[DeploymentStatus, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "error": self.error,
            "deployments": [d.to_json() for d in self.deployments],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "ReadyStatus":
        deployments = tuple(DeploymentStatus.from_json(d) for d in raw["deployments"])
        return cls(raw["ready"], raw["error"], deployments)


@dataclass(frozen=True)
class ApplyResult:
    """What `apply` changed: Deployments created, scaled ("name: a -> b") and removed."""

    created: tuple[str, ...] = ()
    scaled: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.created or self.scaled or self.removed)

    def to_json(self) -> dict[str, Any]:
        lists = {"created": list(self.created), "scaled": list(self.scaled), "removed": list(self.removed)}
        return {**lists, "changed": self.changed}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "ApplyResult":
        return cls(tuple(raw["created"]), tuple(raw["scaled"]), tuple(raw["removed"]))


@dataclass(frozen=True)
class ScaleResult:
    deployment: str
    before: int
    after: int
    namespace: str = "default"

    def to_json(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "namespace": self.namespace,
            "from": self.before,
            "to": self.after,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "ScaleResult":
        return cls(raw["deployment"], raw["from"], raw["to"], raw.get("namespace", "default"))
