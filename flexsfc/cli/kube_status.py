"""`flexsfc status --kube`: the cluster's chains, NFs, replicas per node, node agents and problems.

Reads the cluster through the kubeconfig (`--context`, `--kubeconfig` or $KUBECONFIG, else
~/.kube/config; in a pod without one, the service account). The data comes from
flexsfc.operator.cluster_status; this module only renders it, in the spirit of `cilium status`: a
summary block, then tables, then the problems. `--json` prints the same records as one document.
Exit status: 0 when the cluster was read (problems or not), 1 when it could not be.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    import kubernetes

    from flexsfc.operator.cluster_status import AgentRecord, ClusterStatus

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True)


def kube_options(command: F) -> F:
    """The options `status` takes for the cluster view (applied to the local `status` command)."""
    for option in reversed(
        [
            click.option("--kube", is_flag=True, help="Show the Kubernetes cluster's flexsfc (kubeconfig)."),
            click.option("--context", default=None, help="With --kube: the kubeconfig context."),
            click.option(
                "--kubeconfig", default=None, help="With --kube: the kubeconfig file (default $KUBECONFIG)."
            ),
            click.option(
                "-n", "--namespace", default=None, help="With --kube: only this namespace (default: all)."
            ),
        ]
    ):
        command = option(command)
    return command


def api_client(
    context: str | None, kubeconfig: str | None
) -> tuple["kubernetes.client.ApiClient", str | None]:
    """(client, context name) from the kubeconfig; the service account when there is none."""
    import kubernetes

    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path("~/.kube/config").expanduser())
    first = path.split(os.pathsep)[0]
    if not context and not Path(first).exists() and os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubernetes.config.load_incluster_config()
        return kubernetes.client.ApiClient(), "in-cluster"
    _, active = kubernetes.config.list_kube_config_contexts(config_file=path)
    client = kubernetes.config.new_client_from_config(config_file=path, context=context)
    return client, context or (active or {}).get("name")


def show_cluster_status(
    *, context: str | None, kubeconfig: str | None, namespace: str | None, as_json: bool
) -> None:
    import kubernetes
    import urllib3

    from flexsfc.operator.cluster_status import gather
    from flexsfc.operator.heartbeat import agent_namespace

    try:
        client, context_name = api_client(context, kubeconfig)
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] cannot load the kubeconfig: {escape(str(exc))}")
        raise click.exceptions.Exit(1) from None
    try:
        with client:
            info = gather(
                client, namespace=namespace, agent_namespace=agent_namespace(), context=context_name
            )
    except (kubernetes.client.exceptions.ApiException, urllib3.exceptions.HTTPError) as exc:
        err_console.print(f"[bold red]error:[/] cannot read the cluster: {escape(str(exc).strip())}")
        raise click.exceptions.Exit(1) from None
    if as_json:
        click.echo(json.dumps(info.to_json(), indent=1, default=str))
        return
    render(info)


# -- rendering ---------------------------------------------------------------------------------------


def _state(ok: bool, text: str, bad: str = "red") -> str:
    return f"[green]{escape(text)}[/]" if ok else f"[{bad}]{escape(text)}[/]"


def _agent_cell(agent: "AgentRecord") -> str:
    if agent.state == "ok":
        return _state(True, f"ok ({agent.age_seconds:.0f}s ago)" if agent.age_seconds is not None else "ok")
    if agent.state == "expired":
        return _state(False, f"expired ({agent.age_seconds:.0f}s ago)")
    if agent.state == "missing":
        return _state(False, "no heartbeat", "yellow")
    return _state(False, "unknown", "yellow")


def _opt(value: Any) -> str:
    return "-" if value is None else str(value)


def render(info: "ClusterStatus") -> None:
    healthy = sum(n.agent.healthy for n in info.nodes)
    with_agent = [n for n in info.nodes if n.agent.state != "missing" or n.nf_pods]
    ready_chains = sum(c.ready == "True" for c in info.chains)
    programmed = sum(all(e.ready and e.current for e in link.nodes.values()) for link in info.links)
    errors = sum(p.severity == "error" for p in info.problems)
    drops = info.drops
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("Cluster", escape(f"context {info.context or '-'}, namespace {info.namespace or 'all'}"))
    summary.add_row(
        "Chains", _state(ready_chains == len(info.chains), f"{ready_chains}/{len(info.chains)} Ready")
    )
    summary.add_row(
        "Agents",
        _state(
            healthy == len(with_agent),
            f"{healthy}/{len(with_agent)} healthy (Leases in {info.agent_namespace})",
        ),
    )
    summary.add_row(
        "CrossConnections",
        _state(programmed == len(info.links), f"{programmed}/{len(info.links)} ready on every node"),
    )
    summary.add_row("Drops", escape(", ".join(f"{k}={v}" for k, v in drops.items() if v) or "none"))
    summary.add_row(
        "Problems", _state(not info.problems, f"{errors} error(s), {len(info.problems) - errors} warning(s)")
    )
    console.print(summary)

    if info.chains:
        table = Table(title="Chains", title_justify="left")
        for col in ("chain", "ready", "reason", "network functions", "links"):
            table.add_column(col)
        for chain in info.chains:
            table.add_row(
                escape(chain.key),
                _state(chain.ready == "True", chain.ready),
                escape(chain.reason),
                escape(" -> ".join(chain.nfs)),
                str(chain.links),
            )
        console.print(table)
    if info.nfs:
        table = Table(
            title="Network functions (replicas per node: running/pending/terminating)", title_justify="left"
        )
        for col in ("namespace/nf", "chains", "deployment", "desired", "ready", "replicas per node"):
            table.add_column(col)
        for nf in info.nfs:
            per_node = ", ".join(
                f"{node}: {c['running']}/{c['pending']}/{c['terminating']}" for node, c in nf.nodes.items()
            )
            table.add_row(
                escape(f"{nf.namespace}/{nf.nf}"),
                escape(", ".join(nf.chains) or "-"),
                escape(nf.deployment or "-"),
                _opt(nf.desired),
                _opt(nf.ready),
                escape(per_node or "none scheduled"),
            )
        console.print(table)
    if info.nodes:
        table = Table(title="Nodes and agents", title_justify="left")
        for col in (
            "node",
            "node ready",
            "NF pods",
            "agent",
            "links ready",
            "replicas act/drain",
            "reconcile",
            "drops",
            "refused",
        ):
            table.add_column(col)
        for node in info.nodes:
            agent = node.agent
            node_ready = "gone" if not node.exists else _opt(node.node_ready)
            links = f"{_opt(agent.links_ready)}/{_opt(agent.links_reported)}"
            replicas = f"{_opt(agent.replicas_active)}/{_opt(agent.replicas_draining)}"
            reconcile = (
                "-"
                if agent.last_reconcile_ok is None
                else _state(agent.last_reconcile_ok, "ok" if agent.last_reconcile_ok else "failed")
            )
            node_drops = sum(agent.drops.values())
            table.add_row(
                escape(node.name),
                _state(node.node_ready == "True", node_ready, "yellow"),
                str(node.nf_pods),
                _agent_cell(agent),
                links,
                replicas,
                reconcile,
                str(node_drops) if agent.drops else "-",
                _state(not agent.refused_total, str(agent.refused_total)),
            )
        console.print(table)
    if info.links:
        table = Table(
            title="Cross-connections per node (replicas A active/draining, B active/draining)",
            title_justify="left",
        )
        for col in ("namespace/name", "side A", "side B", "node", "ready", "A", "B", "message"):
            table.add_column(col)
        for link in info.links:
            if not link.nodes:
                table.add_row(
                    escape(f"{link.namespace}/{link.name}"),
                    escape(link.side_a),
                    escape(link.side_b),
                    "-",
                    "-",
                    "",
                    "",
                    "no node reports it",
                )
            for node_name, entry in link.nodes.items():
                table.add_row(
                    escape(f"{link.namespace}/{link.name}"),
                    escape(link.side_a),
                    escape(link.side_b),
                    escape(node_name),
                    _state(
                        entry.ready and entry.current,
                        "yes" if entry.ready and entry.current else ("stale" if entry.ready else "no"),
                    ),
                    f"{entry.replicas_a}/{entry.draining_a}",
                    f"{entry.replicas_b}/{entry.draining_b}",
                    escape(entry.message[:120]),
                )
        console.print(table)
    if info.problems:
        console.print("[bold]Problems[/]")
        for problem in info.problems:
            style = "red" if problem.severity == "error" else "yellow"
            console.print(f"  [{style}]{problem.severity}[/] {escape(str(problem))}")
    else:
        console.print("[green]No problems[/]")
