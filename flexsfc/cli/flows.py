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
else from the data plane's port records (replica identities) and ifindexes.
"""

import contextlib
import datetime
import json
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from flexsfc.agent.flow_history import HistoryReply, HistoryUnavailable, PortNames, fetch
from flexsfc.dataplane import maps
from flexsfc.dataplane.api import DataplaneError
from flexsfc.dataplane.events import EventStream, Flow, FlowEventRecord
from flexsfc.model.constants import DEFAULT_PIN_DIR

KIND_CHOICES = ("created", "rehashed", "followed", "moved", "collision", "icmp-error", "drop")
_MOVES = {maps.FlowEventKind.REHASHED, maps.FlowEventKind.FOLLOWED}
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "arp": 0}
_RECREATED_MEMORY = 100_000  # flows remembered to tell a recreated session from a new one


# ---- names ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortName:
    ifindex: int
    pod: str = ""  # namespace/name, "" when unknown
    nf: str = ""
    ifname: str = ""
    xc: str = ""
    side: str = ""

    def label(self) -> str:
        if not self.ifindex:
            return "-"
        if self.pod:
            return (
                f"{self.pod.split('/', 1)[-1]}/{self.ifname}" if self.ifname else self.pod.split("/", 1)[-1]
            )
        return f"if{self.ifindex}"


@dataclass
class Names:
    """ifindex -> port, xc id -> name, xc name -> chain: from the data plane and the runtime."""

    ports: dict[int, PortName] = field(default_factory=dict)
    xcs: dict[int, str] = field(default_factory=dict)
    chains: dict[str, str] = field(default_factory=dict)  # xc name -> chain

    def port(self, ifindex: int) -> PortName:
        return self.ports.get(ifindex) or PortName(ifindex)

    def xc(self, xc_id: int) -> str:
        return self.xcs.get(xc_id, str(xc_id) if xc_id else "")


def load_names(pin_dir: str, state_dir: str | None) -> Names:
    """What the data plane at `pin_dir` and (when it runs) the local runtime know about its ports."""
    from flexsfc.dataplane.facade import Dataplane
    from flexsfc.model.types import Side

    names = Names()
    pods: dict[int, tuple[str, str, str]] = {}  # host ifindex -> (pod, nf, ifname)
    uids: dict[str, str] = {}
    with contextlib.suppress(Exception):  # no runtime here (a cluster node) or not running
        from flexsfc.local import control
        from flexsfc.local.config import RuntimeConfig

        status = control.status(RuntimeConfig.for_dir(state_dir), timeout=5)
        for p in status.pods:
            uids[p.uid] = p.key
            for record in p.records:
                pods[record.host_ifindex] = (p.key, p.nf, record.ifname)
        for xc in status.cross_connections:
            names.chains[f"{xc.namespace}/{xc.name}"] = xc.chain
            names.chains.setdefault(xc.name, xc.chain)
    with Dataplane(pin_dir) as dp:
        for name, xc_id in dp.list_xcs().items():
            names.xcs[xc_id] = name
            for side in (Side.A, Side.B):
                for replica in dp.replicas(name, side):
                    owner, nf, ifname = pods.get(replica.ifindex, (uids.get(replica.identity, ""), "", ""))
                    names.ports[replica.ifindex] = PortName(
                        replica.ifindex, owner or replica.identity, nf, ifname, name, side.value
                    )
    for ifindex, (owner, nf, ifname) in pods.items():
        names.ports.setdefault(ifindex, PortName(ifindex, owner, nf, ifname))
    return names


def names_of_history(data: PortNames) -> Names:
    """The names a history's reply carries: the data plane's records (replica identities, xc names)."""
    names = Names()
    for xc_id, name in data.get("xcs", {}).items():
        names.xcs[int(xc_id)] = str(name)
    for ifindex, port in data.get("ports", {}).items():
        names.ports[int(ifindex)] = PortName(
            int(ifindex),
            str(port.get("identity", "")),
            xc=str(port.get("xc", "")),
            side=str(port.get("side", "")),
        )
    return names


def default_pin_dir(state_dir: str | None) -> str:
    """The local runtime's pin directory when it has one, else the node agent's."""
    with contextlib.suppress(Exception):
        from flexsfc.local.config import RuntimeConfig

        pin_dir = RuntimeConfig.for_dir(state_dir).pin_dir
        if os.path.exists(os.path.join(pin_dir, maps.PROGRAM_NAME)):
            return pin_dir
    return DEFAULT_PIN_DIR


def require_pins(pin_dir: str) -> str:
    """`pin_dir` when a data plane is pinned there: a reader must never load one (Dataplane would)."""
    if not os.path.exists(os.path.join(pin_dir, maps.PROGRAM_NAME)):
        raise click.ClickException(
            f"no data plane pinned at {pin_dir}: give --pin-dir (the node agent's is {DEFAULT_PIN_DIR}) "
            "or --state-dir of a running local runtime"
        )
    return pin_dir


# ---- filters ----------------------------------------------------------------------------------------


def _endpoint(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        addr, _, port = text[1:].partition("]:")
        return addr, int(port or 0)
    if text.count(":") == 1:
        addr, port = text.split(":")
        return addr, int(port)
    return text, 0


def parse_flow(spec: str) -> tuple[int | None, tuple[str, int] | None, tuple[str, int] | None]:
    """'udp 10.0.0.1:5000 10.0.0.2:80' (proto optional, ports optional) -> (proto, a, b)."""
    parts = spec.split()
    proto = None
    if parts and parts[0].lower() in _PROTOS:
        proto = _PROTOS[parts.pop(0).lower()]
    if not 1 <= len(parts) <= 2:
        raise click.BadParameter(
            f"{spec!r}: expected '[proto] ADDR[:PORT] [ADDR[:PORT]]'", param_hint="--flow"
        )
    try:
        ends = [_endpoint(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{spec!r}: a port is not a number", param_hint="--flow") from None
    return proto, ends[0], ends[1] if len(ends) > 1 else None


@dataclass
class FlowFilter:
    """Matches a flow whatever its direction (session keys are normalized, not ordered by sender)."""

    proto: int | None = None
    ends: list[tuple[str, int]] = field(default_factory=list)  # (addr or "", port or 0)

    @classmethod
    def build(
        cls, flow: str | None, proto: str | None, src: str | None, dst: str | None, port: int | None
    ) -> "FlowFilter":
        result = cls()
        if flow:
            result.proto, a, b = parse_flow(flow)
            result.ends = [e for e in (a, b) if e]
        if proto:
            if proto.lower() not in _PROTOS:
                raise click.BadParameter(f"{proto!r}: one of {', '.join(_PROTOS)}", param_hint="--proto")
            result.proto = _PROTOS[proto.lower()]
        result.ends += [_endpoint(e) for e in (src, dst) if e]
        if port:
            result.ends.append(("", port))
        return result

    def __bool__(self) -> bool:
        return self.proto is not None or bool(self.ends)

    def matches(self, proto: int, family: int, a: tuple[str, int], b: tuple[str, int]) -> bool:
        if self.proto is not None:
            if self.proto == 0 and family != maps.FAMILY_ARP:
                return False
            if self.proto and (family == maps.FAMILY_ARP or proto != self.proto):
                return False
        return all(_end_matches(want, a) or _end_matches(want, b) for want in self.ends)

    def matches_flow(self, flow: Flow | None) -> bool:
        if flow is None:
            return not self
        return self.matches(flow.proto, flow.family, (flow.src, flow.sport), (flow.dst, flow.dport))


def _end_matches(want: tuple[str, int], have: tuple[str, int]) -> bool:
    addr, port = want
    return (not addr or addr == have[0]) and (not port or port == have[1])


@dataclass
class EventFilter:
    kinds: set[maps.FlowEventKind] = field(default_factory=set)
    xc: str | None = None
    chain: str | None = None
    nf: str | None = None
    pod: str | None = None
    flow: FlowFilter = field(default_factory=FlowFilter)

    def matches(self, record: FlowEventRecord, names: Names) -> bool:
        if self.kinds and record.kind not in self.kinds:
            return False
        xc = _xc_of(record, names)
        if self.xc and self.xc not in (xc, xc.split("/", 1)[-1]):
            return False
        if self.chain and names.chains.get(xc) != self.chain:
            return False
        ports = [names.port(i) for i in _ifindexes(record)]
        if self.nf and not any(p.nf == self.nf for p in ports):
            return False
        if self.pod and not any(self.pod in (p.pod, p.pod.split("/", 1)[-1]) for p in ports if p.pod):
            return False
        return self.flow.matches_flow(record.flow)


def _kinds(values: Iterable[str]) -> set[maps.FlowEventKind]:
    out: set[maps.FlowEventKind] = set()
    for value in values:
        if value == "moved":
            out |= _MOVES
        else:
            out.add(maps.FlowEventKind[value.upper().replace("-", "_")])
    return out


def _ifindexes(record: FlowEventRecord) -> list[int]:
    return [i for i in (record.ifindex, record.ifindex_a, record.ifindex_b, record.old_ifindex) if i]


def _xc_of(record: FlowEventRecord, names: Names) -> str:
    if record.xc_id:
        return names.xc(record.xc_id)
    return names.port(record.ifindex).xc  # drops: the ingress port's


# ---- output -----------------------------------------------------------------------------------------


class Recreated:
    """Tells a session created again (evicted or expired, then its flow came back) from a new one:
    the program cannot (the kernel does not report LRU evictions), a reader that saw the first
    creation can. Remembers the last _RECREATED_MEMORY flows."""

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[int, Flow], tuple[int, int]] = OrderedDict()

    def check(self, record: FlowEventRecord) -> tuple[int, int] | None:
        if record.flow is None or record.kind not in (maps.FlowEventKind.CREATED, *_MOVES):
            return None
        key = (record.xc_id, record.flow)
        before = self._seen.pop(key, None)
        self._seen[key] = (record.ifindex_a, record.ifindex_b)
        if len(self._seen) > _RECREATED_MEMORY:
            self._seen.popitem(last=False)
        return before if record.kind == maps.FlowEventKind.CREATED else None


def to_json(record: FlowEventRecord, names: Names, previous: tuple[int, int] | None) -> dict[str, Any]:
    def port(ifindex: int) -> dict[str, Any] | None:
        if not ifindex:
            return None
        p = names.port(ifindex)
        return {"ifindex": ifindex, "pod": p.pod or None, "nf": p.nf or None, "interface": p.ifname or None}

    xc = _xc_of(record, names)
    out: dict[str, Any] = {
        "time": datetime.datetime.fromtimestamp(record.time, datetime.UTC).isoformat(timespec="microseconds"),
        "kind": record.kind_name,
        "reason": record.reason,
        "xc": xc or None,
        "chain": names.chains.get(xc),
        "flow": None,
        "side": "AB"[record.side & 1],
        "ingress": port(record.ifindex),
        "a": port(record.ifindex_a),
        "b": port(record.ifindex_b),
    }
    if record.flow is not None:
        f = record.flow
        out["flow"] = {"proto": f.proto_name, "src": f.src, "sport": f.sport, "dst": f.dst, "dport": f.dport}
    if record.kind in (*_MOVES, maps.FlowEventKind.COLLISION):
        out["movedSide"] = "AB"[record.moved_side & 1]
        out["old"] = port(record.old_ifindex)
    if previous is not None:
        out["recreated"] = True
        out["previous"] = {"a": port(previous[0]), "b": port(previous[1])}
    if record.kind == maps.FlowEventKind.DROP:
        out["packetLength"] = record.pkt_len
        out["packet"] = record.packet.hex()
    return out


def to_text(record: FlowEventRecord, names: Names, previous: tuple[int, int] | None) -> str:
    stamp = datetime.datetime.fromtimestamp(record.time).strftime("%H:%M:%S.%f")[:-3]
    xc = _xc_of(record, names) or "-"
    flow = str(record.flow) if record.flow else "-"
    a, b = names.port(record.ifindex_a).label(), names.port(record.ifindex_b).label()
    kind = record.kind
    if kind == maps.FlowEventKind.CREATED:
        what = f"A {a} <-> B {b}"
        if previous is not None:
            before = f"A {names.port(previous[0]).label()} <-> B {names.port(previous[1]).label()}"
            what += (
                f"  (recreated: was {before})"
                if previous != (record.ifindex_a, record.ifindex_b)
                else ("  (recreated, same replicas)")
            )
    elif kind in _MOVES:
        side = "AB"[record.moved_side & 1]
        new = b if side == "B" else a
        what = f"{side} {names.port(record.old_ifindex).label()} -> {new} ({record.reason})"
    elif kind == maps.FlowEventKind.COLLISION:
        side = "AB"[record.moved_side & 1]
        second, first = names.port(record.ifindex).label(), names.port(record.old_ifindex).label()
        what = f"{side} {second} sent a flow of {first} (session kept)"
    elif kind == maps.FlowEventKind.ICMP_ERROR:
        what = f"from {names.port(record.ifindex).label()} to {b if record.side == 0 else a}"
    else:
        what = f"{record.reason} at {names.port(record.ifindex).label()} ({record.pkt_len} bytes)"
    return f"{stamp}  {record.kind_name:<10} {xc:<28} {flow:<44} {what}"


# ---- the command -----------------------------------------------------------------------------------


def flow_filter_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--flow", help="A 5-tuple, e.g. 'udp 10.0.0.1:5000 10.0.0.2:80' (either direction)."
            ),
            click.option("--proto", help="tcp, udp, icmp, icmpv6, sctp or arp."),
            click.option("--src", help="An endpoint ADDR[:PORT] (either direction)."),
            click.option("--dst", help="Another endpoint ADDR[:PORT]."),
            click.option("--port", type=int, help="A port on either end."),
        ]
    ):
        fn = option(fn)
    return fn


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
    selector = EventFilter(_kinds(kinds), xc, chain, nf, pod, FlowFilter.build(flow, proto, src, dst, port))
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
                if time.monotonic() - names_at > 2 and any(i not in names.ports for i in _ifindexes(record)):
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
