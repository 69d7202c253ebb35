"""Local runtime commands: up, down, scale, status, exec, logs."""

import os
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flexsfc.local.config import ENV_STATE_DIR, RuntimeConfig

console = Console()
err_console = Console(stderr=True)

state_dir_option = click.option(
    "--state-dir",
    envvar=ENV_STATE_DIR,
    default=None,
    help="Runtime state directory (default /run/flexsfc/local; env FLEXSFC_LOCAL_DIR).",
)


def _fail(message: str) -> "click.exceptions.Exit":
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    return click.exceptions.Exit(1)


def _need_root() -> None:
    if os.geteuid() != 0:
        raise _fail("the local runtime needs root (network namespaces, eBPF); run with sudo")


# -- up ------------------------------------------------------------------------------------------


def preflight(path: str) -> Any:
    """Validate manifests and pod templates before anything is created; returns the Plan."""
    from flexsfc.local.podspec import PodSpecError, parse_pod_template
    from flexsfc.model.errors import ManifestError
    from flexsfc.model.loader import load_plan

    try:
        plan = load_plan(path)
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
    config: RuntimeConfig, path: str, timeout: float, *, quiet: bool = False, metrics_port: int = 0
) -> dict[str, Any]:
    """Start (or update) the runtime for `path` and wait until every replica runs.

    On a failure during the first bring-up everything created so far is removed again.
    """
    from flexsfc.local import control

    fresh = not control.is_running(config)
    if fresh and config.state_file.exists():
        raise _fail(
            f"a previous runtime in {config.state_dir} left state behind but its supervisor is gone; "
            "run `flexsfc down` first"
        )
    try:
        if fresh:
            control.start_supervisor(config, metrics_port=metrics_port)
        changes = control.request(config, "apply", path=str(Path(path).resolve()))
        _wait_ready(config, timeout, quiet)
    except (control.SupervisorError, KeyboardInterrupt) as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        if fresh:
            err_console.print(f"[bold red]up failed:[/] {escape(reason)}")
            err_console.print("[yellow]rolling back: removing everything that was created...[/]")
            errors = control.down(config)
            for error in errors:
                err_console.print(f"  [red]-[/] {escape(error)}")
            raise click.exceptions.Exit(1) from None
        raise _fail(reason) from None
    return changes


def _wait_ready(config: RuntimeConfig, timeout: float, quiet: bool) -> None:
    from flexsfc.local import control

    deadline = time.monotonic() + timeout
    with console.status("starting pods...", spinner="dots") as spinner:
        while True:
            info = control.request(config, "ready")
            if info["error"]:
                raise control.SupervisorError(info["error"])
            deps = info["deployments"]
            text = ", ".join(f"{d['name']} {d['running']}/{d['desired']}" for d in deps)
            if not quiet:
                spinner.update(f"pods running: {text}")
            if info["ready"]:
                return
            if time.monotonic() > deadline:
                raise control.SupervisorError(f"not ready after {timeout:.0f}s: {text}")
            time.sleep(0.1)


def _config(state_dir: str | None, pin_dir: str | None = None, prefix: str | None = None) -> RuntimeConfig:
    config = RuntimeConfig.for_dir(state_dir)
    if not config.state_file.exists() and (pin_dir or prefix):
        config = RuntimeConfig(
            state_dir=config.state_dir,
            pin_dir=pin_dir or config.pin_dir,
            netns_prefix=prefix or config.netns_prefix,
        )
    return config


@click.command()
@click.argument("path", type=click.Path(exists=True))
@state_dir_option
@click.option("--pin-dir", default=None, help="bpffs directory of this runtime's data plane.")
@click.option("--netns-prefix", default=None, help="Prefix of pod network namespace names (default fx).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for every replica.")
@click.option("--metrics-port", default=0, help="Serve Prometheus metrics on 127.0.0.1:PORT (0: off).")
def up(
    path: str,
    state_dir: str | None,
    pin_dir: str | None,
    netns_prefix: str | None,
    timeout: float,
    metrics_port: int,
) -> None:
    """Run the chain(s) in PATH (file or directory of manifests) on the local runtime."""
    _need_root()
    preflight(path)
    config = _config(state_dir, pin_dir, netns_prefix)
    started = time.monotonic()
    changes = bring_up(config, path, timeout, metrics_port=metrics_port)
    if changes.get("changed"):
        parts = [f"{k}: {', '.join(v)}" for k, v in changes.items() if isinstance(v, list) and v]
        console.print(f"[green]up[/] in {time.monotonic() - started:.1f}s ({'; '.join(parts)})")
    else:
        console.print("[green]up:[/] already running as declared, nothing changed")
    from flexsfc.local import control

    render_status(control.request(config, "status"))


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
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the replicas run.")
@click.option("--timeout", default=60.0, show_default=True)
def scale(name: str, replicas: int, state_dir: str | None, wait: bool, timeout: float) -> None:
    """Set the number of replicas of NAME (Deployment or network function)."""
    from flexsfc.local import control

    config = _config(state_dir)
    try:
        result = control.request(config, "scale", name=name, replicas=replicas)
        if wait:
            _wait_ready(config, timeout, quiet=False)
    except control.SupervisorNotRunning as exc:
        raise _fail(f"{exc}; start it with `flexsfc up <dir>`") from None
    except control.SupervisorError as exc:
        raise _fail(str(exc)) from None
    console.print(f"[green]scaled[/] {result['deployment']}: {result['from']} -> {result['to']}")


# -- status ----------------------------------------------------------------------------------------


