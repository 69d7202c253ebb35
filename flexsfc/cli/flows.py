"""`flexsfc flows`: the data plane's flow events, live: which replica each new flow got, the sessions
that moved and why, collisions, ICMP errors followed, drops with their reason and packet.

It reads the pinned ring buffer of the node's data plane directly (root, on the node): the local
runtime's pin directory by default, the agent's (`--pin-dir /sys/fs/bpf/flexsfc`) on a cluster node,
where the documented way is `kubectl exec` into the node's agent pod (docs/observability.md). While
it runs the program writes events (the stream is off otherwise and costs nothing). The ring keeps no
history: events are those that happen while it is attached; without `--follow` it prints the next
`--count` matching events or what came within `--duration` seconds.

`--last N` prints the last N matching events of a history instead, kept by the local runtime's
supervisor (`flexsfc up --flow-history SIZE`) or a node agent (`flexsfc agent --local --flow-history
SIZE`, read on its socket with `--agent-socket`): flexsfc.agent.flow_history. Only what a history
kept exists; the stream is on while one is kept.

Names (cross-connection, chain, pods) come from the local runtime's status when its supervisor runs,
else from the data plane's port records (replica identities) and ifindexes (flexsfc.cli.flows_names).
The filters are in flexsfc.cli.flows_filter, the output in flexsfc.cli.flows_render and the history
client in flexsfc.cli.flows_history.
"""

import contextlib
import json
import signal
import time

import click

from flexsfc.cli.flows_filter import (
    KIND_CHOICES,
    EventFilter,
    FlowFilter,
    flow_filter_options,
    ifindexes,
    kinds_of,
)
from flexsfc.cli.flows_history import show_history
from flexsfc.cli.flows_names import default_pin_dir, load_names, require_pins
from flexsfc.cli.flows_render import Recreated, to_json, to_text
from flexsfc.dataplane.api import DataplaneError
from flexsfc.dataplane.events import EventStream


@click.command("flows")
@click.option("--follow", "-f", is_flag=True, help="Print events as they happen until Ctrl-C.")
@click.option(
    "--count", "-n", default=100, show_default=True, help="Without --follow: stop after the next N events."
)
@click.option(
    "--last",
    type=click.IntRange(min=1),
    default=None,
    help="Print the last N matching events of the flow history (`flexsfc up --flow-history`, or the "
    "agent's with --agent-socket) instead of new ones.",
)
@click.option(
    "--agent-socket",
    default=None,
    help="With --last: the node agent's flow history socket (`flexsfc agent --local --flow-history`).",
)
@click.option("--duration", default=10.0, show_default=True, help="Without --follow: stop after N seconds.")
@click.option(
    "--kind", "kinds", multiple=True, type=click.Choice(KIND_CHOICES), help="Event kinds (repeatable)."
)
@click.option("--xc", help="A cross-connection (namespace/name or name).")
@click.option("--chain", help="A chain (names from the local runtime).")
@click.option("--nf", help="A network function: events involving one of its replicas.")
@click.option("--pod", help="A replica (pod name): events involving it.")
@flow_filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--drop-budget", type=int, default=None, help="Drop events per CPU per second while attached.")
@click.option(
    "--pin-dir", default=None, help="The data plane's bpffs directory (default: the local runtime's)."
)
@click.option("--state-dir", envvar="FLEXSFC_LOCAL_DIR", default=None, help="The local runtime (for names).")
def flows(
    follow: bool, count: int, duration: float, kinds: tuple[str, ...], xc: str | None, chain: str | None,
    nf: str | None, pod: str | None, flow: str | None, proto: str | None, src: str | None, dst: str | None,
    port: int | None, as_json: bool, drop_budget: int | None, pin_dir: str | None, state_dir: str | None,
    last: int | None, agent_socket: str | None,
) -> None:  # fmt: skip
    """Flow events of the data plane: new flows and their replicas, moves, collisions, drops."""
    selector = EventFilter(kinds_of(kinds), xc, chain, nf, pod, FlowFilter.build(flow, proto, src, dst, port))
    if agent_socket and last is None:
        raise click.UsageError(
            "--agent-socket serves the agent's flow history: give --last N "
            "(new events: --pin-dir on the node)"
        )
    if last is not None:
        if follow:
            raise click.UsageError("--last prints the history, --follow new events: give one of them")
        show_history(last, selector, as_json, agent_socket, pin_dir, state_dir)
        return
    pin_dir = require_pins(pin_dir or default_pin_dir(state_dir))
    try:
        names = load_names(pin_dir, state_dir)
        stream = EventStream(pin_dir, drop_budget=drop_budget)
    except (DataplaneError, OSError) as exc:
        raise click.ClickException(f"{pin_dir}: {exc}") from None
    recreated = Recreated()
    shown, deadline = 0, time.monotonic() + duration
    names_at = time.monotonic()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    previous_handler = signal.signal(signal.SIGTERM, _stop)
    try:
        if not as_json:
            click.echo(f"# flow events of {pin_dir} ({stream.readers} reader(s) attached)", err=True)
        while not stop and (follow or (shown < count and time.monotonic() < deadline)):
            for record in stream.poll(0.2):
                if time.monotonic() - names_at > 2 and any(i not in names.ports for i in ifindexes(record)):
                    with contextlib.suppress(Exception):  # a new replica: read the names again
                        names, names_at = load_names(pin_dir, state_dir), time.monotonic()
                previous = recreated.check(record)
                if not selector.matches(record, names):
                    continue
                line = (
                    json.dumps(to_json(record, names, previous))
                    if as_json
                    else to_text(record, names, previous)
                )
                click.echo(line)
                shown += 1
                if not follow and shown >= count:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        stream.close()
