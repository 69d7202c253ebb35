"""`flexsfc demo`: the paper's chain on the local runtime, scaled under real traffic, with a report."""

import statistics
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flexsfc.cli.runtime import _fail, _need_root
from flexsfc.cli.runtime_up import bring_up, preflight
from flexsfc.local.config import DEFAULT_LOCAL_PIN_DIR, RuntimeConfig
from flexsfc.model.constants import DEFAULT_LOCAL_STATE_DIR

console = Console()

DEMO_STATE_DIR = f"{DEFAULT_LOCAL_STATE_DIR}/demo"
DEMO_PIN_DIR = f"{DEFAULT_LOCAL_PIN_DIR}-demo"


def default_example() -> Path:
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = base / "examples" / "transparent-firewall"
        if candidate.is_dir():
            return candidate
    return Path("examples/transparent-firewall")


@click.command()
@click.option(
    "--example", "path", type=click.Path(), default=None, help="Chain manifests (default: the paper's)."
)
@click.option("--nf", default="firewall", show_default=True, help="Network function to scale.")
@click.option("--scale-to", default=3, show_default=True, type=click.IntRange(2, 16))
@click.option("--state-dir", default=DEMO_STATE_DIR, show_default=True)
@click.option(
    "--nodes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Simulated nodes the chain's replicas spread over (flexsfc up --nodes; docs/multinode.md).",
)
@click.option(
    "--keep", is_flag=True, help="Leave the chain running (then: flexsfc down --state-dir /run/flexsfc/demo)."
)
@click.option(
    "--autoscale/--no-autoscale",
    default=True,
    show_default=True,
    help="After the manual scaling, let a traffic ramp drive the HPA algorithm (about 20 s more).",
)
def demo(
    path: str | None, nf: str, scale_to: int, state_dir: str, nodes: int, keep: bool, autoscale: bool
) -> None:
    """Bring up the paper's chain with client and server, scale an NF out and in under real traffic
    (many TCP and UDP flows), report flow shares, moved flows, losses and reaction times; then let a
    traffic ramp make the autoscaler scale the NF out and in with drain; tear down."""
    from flexsfc.local import control
    from flexsfc.local.demo import DemoSettings, run_demo

    _need_root()
    started = time.monotonic()
    example = path or str(default_example())
    plan = preflight(example)
    middle = [f.name for f in plan.chains[0].network_functions][1:-1]
    if nf not in middle:
        raise _fail(f"--nf {nf}: pick a network function between the chain's ends ({', '.join(middle)})")
    config = RuntimeConfig(state_dir=state_dir, pin_dir=DEMO_PIN_DIR, netns_prefix="fxdemo", nodes=nodes)
    if config.root.exists():
        # The previous demo's own node count: its nodes are what there is to remove.
        config = RuntimeConfig.for_dir(state_dir)
        console.print(f"[yellow]cleaning up a previous demo in {state_dir}[/]")
        control.down(config)
    config = RuntimeConfig(state_dir=state_dir, pin_dir=DEMO_PIN_DIR, netns_prefix="fxdemo", nodes=nodes)
    on_nodes = f" over {nodes} simulated nodes" if nodes > 1 else ""
    console.rule(f"[bold]flexsfc demo[/]: chain {plan.chains[0].name} from {example}{on_nodes}")
    try:
        with console.status("bringing up the chain..."):
            t0 = time.monotonic()
            bring_up(config, example, 60.0, quiet=True)
        console.print(f"[green]chain up[/] in {time.monotonic() - t0:.1f}s")
        report = run_demo(config, plan, DemoSettings(nf=nf, scale_to=scale_to), _say)
        render_report(report)
        if autoscale:
            from flexsfc.autoscale.episode import render_episode, run_demo_episode

            console.rule(f"[bold]autoscaling {nf}[/] on the packets per second it receives")
            render_episode(console, run_demo_episode(config, plan, nf, _say))
    except (control.SupervisorError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise click.exceptions.Exit(130) from None
    finally:
        if not keep:
            with console.status("tearing down..."):
                t0 = time.monotonic()
                errors = control.down(config)
            for error in errors:
                console.print(f"[red]-[/] {escape(error)}")
            console.print(
                f"torn down in {time.monotonic() - t0:.1f}s: no namespaces, links or pinned maps left"
            )
    console.print(f"demo finished in {time.monotonic() - started:.0f}s")


def _say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}")


