"""Which flow events `flexsfc flows` (and which sessions `flexsfc sessions`) show: by kind,
cross-connection, chain, NF, pod and flow (a 5-tuple or its parts, matched in either direction),
with the click options that build a flow filter.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import click

from flexsfc.cli.flows_names import Names
from flexsfc.dataplane import maps
from flexsfc.dataplane.events import Flow, FlowEventRecord

KIND_CHOICES = ("created", "rehashed", "followed", "moved", "collision", "icmp-error", "drop")
MOVES = {maps.FlowEventKind.REHASHED, maps.FlowEventKind.FOLLOWED}
_PROTOS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "sctp": 132, "arp": 0}


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
        xc = xc_of(record, names)
        if self.xc and self.xc not in (xc, xc.split("/", 1)[-1]):
            return False
        if self.chain and names.chains.get(xc) != self.chain:
            return False
        ports = [names.port(i) for i in ifindexes(record)]
        if self.nf and not any(p.nf == self.nf for p in ports):
            return False
        if self.pod and not any(self.pod in (p.pod, p.pod.split("/", 1)[-1]) for p in ports if p.pod):
            return False
        return self.flow.matches_flow(record.flow)


def kinds_of(values: Iterable[str]) -> set[maps.FlowEventKind]:
    out: set[maps.FlowEventKind] = set()
    for value in values:
        if value == "moved":
            out |= MOVES
        else:
            out.add(maps.FlowEventKind[value.upper().replace("-", "_")])
    return out


def ifindexes(record: FlowEventRecord) -> list[int]:
    return [i for i in (record.ifindex, record.ifindex_a, record.ifindex_b, record.old_ifindex) if i]


def xc_of(record: FlowEventRecord, names: Names) -> str:
    if record.xc_id:
        return names.xc(record.xc_id)
    return names.port(record.ifindex).xc  # drops: the ingress port's


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
