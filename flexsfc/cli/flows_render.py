"""How `flexsfc flows` prints a flow event: one text line or one JSON object, with the pods on
both ends and, for a session created again, the replicas it had before (`Recreated`).
"""

import datetime
from collections import OrderedDict
from typing import Any

from flexsfc.cli.flows_filter import MOVES, xc_of
from flexsfc.cli.flows_names import Names
from flexsfc.dataplane import maps
from flexsfc.dataplane.events import Flow, FlowEventRecord

_RECREATED_MEMORY = 100_000  # flows remembered to tell a recreated session from a new one


class Recreated:
    """Tells a session created again (evicted or expired, then its flow came back) from a new one:
    the program cannot (the kernel does not report LRU evictions), a reader that saw the first
    creation can. Remembers the last _RECREATED_MEMORY flows."""

    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[int, Flow], tuple[int, int]] = OrderedDict()

    def check(self, record: FlowEventRecord) -> tuple[int, int] | None:
        if record.flow is None or record.kind not in (maps.FlowEventKind.CREATED, *MOVES):
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

    xc = xc_of(record, names)
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
    if record.kind in (*MOVES, maps.FlowEventKind.COLLISION):
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
    xc = xc_of(record, names) or "-"
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
    elif kind in MOVES:
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