def render_report(r: dict[str, Any]) -> None:
    nf = r["nf"]
    shares = r["shares"]
    first = list(shares["before"])  # the original replica first, then the scaled-out ones
    pods = first + sorted(({p for s in shares.values() for p in s} | set(r["newSessions"])) - set(first))
    table = Table(
        title=f"{nf} replicas: long-lived flows served (session table) and new sessions", title_justify="left"
    )
    table.add_column("replica")
    table.add_column("before", justify="right")
    table.add_column(f"1->{r['scaleTo']}", justify="right")
    table.add_column("draining", justify="right")
    table.add_column(f"{r['scaleTo']}->1", justify="right")
    table.add_column("new sessions", justify="right")
    total_new = sum(r["newSessions"].values()) or 1
    for pod in pods:
        new = r["newSessions"].get(pod, 0)
        table.add_row(
            pod,
            *(_cell(shares[k].get(pod, 0), sum(shares[k].values())) for k in shares),
            f"{new} ({100 * new / total_new:.0f}%)",
        )
    console.print(table)

    if r.get("perNode"):
        table = Table(title=f"{nf} per node: replicas / long-lived flows they serve", title_justify="left")
        table.add_column("node")
        phases = list(r["perNode"])
        for phase in phases:
            table.add_column(phase, justify="right")
        for node in sorted({n for per in r["perNode"].values() for n in per}):
            cells = []
            for phase in phases:
                got = r["perNode"][phase].get(node)
                cells.append(f"{got['replicas']} / {got['flows']}" if got else "-")
            table.add_row(node, *cells)
        console.print(table)

    t = r["traffic"]
    table = Table(title="Traffic", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    ok = "[green]" if r["movedOnScaleOut"] == 0 else "[red]"
    table.add_row("established flows moved by scale-out", f"{ok}{r['movedOnScaleOut']}[/]")
    table.add_row(
        "flows on removed replicas: kept while draining",
        f"{r['keptWhileDraining']}/{r['onRemovedReplicas']}",
    )
    table.add_row(
        "flows on removed replicas: re-hashed once gone", f"{r['movedOffRemoved']}/{r['onRemovedReplicas']}"
    )
    table.add_row("other flows moved by scale-in", str(r["movedOthersOnScaleIn"]))
    for phase, values in r["phases"].items():
        style = "[green]" if values["udpLost"] == 0 else "[yellow]"
        table.add_row(f"UDP datagrams lost {phase}", f"{style}{values['udpLost']}[/]")
    table.add_row("UDP datagrams sent / lost (total)", f"{t['udpSent']} / {t['udpLost']}")
    alive = "[green]" if t["tcpAlive"] == t["tcpFlows"] else "[red]"
    table.add_row("TCP connections alive at the end", f"{alive}{t['tcpAlive']}/{t['tcpFlows']}[/]")
    table.add_row("short UDP flows answered", f"{t['shortAnswered']}/{t['shortOpened']}")
    table.add_row(f"scale-out 1->{r['scaleTo']} until all running", f"{r['scaleOutSeconds']:.2f} s")
    table.add_row(f"scale-in {r['scaleTo']}->1 until all terminated", f"{r['scaleInSeconds']:.2f} s")
    console.print(table)

    table = Table(title="Reaction times", title_justify="left")
    table.add_column("replica")
    table.add_column("event")
    table.add_column("ms", justify="right")
    table.add_column("agent steps (ms)")
    by_kind: dict[str, list[float]] = {}
    for reaction in r["reactions"]:
        by_kind.setdefault(reaction.kind, []).append(reaction.ms)
        steps = ", ".join(f"{k} {v:.2f}" for k, v in reaction.steps.items() if k != "read")
        table.add_row(reaction.pod, reaction.kind, f"{reaction.ms:.1f}", steps)
    console.print(table)
    for kind, values in by_kind.items():
        console.print(f"  {kind}: median {statistics.median(values):.1f} ms over {len(values)}")


def _cell(count: int, total: int) -> str:
    if not count:
        return "-"
    return f"{count} ({100 * count / max(total, 1):.0f}%)"
