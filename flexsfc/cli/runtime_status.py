"""`flexsfc status`: the local runtime's chains, cross-connections and replicas (or, with --kube, the
cluster's), as tables or JSON."""

import time
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape
from rich.table import Table

from flexsfc.cli.kube_status import kube_options, show_cluster_status

if TYPE_CHECKING:
    from flexsfc.local.status import RuntimeStatus

from flexsfc.cli.runtime import _config, _fail, _say_adopted, console, err_console, state_dir_option


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
    if info.nodes:
        table.add_column("node")
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
        if info.nodes:
            cells.insert(0, pod.node)
        table.add_row(pod.key, f"[{_PHASE_STYLE.get(pod.phase, 'white')}]{pod.phase}[/]", *cells)
    console.print(table)
    if info.nodes:
        nodes = Table(title="Nodes (simulated: `flexsfc up --nodes N`)", title_justify="left")
        for col in ("node", "underlay", "agent", "pid", "pods", "pushes", "last error"):
            nodes.add_column(col)
        for n in info.nodes:
            style = "green" if n.agent == "ok" else "red"
            agent = f"[{style}]{escape(n.agent)}[/]"
            counts = (str(n.agent_pid), str(n.pods), str(n.pushes))
            nodes.add_row(n.name, n.address, agent, *counts, escape(n.last_error))
        console.print(nodes)
    drops = {k: v for k, v in info.drops.items() if v}
    if drops:
        console.print("drops: " + ", ".join(f"{k}={v}" for k, v in sorted(drops.items())))
    if info.anomalies:  # collisions (NAT replicas sharing a 5-tuple), a full session table, events lost
        console.print(
            "[yellow]data plane: " + ", ".join(f"{k}={v}" for k, v in sorted(info.anomalies.items())) + "[/]"
        )
    for dep in info.deployments:
        if dep.last_error:
            err_console.print(f"[red]{escape(dep.key)}:[/] {escape(dep.last_error)}")


# -- exec / logs -------------------------------------------------------------------------------------
