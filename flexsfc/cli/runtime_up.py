"""`flexsfc up` and `flexsfc down`: validate, start or update, roll back on failure, remove."""

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from flexsfc.local.config import RuntimeConfig

if TYPE_CHECKING:
    from flexsfc.local.status import ApplyResult

from flexsfc.cli.runtime import (
    _config,
    _fail,
    _need_root,
    _wait_ready,
    console,
    err_console,
    state_dir_option,
)
from flexsfc.cli.runtime_status import render_status


def preflight(path: str, namespace: str | None = None) -> Any:
    """Validate manifests and pod templates before anything is created; returns the Plan.

    With `namespace`, the manifests as the runtime will run them: every object moved there.
    """
    from flexsfc.local.manifests import load_in_namespace, plan_of
    from flexsfc.local.podspec import PodSpecError, parse_pod_template
    from flexsfc.model.errors import ManifestError

    try:
        if not Path(path).exists():
            raise FileNotFoundError(path)
        plan = plan_of(*load_in_namespace(path, namespace))
    except ManifestError as exc:
        err_console.print(f"[bold red]{len(exc.errors)} error(s) in {escape(path)}; nothing was created:[/]")
        for issue in exc.errors:
            where, message, fix = escape(issue.where()), escape(issue.message), escape(issue.fix)
            err_console.print(f"  [red]-[/] {where}: {message}. [bold]Fix:[/] {fix}")
        raise click.exceptions.Exit(1) from exc
    except FileNotFoundError as exc:
        raise _fail(f"{path}: no such file or directory") from exc
    for warning in plan.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(str(warning))}")
    if not plan.chains:
        raise _fail(f"{path}: no ServiceFunctionChain found; add one (see examples/)")
    try:
        for dep in plan.deployments:
            parse_pod_template(dep.pod_template, f"Deployment {dep.namespace}/{dep.name}")
    except PodSpecError as exc:
        raise _fail(f"{exc}; nothing was created") from exc
    return plan


def bring_up(
    config: RuntimeConfig,
    path: str,
    timeout: float,
    *,
    quiet: bool = False,
    metrics_port: int = 0,
    namespace: str | None = None,
    flow_history: int | None = None,
) -> "ApplyResult":
    """Start (or update) the runtime for `path` and wait until every replica runs.

    A runtime whose supervisor died is adopted first (its pods keep running). On a failure during
    the first bring-up everything created so far is removed again, after showing the end of the
    log of every pod that failed (the rollback removes the logs).
    """
    from flexsfc.local import control

    fresh, existed = False, config.root.exists()
    try:
        with control.supervisor_for(config, create=True, metrics_port=metrics_port) as how:
            fresh = how == "started"
            if how == "adopted":
                console.print(
                    f"[yellow]the supervisor of {escape(config.state_dir)} had died: a new one adopted "
                    "its pods and data plane[/]"
                )
            if flow_history is not None:  # before the pods: their first flows are kept too
                control.set_flow_history(config, flow_history)
            changes = control.apply(config, str(Path(path).resolve()), namespace)
            _wait_ready(config, timeout, quiet)
    except control.SupervisorConflict as exc:
        if not existed and not config.state_file.exists():
            shutil.rmtree(config.root, ignore_errors=True)  # only what this command created
        raise _fail(str(exc)) from None
    except (control.SupervisorError, KeyboardInterrupt) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        if fresh or not config.state_file.exists():
            err_console.print(f"[bold red]up failed:[/] {escape(reason)}")
            show_failed_pod_logs(config)
            err_console.print("[yellow]rolling back: removing everything that was created...[/]")
            errors = control.down(config)
            for error in errors:
                err_console.print(f"  [red]-[/] {escape(error)}")
            raise click.exceptions.Exit(1) from None
        raise _fail(reason) from None
    return changes


FAILED_LOG_LINES = 20


def show_failed_pod_logs(config: RuntimeConfig) -> None:
    """Print the end of each failed pod's log: the rollback is about to remove them."""
    from flexsfc.local.state import read_state

    state = read_state(config)
    for pod in state.failed if state is not None else ():
        try:
            lines = Path(pod.log_path).read_text(errors="replace").splitlines()[-FAILED_LOG_LINES:]
        except FileNotFoundError:
            continue
        err_console.print(f"[bold]end of the log of pod {escape(pod.key)}[/] (the rollback removes it):")
        for line in lines:
            err_console.print(f"  | {escape(line)}", soft_wrap=True)


@click.command()
@click.argument("path", type=click.Path(exists=True))
@state_dir_option
@click.option(
    "--pin-dir",
    default=None,
    help="bpffs directory of this runtime's data plane (default: follows --state-dir).",
)
@click.option(
    "--netns-prefix",
    default=None,
    help="Prefix of pod network namespace names (default: fx, or derived from --state-dir).",
)
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="Run every object of PATH in this namespace, whatever its manifest says.",
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for every replica.")
@click.option("--metrics-port", default=0, help="Serve Prometheus metrics on 127.0.0.1:PORT (0: off).")
@click.option(
    "--flow-history",
    type=click.IntRange(min=0),
    default=None,
    help="Keep the last N flow events for `flexsfc flows --last` (0: off) [a new runtime: off; a "
    "running one: as it is]. While kept, the event stream is on (a record per new flow, move, drop).",
)
@click.option(
    "--nodes",
    type=click.IntRange(1, 200),
    default=None,
    help="Simulate N nodes: network namespaces on a shared fabric, one agent process each "
    "(docs/multinode.md). Default 1: this machine is the one node.",
)
def up(
    path: str,
    state_dir: str | None,
    pin_dir: str | None,
    netns_prefix: str | None,
    namespace: str | None,
    timeout: float,
    metrics_port: int,
    flow_history: int | None,
    nodes: int | None,
) -> None:
    """Run the chain(s) in PATH (file or directory of manifests) on the local runtime.

    An apply owns the namespaces of its objects: it replaces what runs there and leaves the others.
    """
    _need_root()
    preflight(path, namespace)
    config = _config(state_dir, pin_dir, netns_prefix, nodes)
    started = time.monotonic()
    changes = bring_up(
        config, path, timeout, metrics_port=metrics_port, namespace=namespace, flow_history=flow_history
    )
    if changes.changed:
        lists = {"created": changes.created, "scaled": changes.scaled, "removed": changes.removed}
        parts = [f"{k}: {', '.join(v)}" for k, v in lists.items() if v]
        console.print(f"[green]up[/] in {time.monotonic() - started:.1f}s ({'; '.join(parts)})")
    else:
        console.print("[green]up:[/] already running as declared, nothing changed")
    from flexsfc.local import control

    render_status(control.status(config))


# -- down / scale ----------------------------------------------------------------------------------


@click.command()
@state_dir_option
def down(state_dir: str | None) -> None:
    """Stop the local runtime and remove everything it created."""
    _need_root()
    from flexsfc.local import control

    config = _config(state_dir)
    if not config.root.exists() and not os.path.isdir(config.pin_dir):
        console.print("nothing to do: no local runtime")
        return
    with console.status("terminating pods and removing the data plane..."):
        errors = control.down(config)
    if errors:
        for error in errors:
            err_console.print(f"[red]-[/] {escape(error)}")
        raise click.exceptions.Exit(1)
    console.print("[green]down:[/] all pods, namespaces, links and pinned maps removed")
