"""What the local runtime takes from a Deployment's pod template: containers, hooks, probes, grace.

Only the parts that make sense without a container runtime are honoured: command/args/env of each
container (run as processes inside the pod's network namespace), lifecycle.preStop.exec, an exec
readinessProbe, and terminationGracePeriodSeconds. Images are not pulled: the host's tools play the
NF image (see docs/local-runtime.md).
"""

from dataclasses import dataclass, field
from typing import Any

DEFAULT_GRACE_SECONDS = 30.0  # Kubernetes' default terminationGracePeriodSeconds


class PodSpecError(ValueError):
    pass


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    pre_stop: tuple[str, ...] = ()  # exec hook argv
    readiness: tuple[str, ...] = ()  # exec probe argv


@dataclass(frozen=True)
class PodSpec:
    containers: tuple[ContainerSpec, ...]
    grace_seconds: float = DEFAULT_GRACE_SECONDS


def parse_pod_template(template: dict[str, Any], where: str) -> PodSpec:
    """Build a PodSpec from `spec.template` of a Deployment; `where` names it in errors."""
    spec = (template or {}).get("spec") or {}
    raw_containers = spec.get("containers") or []
    if not raw_containers:
        raise PodSpecError(f"{where}: spec.template.spec.containers is empty; add a container with a command")
    containers = []
    for i, raw in enumerate(raw_containers):
        path = f"{where}: spec.template.spec.containers[{i}]"
        for key in ("command", "args"):
            value = raw.get(key)
            if value is not None and not isinstance(value, list):
                raise PodSpecError(
                    f"{path}.{key} must be a list of strings, got {value!r}; write it as a list, "
                    "e.g. [sh, -c, '...']"
                )
        argv = [*(raw.get("command") or []), *(raw.get("args") or [])]
        if not argv:
            raise PodSpecError(
                f"{path}.command is missing; the local runtime pulls no images, so every container "
                "needs an explicit command (e.g. [sh, -c, '...'])"
            )
        if not all(isinstance(a, str | int | float) for a in argv):
            raise PodSpecError(f"{path}.command/args must be a list of strings; quote each item")
        env = {}
        for j, item in enumerate(raw.get("env") or []):
            if not isinstance(item, dict) or not item.get("name"):
                raise PodSpecError(f"{path}.env[{j}] has no name; write it as {{name: VAR, value: '...'}}")
            if "value" in item:
                env[str(item["name"])] = str(item["value"])
        pre_stop = _exec_argv(((raw.get("lifecycle") or {}).get("preStop")), f"{path}.lifecycle.preStop")
        readiness = _exec_argv(raw.get("readinessProbe"), f"{path}.readinessProbe")
        containers.append(
            ContainerSpec(
                name=str(raw.get("name") or f"c{i}"),
                argv=tuple(str(a) for a in argv),
                env=env,
                pre_stop=pre_stop,
                readiness=readiness,
            )
        )
    grace = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_SECONDS)
    if not isinstance(grace, int | float) or grace < 0:
        raise PodSpecError(
            f"{where}: spec.template.spec.terminationGracePeriodSeconds must be a number >= 0, "
            f"got {grace!r}; give seconds (default {DEFAULT_GRACE_SECONDS:g})"
        )
    return PodSpec(containers=tuple(containers), grace_seconds=float(grace))


def _exec_argv(handler: dict[str, Any] | None, path: str) -> tuple[str, ...]:
    if not handler:
        return ()
    exec_ = handler.get("exec")
    if exec_ is None:
        raise PodSpecError(f"{path}: only exec handlers run in the local runtime; use exec.command")
    command = exec_.get("command") or []
    if not command:
        raise PodSpecError(f"{path}.exec.command is empty; give the command to run as a list of strings")
    return tuple(str(a) for a in command)
