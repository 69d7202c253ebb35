"""The typed records of `flexsfc status --kube`: chains, NFs, links, node agents, nodes, problems,
and the ClusterStatus that holds them (flexsfc.operator.cluster_status gathers it)."""

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ChainRecord:
    namespace: str
    name: str
    nfs: list[str]
    links: int
    ready: str  # "True", "False", "Unknown" (no status yet)
    reason: str
    message: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NfRecord:
    namespace: str
    nf: str
    chains: list[str]
    deployment: str | None
    desired: int | None
    ready: int | None  # the Deployment's readyReplicas
    nodes: dict[str, dict[str, int]]  # node -> {"running", "pending", "terminating"}


@dataclass(frozen=True)
class LinkNode:
    ready: bool
    replicas_a: int
    replicas_b: int
    draining_a: int
    draining_b: int
    current: bool  # observed the object's generation
    message: str


@dataclass(frozen=True)
class LinkRecord:
    namespace: str
    name: str
    chain: str
    side_a: str
    side_b: str
    nodes: dict[str, LinkNode]


@dataclass(frozen=True)
class AgentRecord:
    state: str  # "ok", "expired", "missing" (no Lease), "unknown" (Leases unreadable)
    renewed: str | None = None
    age_seconds: float | None = None
    version: str | None = None
    links_reported: int | None = None
    links_ready: int | None = None
    replicas_active: int | None = None
    replicas_draining: int | None = None
    last_reconcile_ok: bool | None = None
    last_reconcile_time: str | None = None
    errors: list[str] = field(default_factory=list)
    drops: dict[str, int] = field(default_factory=dict)
    refused: list[dict[str, str]] = field(default_factory=list)
    refused_total: int = 0
    # Multi-node: the agent's tunnel (device, UDP port, underlay MTU) and why it sends nothing
    # through it ("" when it does); None from agents without a tunnel or of older versions.
    tunnel: dict[str, Any] | None = None

    @property
    def healthy(self) -> bool:
        return self.state == "ok"


@dataclass(frozen=True)
class NodeRecord:
    name: str
    exists: bool
    node_ready: str | None  # the Node's Ready condition ("True", "False", "Unknown"), None when unknown
    nf_pods: int
    agent: AgentRecord


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" or "warning"
    subject: str  # "chain ns/name", "node X", "pod ns/name", "link ns/name", "access"
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


@dataclass
class ClusterStatus:
    context: str | None
    namespace: str | None  # None: all namespaces
    agent_namespace: str
    chains: list[ChainRecord] = field(default_factory=list)
    nfs: list[NfRecord] = field(default_factory=list)
    links: list[LinkRecord] = field(default_factory=list)
    nodes: list[NodeRecord] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def drops(self) -> dict[str, int]:
        """Drop counters by reason, summed over the nodes whose agents report them."""
        total: dict[str, int] = {}
        for node in self.nodes:
            for reason, count in node.agent.drops.items():
                total[reason] = total.get(reason, 0) + count
        return dict(sorted(total.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "context": self.context,
            "namespace": self.namespace,
            "agentNamespace": self.agent_namespace,
            "chains": [asdict(c) for c in self.chains],
            "networkFunctions": [asdict(n) for n in self.nfs],
            "crossConnections": [
                {
                    "namespace": link.namespace,
                    "name": link.name,
                    "chain": link.chain,
                    "sideA": link.side_a,
                    "sideB": link.side_b,
                    "nodes": {node: asdict(entry) for node, entry in link.nodes.items()},
                }
                for link in self.links
            ],
            "nodes": [
                asdict(n) | {"agent": asdict(n.agent) | {"healthy": n.agent.healthy}} for n in self.nodes
            ],
            "drops": self.drops,
            "problems": [asdict(p) for p in self.problems],
        }
