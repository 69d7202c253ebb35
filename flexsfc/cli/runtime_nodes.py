"""`flexsfc node fail NODE`: a simulated node (`flexsfc up --nodes N`) disappears abruptly.

Its agent is SIGKILLed and its network namespace deleted with its pods' namespaces (under traffic:
nothing is drained), the other nodes' agents get the picture without it, and the replica sets start
replacements on the nodes that remain, spread as the scheduler spreads a Deployment.
"""

import click
from rich.markup import escape

from flexsfc.cli.runtime import _config, _fail, _need_root, console, state_dir_option


@click.group()
def node() -> None:
    """Simulated nodes of the local runtime (`flexsfc up --nodes N`)."""


@node.command("fail")
@click.argument("name")
@state_dir_option
def fail(name: str, state_dir: str | None) -> None:
    """Remove node NAME abruptly: agent killed, its namespace and pods gone; replicas replaced elsewhere."""
    _need_root()
    from flexsfc.local import control

    config = _config(state_dir)
    try:
        result = control.fail_node(config, name)
    except control.SupervisorError as exc:
        raise _fail(str(exc)) from None
    lost = ", ".join(result.get("lost", [])) or "none"
    console.print(f"[yellow]node {escape(name)} failed[/]: pods lost: {escape(lost)}; replacements starting")