@click.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.option(
    "--interval", default=1.0, show_default=True, help="Seconds between two readings for rates (0: no rates)."
)
def status(state_dir: str | None, as_json: bool, interval: float) -> None:
    """Chains, cross-connections and replicas with their state, packets, bytes and sessions."""
    import json

    from flexsfc.local import control
    from flexsfc.local.runtime import read_state

    config = _config(state_dir)
    try:
        info = control.request(config, "status", timeout=30)
        if interval > 0:
            from flexsfc.metrics.rates import status_rates

            time.sleep(interval)
            first, info = info, control.request(config, "status", timeout=30)
            info["rates"] = status_rates(first, info, interval)
    except control.SupervisorNotRunning:
        state = read_state(config)
        if state is None:
            raise _fail("no local runtime is running; start one with `flexsfc up <dir>`") from None
        err_console.print("[yellow]the supervisor is not running; showing the last saved state[/]")
        info = {"pods": state.get("pods", []), "reactions": state.get("reactions", []), "stale": True}
    if as_json:
        click.echo(json.dumps(info, indent=1, default=str))
        return
    render_status(info)


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


_PHASE_STYLE = {"running": "green", "pending": "yellow", "terminating": "magenta", "gone": "dim"}


def render_status(info: dict[str, Any]) -> None:
    if info.get("chains"):
        table = Table(title="Chains", title_justify="left")
        table.add_column("chain")
        table.add_column("network functions")
        for chain in info["chains"]:
            table.add_row(f"{chain['namespace']}/{chain['name']}", " -> ".join(chain["nfs"]))
        console.print(table)
    if info.get("deployments"):
        table = Table(title="Network functions", title_justify="left")
        table.add_column("nf")
        table.add_column("deployment")
        for col in ("desired", "running", "pending", "terminating"):
            table.add_column(col, justify="right")
        for dep in info["deployments"]:
            table.add_row(
                dep["nf"],
                dep["name"],
                str(dep["desired"]),
                str(dep["running"]),
                str(dep["pending"]),
                str(dep["terminating"]),
            )
        console.print(table)
    if info.get("crossConnections"):
        table = Table(title="Cross-connections (replicas active/draining)", title_justify="left")
        table.add_column("side A")
        table.add_column("side B")
        table.add_column("mode")
        table.add_column("A", justify="right")
        table.add_column("B", justify="right")
        table.add_column("sessions", justify="right")
        for xc in info["crossConnections"]:
            table.add_row(
                xc["sideA"],
                xc["sideB"],
                xc["mode"],
                f"{xc['activeA']}/{xc['drainingA']}",
                f"{xc['activeB']}/{xc['drainingB']}",
                str(xc["sessions"]),
            )
        console.print(table)
    table = Table(title="Replicas (packets/bytes delivered to / sent by each pod)", title_justify="left")
    table.add_column("pod", no_wrap=True)
    table.add_column("state")
    rates = info.get("rates") or {}
    columns = ["pkts in", "bytes in", "pkts out", "bytes out", "sessions"]
    if rates:
        columns[2:2] = ["pps in"]
        columns[5:5] = ["pps out"]
    for col in columns:
        table.add_column(col, justify="right")
    for pod in sorted(info.get("pods", []), key=lambda p: (p["nf"], p["name"])):
        phase = pod["phase"]
        cells = [
            _human(pod.get("toPackets", 0)),
            _human(pod.get("toBytes", 0)),
            _human(pod.get("fromPackets", 0)),
            _human(pod.get("fromBytes", 0)),
            str(pod.get("sessions", "")),
        ]
        if rates:
            rate = rates.get(pod["name"], {})
            cells[2:2] = [_human(rate.get("rxPps", 0))]
            cells[5:5] = [_human(rate.get("txPps", 0))]
        table.add_row(pod["name"], f"[{_PHASE_STYLE.get(phase, 'white')}]{phase}[/]", *cells)
    console.print(table)
    drops = {k: v for k, v in (info.get("drops") or {}).items() if v}
    if drops:
        console.print("drops: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))
    errors = [d for d in info.get("deployments", []) if d.get("lastError")]
    for dep in errors:
        err_console.print(f"[red]{dep['name']}:[/] {escape(dep['lastError'])}")


# -- exec / logs -------------------------------------------------------------------------------------


def find_pod(config: RuntimeConfig, name: str) -> dict[str, Any]:
    """A pod by exact name, or the first running replica of a Deployment / network function."""
    from flexsfc.local.runtime import read_state

    state = read_state(config)
    if state is None:
        raise _fail("no local runtime is running; start one with `flexsfc up <dir>`")
    pods = state.get("pods", [])
    for pod in pods:
        if pod["name"] == name:
            return pod
    candidates = [p for p in pods if name in (p["deployment"], p["nf"]) and p["phase"] == "running"]
    if candidates:
        return sorted(candidates, key=lambda p: p["name"])[0]
    known = ", ".join(sorted(p["name"] for p in pods)) or "none"
    raise _fail(f"no pod named {name!r} (pods: {known})")


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@state_dir_option
def exec_(pod: str, command: tuple[str, ...], state_dir: str | None) -> None:
    """Run COMMAND inside POD's network namespace: flexsfc exec <pod> -- <cmd> [args]."""
    _need_root()
    target = find_pod(_config(state_dir), pod)
    argv = ["nsenter", f"--net=/run/netns/{target['netns']}", "--", *command]
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@click.command()
@click.argument("pod")
@state_dir_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the pod writes.")
def logs(pod: str, state_dir: str | None, follow: bool) -> None:
    """Print the output of POD's containers, preStop hooks included."""
    target = find_pod(_config(state_dir), pod)
    path = Path(target["logPath"])
    if not path.exists():
        raise _fail(f"pod {target['name']} has no log yet")
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
