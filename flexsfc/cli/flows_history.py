"""`flexsfc flows --last N`: the last matching events of a flow history, fetched from the local
runtime's supervisor (`flexsfc up --flow-history`) or a node agent's socket (`--agent-socket`), and
printed as the live stream prints them (flexsfc.agent.flow_history keeps them).
"""

import contextlib
import datetime
import json
import os

import click

from flexsfc.agent.flow_history import HistoryReply, HistoryUnavailable, fetch
from flexsfc.cli.flows_filter import EventFilter
from flexsfc.cli.flows_names import load_names, names_of_history
from flexsfc.cli.flows_render import Recreated, to_json, to_text
from flexsfc.dataplane import maps
from flexsfc.dataplane.events import FlowEventRecord


def show_history(
    last: int,
    selector: EventFilter,
    as_json: bool,
    agent_socket: str | None,
    pin_dir: str | None,
    state_dir: str | None,
) -> None:
    """The last `last` events of the history that match `selector`, oldest first."""
    if agent_socket:
        try:
            reply = fetch(agent_socket)
        except (HistoryUnavailable, OSError) as exc:
            raise click.ClickException(
                f"{exc}: the node agent keeps a flow history only when started with --flow-history N "
                "(`flexsfc agent --local --flow-history N`; the socket is flows.sock next to its CNI socket, "
                "or its --flows-socket)"
            ) from None
        names, source = names_of_history(reply.names), agent_socket
    else:
        from flexsfc.local import control
        from flexsfc.local.config import RuntimeConfig

        config = RuntimeConfig.for_dir(state_dir)
        try:
            reply = HistoryReply.from_json(control.flows(config))
        except control.SupervisorNotRunning:
            raise click.ClickException(
                f"no local runtime runs in {config.state_dir}: give --state-dir, or --agent-socket for "
                "a node agent's flow history"
            ) from None
        except control.SupervisorError as exc:  # e.g. no history kept: it says how to turn it on
            raise click.ClickException(str(exc)) from None
        names, source = names_of_history(reply.names), f"the local runtime in {config.state_dir}"
        where = pin_dir or config.pin_dir
        if os.path.exists(os.path.join(where, maps.PROGRAM_NAME)):
            # Pod names from the runtime; the history's own names stay for replicas removed since.
            with contextlib.suppress(Exception):  # names are a nicety: the events are printed anyway
                current = load_names(where, state_dir)
                names.ports.update(current.ports)
                names.xcs.update(current.xcs)
                names.chains = current.chains
    recreated = Recreated()
    matched: list[tuple[FlowEventRecord, tuple[int, int] | None]] = []
    for record in reply.events:
        previous = recreated.check(record)  # over every event kept, as a live reader would see them
        if selector.matches(record, names):
            matched.append((record, previous))
    shown = matched[-last:]
    if not as_json:
        since = datetime.datetime.fromtimestamp(reply.since).strftime("%H:%M:%S")
        click.echo(
            f"# last {len(shown)} matching of {len(reply.events)} flow events kept (history of {reply.size}, "
            f"{reply.recorded} recorded since {since}) from {source}",
            err=True,
        )
    clock = "%H:%M:%S.%f"
    for start, end in reply.gaps:
        click.echo(
            f"# warning: the history yielded the stream to another reader from "
            f"{datetime.datetime.fromtimestamp(start).strftime(clock)[:-3]} to "
            f"{datetime.datetime.fromtimestamp(end).strftime(clock)[:-3]}: that reader has those events",
            err=True,
        )
    if reply.paused_since is not None:
        since = datetime.datetime.fromtimestamp(reply.paused_since).strftime(clock)[:-3]
        click.echo(
            f"# warning: another reader holds the stream since {since}: no events kept since", err=True
        )
    if reply.error or not reply.running:
        click.echo(
            f"# warning: the history stopped recording: {reply.error or 'its reader exited'}", err=True
        )
    for record, previous in shown:
        click.echo(
            json.dumps(to_json(record, names, previous)) if as_json else to_text(record, names, previous)
        )
