"""`flexsfc validate PATH`: check manifests and print the plan they produce."""

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flexsfc.model.errors import Issue, ManifestError
from flexsfc.model.loader import load_plan
from flexsfc.model.types import Plan, XcSide


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
def validate(path: Path) -> None:
    """Validate the manifests in PATH (a YAML file or a directory) and print the resulting plan."""
    console = Console()
    try:
        plan = load_plan(path)
    except ManifestError as exc:
        # Errors first: they are what must be fixed; warnings may be follow-ups of them.
        for issue in exc.errors:
            _print_issue(console, issue)
        for issue in exc.warnings:
            _print_issue(console, issue)
        console.print(
            f"[bold red]{len(exc.errors)} error(s)[/], {len(exc.warnings)} warning(s): nothing applied."
        )
        sys.exit(1)
    _print_plan(console, plan)
    for issue in plan.issues:
        _print_issue(console, issue)
    console.print(
        f"[bold green]valid[/]: {len(plan.chains)} chain(s), {len(plan.cross_connections)} "
        f"cross-connection(s), {len(plan.issues)} warning(s)."
    )


def _print_issue(console: Console, issue: Issue) -> None:
    style = "red" if issue.is_error else "yellow"
    # Messages quote user input (paths, names, '[...]' field paths): escape it, it is not markup.
    console.print(f"[bold {style}]{issue.severity}[/] {escape(issue.where())}", highlight=False)
    console.print(f"    [{style}]{escape(issue.message)}[/]", highlight=False)
    console.print(f"    fix: {escape(issue.fix)}", highlight=False)


def _print_plan(console: Console, plan: Plan) -> None:
    chains = Table(title="Service function chains")
    for column in ("namespace", "chain", "network functions", "maglev table"):
        chains.add_column(column)
    for chain in plan.chains:
        chains.add_row(
            *_cells(
                chain.namespace,
                chain.name,
                " - ".join(nf.name for nf in chain.network_functions),
                str(chain.settings.maglev_table_size),
            )
        )
    console.print(chains)

    xcs = Table(title="Cross-connections")
    for column in ("name", "side A", "mode", "MAC", "addresses", "side B", "mode ", "MAC ", "addresses "):
        xcs.add_column(column.strip())
    for xc in plan.cross_connections:
        xcs.add_row(*_cells(xc.name, *_side_cells(xc.side_a), *_side_cells(xc.side_b)))
    console.print(xcs)

    nfs = Table(title="Network functions")
    for column in ("namespace", "NF", "deployment", "replicas", "interfaces"):
        nfs.add_column(column)
    modes = {
        (xc.namespace, side.nf, side.interface): side
        for xc in plan.cross_connections
        for side in (xc.side_a, xc.side_b)
    }
    for deployment in plan.deployments:
        interfaces = []
        for selection in deployment.networks:
            side = modes.get((deployment.namespace, deployment.nf, selection.interface))
            detail = f" {side.mode} {_addresses(side)}".rstrip() if side else " (not in a chain link)"
            interfaces.append(f"{selection.interface} <- {selection.network}{detail}")
        nfs.add_row(
            *_cells(
                deployment.namespace,
                deployment.nf,
                deployment.name,
                str(deployment.replicas),
                "\n".join(interfaces) or "-",
            )
        )
    console.print(nfs)


def _side_cells(side: XcSide) -> tuple[str, str, str, str]:
    return f"{side.nf}:{side.interface}", str(side.mode), side.mac, _addresses(side) or "-"


def _addresses(side: XcSide) -> str:
    return ", ".join(str(address) for address in side.addresses)


def _cells(*values: str) -> list[str]:
    return [escape(value) for value in values]
