"""`flexsfc scale`, `flexsfc exec`, `flexsfc logs`: act on one Deployment or pod of the local runtime."""

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from flexsfc.local.config import RuntimeConfig

if TYPE_CHECKING:
    from flexsfc.local.status import PodStatus

from flexsfc.cli.runtime import (
    _config,
    _fail,
    _need_root,
    _say_adopted,
    _wait_ready,
    console,
    namespace_option,
    state_dir_option,
)


@click.command()
@click.argument("name")
@click.argument("replicas", type=click.IntRange(min=0))
@state_dir_option
@namespace_option
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the replicas run.")
@click.option("--timeout", default=60.0, show_default=True)
def scale(
    name: str, replicas: int, state_dir: str | None, namespace: str | None, wait: bool, timeout: float
) -> None:
    """Set the number of replicas of NAME (Deployment, NAMESPACE/Deployment or network function)."""
    from flexsfc.local import control

    config = _config(state_dir)
    try:
        with control.supervisor_for(config, create=False) as how:
            _say_adopted(config, how)
        result = control.scale(config, name, replicas, namespace)
        if wait:
            _wait_ready(config, timeout, quiet=False)
    except control.SupervisorNotRunning as exc:
        raise _fail(f"{exc}; start it with `flexsfc up <dir>`") from None
    except control.SupervisorError as exc:
        raise _fail(str(exc)) from None
    console.print(
        f"[green]scaled[/] {result.namespace}/{result.deployment}: {result.before} -> {result.after}"
    )


def find_pod(config: RuntimeConfig, name: str, namespace: str | None = None) -> "PodStatus":
    """A pod by name ("namespace/name" too), or the first running replica of a Deployment / network
    function; in `namespace` when given. Pods that failed to start are found by name (their logs)."""
    from flexsfc.local.state import read_state

    state = read_state(config)
    if state is None:
        raise _fail("no local runtime is running; start one with `flexsfc up <dir>`")
    ns, slash, bare = name.rpartition("/")
    if slash:
        if namespace not in (None, ns):
            raise _fail(f"{name!r} names namespace {ns!r}, but --namespace says {namespace!r}")
        name, namespace = bare, ns
    # Pod names are unique in a runtime; the newest failed pod of a name is the one a hint names.
    for pod in [*state.pods, *reversed(state.failed)]:
        if pod.name == name and namespace in (None, pod.namespace):
            return pod
    candidates = state.running_pods(name, namespace)
    namespaces = sorted({p.namespace for p in candidates})
    if len(namespaces) > 1:
        raise _fail(
            f"{name!r} runs in several namespaces ({', '.join(namespaces)}); name one: "
            f"-n NAMESPACE or NAMESPACE/{name}"
        )
    if candidates:
        return candidates[0]
    known = ", ".join(sorted(p.key for p in state.pods)) or "none"
    raise _fail(f"no pod named {name!r} (pods: {known})")


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@state_dir_option
@namespace_option
def exec_(pod: str, command: tuple[str, ...], state_dir: str | None, namespace: str | None) -> None:
    """Run COMMAND inside POD's network namespace: flexsfc exec [-n NS] <pod> -- <cmd> [args]."""
    _need_root()
    target = find_pod(_config(state_dir), pod, namespace)
    argv = ["nsenter", f"--net=/run/netns/{target.netns}", "--", *command]
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@click.command()
@click.argument("pod")
@state_dir_option
@namespace_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the pod writes.")
def logs(pod: str, state_dir: str | None, namespace: str | None, follow: bool) -> None:
    """Print the output of POD's containers, preStop hooks included (also of a pod that failed)."""
    target = find_pod(_config(state_dir), pod, namespace)
    path = Path(target.log_path)
    if not path.exists():
        raise _fail(f"pod {target.name} has no log yet")
    with path.open("rb") as f:
        sys.stdout.buffer.write(f.read())
        sys.stdout.flush()
        while follow:
            chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            else:
                if not path.exists():
                    return
                time.sleep(0.2)
