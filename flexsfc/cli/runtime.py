"""Local runtime commands: up, down, scale, status, exec, logs.

Deployments and pods are namespaced: `-n/--namespace` picks one where a name runs in several
namespaces. A command that finds the runtime's supervisor dead starts a new one that adopts the
runtime (flexsfc.local.control.supervisor_for).
"""

import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flexsfc.cli.kube_status import kube_options, show_cluster_status
from flexsfc.local.config import ENV_STATE_DIR, ConfigError, RuntimeConfig

if TYPE_CHECKING:
    from flexsfc.local.status import ApplyResult, PodStatus, RuntimeStatus

console = Console()
err_console = Console(stderr=True)

state_dir_option = click.option(
    "--state-dir",
    envvar=ENV_STATE_DIR,
    default=None,
    help="Runtime state directory (default /run/flexsfc/local; env FLEXSFC_LOCAL_DIR).",
)


namespace_option = click.option(
    "-n",
    "--namespace",
    default=None,
    help="Namespace of the Deployment or pod, where the name runs in several.",
)


def _fail(message: str) -> "click.exceptions.Exit":
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return click.exceptions.Exit(1)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise _fail("the local runtime needs root (network namespaces, eBPF); run with sudo")


# -- up ------------------------------------------------------------------------------------------


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


def _wait_ready(config: RuntimeConfig, timeout: float, quiet: bool) -> None:
    from flexsfc.local import control

    deadline = time.monotonic() + timeout
    with console.status("starting pods...", spinner="dots") as spinner:
        while True:
            info = control.ready(config)
            if info.error:
                raise control.SupervisorError(info.error)
            text = ", ".join(f"{d.name} {d.running}/{d.desired}" for d in info.deployments)
            if not quiet:
                spinner.update(f"pods running: {text}")
            if info.ready:
                return
            if time.monotonic() > deadline:
                raise control.SupervisorError(f"not ready after {timeout:.0f}s: {text}")
            time.sleep(0.1)


def _config(state_dir: str | None, pin_dir: str | None = None, prefix: str | None = None) -> RuntimeConfig:
    try:
        return RuntimeConfig.for_dir(state_dir).with_options(pin_dir, prefix)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


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
def up(
    path: str,
    state_dir: str | None,
    pin_dir: str | None,
    netns_prefix: str | None,
    namespace: str | None,
    timeout: float,
    metrics_port: int,
) -> None:
    """Run the chain(s) in PATH (file or directory of manifests) on the local runtime.

    An apply owns the namespaces of its objects: it replaces what runs there and leaves the others.
    """
    _need_root()
    preflight(path, namespace)
    config = _config(state_dir, pin_dir, netns_prefix)
    started = time.monotonic()
    changes = bring_up(config, path, timeout, metrics_port=metrics_port, namespace=namespace)
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


def _say_adopted(config: RuntimeConfig, how: str) -> None:
    if how == "adopted":
        err_console.print(
            f"[yellow]the supervisor of {escape(config.state_dir)} had died: a new one adopted its pods "
            "and data plane[/]"
        )


# -- status ----------------------------------------------------------------------------------------


@click.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option(
    "--interval", default=1.0, show_default=True, help="Seconds between two readings for rates (0: no rates)."
)
@kube_options
def status(state_dir: str | None, as_json: bool, interval: float, **kube: Any) -> None:
    """Chains, cross-connections and replicas with their state, packets, bytes and sessions.

    With --kube: the Kubernetes cluster's chains, NFs, replicas per node, node agents and problems."""
    if kube.pop("kube"):
        show_cluster_status(as_json=as_json, **kube)
        return
    import json

    from flexsfc.local import control
    from flexsfc.local.state import read_state
    from flexsfc.local.status import RuntimeStatus

    config = _config(state_dir)
    rates = None
    try:
        with control.supervisor_for(config, create=False) as how:
            _say_adopted(config, how)
        # The supervisor's document as it came: `--json` prints it unchanged (rates added).
        raw = control.request(config, "status", timeout=30)
        if interval > 0:
            from flexsfc.metrics.rates import status_rates

            time.sleep(interval)
            first, raw = raw, control.request(config, "status", timeout=30)
            rates = raw["rates"] = status_rates(first, raw, interval)
        info = RuntimeStatus.from_json(raw)
    except control.SupervisorError as exc:
        state = read_state(config)
        if state is None:
            raise _fail("no local runtime is running; start one with `flexsfc up <dir>`") from None
        err_console.print(
            f"[yellow]the supervisor is not running and could not be replaced ({escape(str(exc))}); "
            "showing the last saved state[/]"
        )
        info = RuntimeStatus(pods=state.pods, reactions=state.reactions, stale=True)
        raw = info.to_json()
    if as_json:
        click.echo(json.dumps(raw, indent=1, default=str))
        return
    render_status(info, rates)


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


