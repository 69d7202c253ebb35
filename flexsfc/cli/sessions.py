"""`flexsfc sessions`: the session table of a cross-connection: each flow, the replica it has on each
side (pod names when the local runtime is known) and how long it has been idle, filterable, with a
bounded output (`--limit`) and the total count.

Reads the pinned maps of the node's data plane directly, like `flexsfc flows` (root, on the node).
"""

import json
import time
from typing import Any

import click

from flexsfc.cli.flows_filter import FlowFilter, flow_filter_options
from flexsfc.cli.flows_names import Names, default_pin_dir, load_names, require_pins
from flexsfc.dataplane import maps
from flexsfc.dataplane.api import DataplaneError, SessionEntry
from flexsfc.dataplane.events import PROTO_NAMES

TICK_SECONDS = (1 << maps.SESSION_CLOCK_SHIFT) / 1e9
CLOCK_MONOTONIC_COARSE = 6


def _session_clock() -> int:
    return (time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE) >> maps.SESSION_CLOCK_SHIFT) & 0xFFFFFFFF


def _family(entry: SessionEntry) -> int:
    if entry.proto == 0 and ":" not in entry.addr_lo:
        return maps.FAMILY_ARP
    return maps.FAMILY_V6 if ":" in entry.addr_lo else maps.FAMILY_V4


def _proto(entry: SessionEntry) -> str:
    return "arp" if _family(entry) == maps.FAMILY_ARP else PROTO_NAMES.get(entry.proto, str(entry.proto))


def _endpoint(addr: str, port: int) -> str:
    host = f"[{addr}]" if ":" in addr and port else addr
    return f"{host}:{port}" if port else addr


def _idle(entry: SessionEntry, now: int) -> float:
    return max((now - entry.last_seen) & 0xFFFFFFFF, 0) * TICK_SECONDS


def _matches(entry: SessionEntry, flows: FlowFilter, pod: str | None, names: Names) -> bool:
    if flows and not flows.matches(
        entry.proto, _family(entry), (entry.addr_lo, entry.port_lo), (entry.addr_hi, entry.port_hi)
    ):
        return False
    if pod:
        pods = [names.port(i).pod for i in (entry.ifindex_a, entry.ifindex_b)]
        return any(pod in (p, p.split("/", 1)[-1]) for p in pods if p)
    return True


def to_json(entry: SessionEntry, names: Names, now: int) -> dict[str, Any]:
    def port(ifindex: int) -> dict[str, Any]:
        p = names.port(ifindex)
        return {"ifindex": ifindex, "pod": p.pod or None, "interface": p.ifname or None}

    return {
        "xc": entry.xc,
        "proto": _proto(entry),
        "lo": {"addr": entry.addr_lo, "port": entry.port_lo},
        "hi": {"addr": entry.addr_hi, "port": entry.port_hi},
        "a": port(entry.ifindex_a),
        "b": port(entry.ifindex_b),
        "confirmed": entry.confirmed,
        "idleSeconds": round(_idle(entry, now), 1),
    }


@click.command("sessions")
@click.argument("xc", required=False)
@click.option("--limit", default=100, show_default=True, help="Print at most this many sessions.")
@click.option("--pod", help="Only sessions with this replica (pod name) on either side.")
@click.option("--unconfirmed/--confirmed-only", default=True, help="Include flows not answered yet.")
@flow_filter_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, then a summary object.")
@click.option(
    "--pin-dir", default=None, help="The data plane's bpffs directory (default: the local runtime's)."
)
@click.option("--state-dir", envvar="FLEXSFC_LOCAL_DIR", default=None, help="The local runtime (for names).")
def sessions(
    xc: str | None, limit: int, pod: str | None, unconfirmed: bool, flow: str | None, proto: str | None,
    src: str | None, dst: str | None, port: int | None, as_json: bool, pin_dir: str | None,
    state_dir: str | None,
) -> None:  # fmt: skip
    """The session table of a cross-connection (all of them without XC): flow, replicas, idle time."""
    from flexsfc.dataplane.facade import Dataplane

    pin_dir = require_pins(pin_dir or default_pin_dir(state_dir))
    flows = FlowFilter.build(flow, proto, src, dst, port)
    names = load_names(pin_dir, state_dir)
    try:
        with Dataplane(pin_dir) as dp:
            known = dp.list_xcs()
            if xc is not None and xc not in known:
                matches = [name for name in known if name.split("/", 1)[-1] == xc]
                if len(matches) != 1:
                    raise click.ClickException(
                        f"cross-connection {xc!r}: not in the data plane "
                        f"(there: {', '.join(sorted(known)) or 'none'})"
                    )
                xc = matches[0]
            total = dp.session_count(xc)
            # Filters are applied to what is read: read the table (bounded by its capacity) when
            # there are any, else only what is printed.
            filtered = bool(flows or pod or not unconfirmed)
            scan = dp.session_capacity + dp.session_capacity_v6 + sum(dp.unconfirmed_capacity)
            entries = dp.sessions(xc, limit=scan if filtered else limit)
    except DataplaneError as exc:
        raise click.ClickException(str(exc)) from None
    now = _session_clock()
    selected = [e for e in entries if (unconfirmed or e.confirmed) and _matches(e, flows, pod, names)]
    shown = selected[:limit]
    if as_json:
        for entry in shown:
            click.echo(json.dumps(to_json(entry, names, now)))
        summary = {"shown": len(shown), "matched": len(selected) if filtered else None, "confirmed": total}
        click.echo(json.dumps({"summary": summary}))
        return
    click.echo(
        f"{'XC':<28} {'PROTO':<6} {'ENDPOINT':<24} {'ENDPOINT':<24} {'REPLICA A':<22} {'REPLICA B':<22} IDLE"
    )
    for entry in shown:
        a, b = names.port(entry.ifindex_a).label(), names.port(entry.ifindex_b).label()
        state = "" if entry.confirmed else " (unconfirmed)"
        click.echo(
            f"{entry.xc:<28} {_proto(entry):<6} {_endpoint(entry.addr_lo, entry.port_lo):<24} "
            f"{_endpoint(entry.addr_hi, entry.port_hi):<24} {a:<22} {b:<22} {_idle(entry, now):.0f}s{state}"
        )
    matched = f", {len(selected)} matched the filters" if filtered else ""
    click.echo(
        f"# {len(shown)} shown (--limit {limit}){matched}; {total} confirmed session(s) in {xc or 'all'}"
    )
