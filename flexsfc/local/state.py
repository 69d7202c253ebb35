"""The runtime's state file: what `status`, `exec`, `logs` and `down` read from other shells.

The supervisor rewrites it atomically at every pod lifecycle step, so after the supervisor died a new
one finds every pod to adopt (namespace, attachments, records, processes with their start times), and
a `down` that cannot adopt still finds every process group, CNI attachment and namespace to remove
(see docs/local-runtime.md).
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flexsfc.agent.types import ReplicaPhase
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.status import JsonRecord, PodStatus, Reaction


@dataclass(frozen=True)
class DesiredReplicas(JsonRecord):
    """A Deployment's entry in the state file (keyed by namespace/name there)."""

    nf: str
    desired: int
    last_error: str


@dataclass(frozen=True)
class RuntimeState:
    supervisor_pid: int
    source: str
    config: RuntimeConfig
    deployments: dict[str, DesiredReplicas] = field(default_factory=dict)
    pods: tuple[PodStatus, ...] = ()
    # Pods whose removal failed: `down` retries their clean-up, also from another process.
    orphans: tuple[PodStatus, ...] = ()
    # The newest pods that failed to start, kept (with their logs) so `flexsfc logs POD` still
    # shows why after the pod was removed.
    failed: tuple[PodStatus, ...] = ()
    reactions: tuple[Reaction, ...] = ()

    def running_pods(self, nf: str, namespace: str | None = None) -> list[PodStatus]:
        """Running pods of a network function (or Deployment), in `namespace` if given, by name."""
        return sorted(
            (
                p
                for p in self.pods
                if nf in (p.nf, p.deployment)
                and namespace in (None, p.namespace)
                and p.phase is ReplicaPhase.RUNNING
            ),
            key=lambda p: (p.namespace, p.name),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "supervisorPid": self.supervisor_pid,
            "source": self.source,
            "config": {
                "stateDir": self.config.state_dir,
                "pinDir": self.config.pin_dir,
                "netnsPrefix": self.config.netns_prefix,
                **({"nodes": self.config.nodes} if self.config.nodes > 1 else {}),
            },
            "deployments": {name: d.to_json() for name, d in self.deployments.items()},
            "pods": [p.to_json() for p in self.pods],
            "orphans": [p.to_json() for p in self.orphans],
            "failed": [p.to_json() for p in self.failed],
            "reactions": [r.to_json() for r in self.reactions],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "RuntimeState":
        config = raw.get("config", {})
        return cls(
            supervisor_pid=int(raw.get("supervisorPid") or 0),
            source=raw.get("source", ""),
            config=RuntimeConfig(
                state_dir=config.get("stateDir", ""),
                pin_dir=config.get("pinDir", ""),
                netns_prefix=config.get("netnsPrefix", ""),
                nodes=int(config.get("nodes", 1)),
            ),
            deployments={n: DesiredReplicas.from_json(d) for n, d in raw.get("deployments", {}).items()},
            pods=tuple(PodStatus.from_json(p) for p in raw.get("pods", [])),
            orphans=tuple(PodStatus.from_json(p) for p in raw.get("orphans", [])),
            failed=tuple(PodStatus.from_json(p) for p in raw.get("failed", [])),
            reactions=tuple(Reaction.from_json(r) for r in raw.get("reactions", [])),
        )


def write_state(config: RuntimeConfig, state: RuntimeState) -> None:
    """Replace the state file in one rename; nothing is written once the state directory is gone."""
    if not config.root.exists():
        return
    tmp = config.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=1))
    os.replace(tmp, config.state_file)


def read_state(config: RuntimeConfig) -> RuntimeState | None:
    try:
        raw = json.loads(Path(config.state_file).read_text())
    except FileNotFoundError:
        return None
    return RuntimeState.from_json(raw)