_PHASE_STYLE = {"running": "green", "pending": "yellow", "terminating": "magenta", "gone": "dim"}


def render_status(info: "RuntimeStatus", rates: dict[str, dict[str, float]] | None = None) -> None:
    if info.chains:
        table = Table(title="Chains", title_justify="left")
        table.add_column("chain")
        table.add_column("network functions")
        for chain in info.chains:
            table.add_row(f"{chain.namespace}/{chain.name}", " -> ".join(chain.nfs))
        console.print(table)
    if info.deployments:
        table = Table(title="Network functions", title_justify="left")
        table.add_column("namespace")
        table.add_column("nf")
        table.add_column("deployment")
        for col in ("desired", "running", "pending", "terminating"):
            table.add_column(col, justify="right")
        for dep in info.deployments:
            table.add_row(
                dep.namespace,
                dep.nf,
                dep.name,
                str(dep.desired),
                str(dep.running),
                str(dep.pending),
                str(dep.terminating),
            )
        console.print(table)
    if info.cross_connections:
        table = Table(title="Cross-connections (replicas active/draining)", title_justify="left")
        table.add_column("namespace")
        table.add_column("side A")
        table.add_column("side B")
        table.add_column("mode")
        table.add_column("A", justify="right")
        table.add_column("B", justify="right")
        table.add_column("sessions", justify="right")
        for xc in info.cross_connections:
            table.add_row(
                xc.namespace,
                xc.side_a,
                xc.side_b,
                xc.mode,
                f"{xc.active_a}/{xc.draining_a}",
                f"{xc.active_b}/{xc.draining_b}",
                str(xc.sessions),
            )
        console.print(table)
    table = Table(title="Replicas (packets/bytes delivered to / sent by each pod)", title_justify="left")
    table.add_column("namespace/pod", no_wrap=True)
    table.add_column("state")
    columns = ["pkts in", "bytes in", "pkts out", "bytes out", "sessions"]
    if rates:
        columns[2:2] = ["pps in"]
        columns[5:5] = ["pps out"]
    for col in columns:
        table.add_column(col, justify="right")
    for pod in sorted(info.pods, key=lambda p: (p.namespace, p.nf, p.name)):
        counters = pod.counters
        cells = [
            _human(counters.to_packets if counters else 0),
            _human(counters.to_bytes if counters else 0),
            _human(counters.from_packets if counters else 0),
            _human(counters.from_bytes if counters else 0),
            str(counters.sessions) if counters else "",
        ]
        if rates:
            rate = rates.get(pod.name, {})
            cells[2:2] = [_human(rate.get("rxPps", 0))]
            cells[5:5] = [_human(rate.get("txPps", 0))]
        table.add_row(pod.key, f"[{_PHASE_STYLE.get(pod.phase, 'white')}]{pod.phase}[/]", *cells)
    console.print(table)
    drops = {k: v for k, v in info.drops.items() if v}
    if drops:
        console.print("drops: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))
    for dep in info.deployments:
        if dep.last_error:
            err_console.print(f"[red]{escape(dep.key)}:[/] {escape(dep.last_error)}")


# -- exec / logs -------------------------------------------------------------------------------------


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
