"""Adoption: the replica sets of a runtime whose supervisor died, rebuilt from its state file.

Running pods are taken over as they are (no restart, nothing in the data plane changes), pods caught
halfway are finished: starting ones removed (the replica set replaces them), terminating ones
terminated.
"""

from collections.abc import Iterable, Mapping

from flexsfc.agent.types import ReplicaPhase
from flexsfc.local.pod import Pod
from flexsfc.local.podlifecycle import PodLifecycle
from flexsfc.local.podspec import PodSpec
from flexsfc.local.replicaset import FollowUp, ReplicaSet, deployment_key
from flexsfc.local.status import PodStatus
from flexsfc.model.types import NetworkAttachment, NfDeployment


class Adoption(PodLifecycle):
    """ReplicaSets' adoption of a dead supervisor's pods, finished with the lifecycle's steps."""

    networks: dict[tuple[str, str], NetworkAttachment]
    wanted: set[str]

    def adopt(
        self,
        deployments: list[NfDeployment],
        specs: Mapping[str, PodSpec],
        networks: dict[tuple[str, str], NetworkAttachment],
        desired: Mapping[str, int],
        pods: Iterable[PodStatus],
    ) -> list[FollowUp]:
        """Rebuild the replica sets and take over `pods` (the state file's); tell the agent about them.

        Returns what is left to do for pods caught halfway, for `start_follow_ups` once the data
        plane has been reconciled with the adopted picture.
        """
        follow_ups: list[FollowUp] = []
        with self.lock:
            self.networks = networks
            self.wanted = {deployment_key(d.namespace, d.name) for d in deployments}
            for dep in deployments:
                key = deployment_key(dep.namespace, dep.name)
                self.sets[key] = ReplicaSet(dep, specs[key], desired.get(key, dep.replicas))
            for status in pods:
                key = deployment_key(status.namespace, status.deployment)
                rs = self.sets.get(key)
                if rs is None:
                    # Its Deployment was being removed: no pod template left, so no hook and no
                    # grace period either (docs/local-runtime.md, "Crash recovery").
                    dep = NfDeployment(status.deployment, status.namespace, status.nf, 0, ())
                    rs = self.sets[key] = ReplicaSet(dep, PodSpec(containers=(), grace_seconds=0.0), 0)
                pod = Pod.adopt(status, rs.pod_spec)
                rs.pods[pod.uid] = pod
                self.agent.upsert_replica(pod.replica())
                if pod.phase is ReplicaPhase.TERMINATING:
                    follow_ups.append((self._resume_termination, pod, rs))
                elif pod.phase is not ReplicaPhase.RUNNING:
                    # Starting (how far is unknown) or already being removed: remove without drain;
                    # its replica set starts a replacement.
                    follow_ups.append((self._remove_without_drain, pod, rs))
                # A running pod whose container died meanwhile is the monitor's: failed, replaced.
        return follow_ups

    def start_follow_ups(self, follow_ups: list[FollowUp]) -> None:
        for method, pod, rs in follow_ups:
            self._spawn(method, pod, rs)
