"""One Deployment's replica set: its template, desired count, pods and retry state, keyed by
namespace/name as Deployments are (the same Deployment may run in several namespaces)."""

from collections.abc import Callable
from dataclasses import dataclass, field

from flexsfc.agent.types import ReplicaPhase
from flexsfc.local.pod import Pod
from flexsfc.local.podspec import PodSpec
from flexsfc.local.status import DeploymentStatus
from flexsfc.model.types import NfDeployment

READY_TIMEOUT_SECONDS = 60.0
MONITOR_INTERVAL_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 30.0
FAILED_PODS_KEPT = 20  # pods that failed to start, kept in the state file for `flexsfc logs`

# What adoption leaves to do for a pod caught halfway: (method, pod, replica set).
FollowUp = tuple[Callable[["Pod", "ReplicaSet"], None], "Pod", "ReplicaSet"]


def deployment_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


@dataclass
class ReplicaSet:
    deployment: NfDeployment
    pod_spec: PodSpec
    desired: int
    pods: dict[str, Pod] = field(default_factory=dict)  # uid -> pod
    last_error: str = ""
    failures: int = 0
    retry_at: float = 0.0

    @property
    def name(self) -> str:
        return self.deployment.name

    @property
    def namespace(self) -> str:
        return self.deployment.namespace

    @property
    def key(self) -> str:
        return deployment_key(self.namespace, self.name)

    def live(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.phase in (ReplicaPhase.PENDING, ReplicaPhase.RUNNING)]

    def count(self, phase: ReplicaPhase) -> int:
        return sum(1 for p in self.pods.values() if p.phase is phase)

    def status(self) -> DeploymentStatus:
        return DeploymentStatus(
            name=self.name,
            namespace=self.namespace,
            nf=self.deployment.nf,
            desired=self.desired,
            running=self.count(ReplicaPhase.RUNNING),
            pending=self.count(ReplicaPhase.PENDING),
            terminating=self.count(ReplicaPhase.TERMINATING),
            last_error=self.last_error,
        )
