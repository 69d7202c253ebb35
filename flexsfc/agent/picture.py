"""The cluster picture a front end pushes to a node agent that has no API server to watch.

The local runtime's simulated nodes (`flexsfc up --nodes N`) each run `flexsfc agent --local --node
NAME --control PATH`; the front end pushes the whole picture on every change (level-triggered, like
the reconciler): this node's name, every node's underlay address, the cross-connections with their
chains' settings and every NF replica of the cluster with the node it runs on. The agent adds the
interface records of its own replicas from its CNI state directory (they never travel: the node's
records are the node's) and reconciles with a `Topology`.

Wire form (JSON object, version 1):

    {"version": 1, "node": "n1", "nodes": {"n1": "10.0.0.1", ...},
     "crossConnections": [{"name", "chain", "namespace", "sideA": SIDE, "sideB": SIDE}],
     "chains": [{"namespace", "name", "maglevTableSize", "sessionTimeouts": {"tcp", "udp", "icmp", "other"}}],
     "replicas": [{"uid", "namespace", "pod", "nf", "phase", "node"}]}
    SIDE = {"nf", "interface", "network", "mode": "L2"|"L3", "mac", "addresses": ["10.0.0.1/24", ...]}

Bad input raises PictureError naming the field (e.g. `replicas[2].phase`), never a KeyError.
"""

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flexsfc.agent.types import ChainKey, NfReplica, ReplicaPhase, Topology
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import ChainSettings, CrossConnectionSpec, Mode, SessionTimeouts, XcSide

PICTURE_VERSION = 1


class PictureError(ValueError):
    """A pushed picture the agent refuses; the message names the field."""


@dataclass(frozen=True)
class ReplicaEntry:
    """One NF replica of the cluster as the front end sees it (no interfaces: those are node-local)."""

    uid: str
    namespace: str
    pod: str
    nf: str
    phase: ReplicaPhase
    node: str

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "namespace": self.namespace,
            "pod": self.pod,
            "nf": self.nf,
            "phase": self.phase.value,
            "node": self.node,
        }


@dataclass(frozen=True)
class Picture:
    node: str
    nodes: Mapping[str, str]  # node name -> underlay IPv4 address
    cross_connections: tuple[CrossConnectionSpec, ...] = ()
    chain_settings: Mapping[ChainKey, ChainSettings] = field(default_factory=dict)
    replicas: tuple[ReplicaEntry, ...] = ()

    def topology(self, tunnel_device: str | None) -> Topology:
        return Topology(node=self.node, nodes=dict(self.nodes), tunnel_device=tunnel_device)

    def nf_replicas(self, records_of: Callable[[str], Iterable[AttachmentRecord]]) -> list[NfReplica]:
        """The reconciler's replicas: local ones with their interface records (`records_of(uid)`,
        sorted by interface name), remote ones with none (the reconciler makes them tunnel targets)."""
        replicas = []
        for entry in self.replicas:
            local = entry.node == self.node
            interfaces = tuple(sorted(records_of(entry.uid), key=lambda r: r.ifname)) if local else ()
            replicas.append(
                NfReplica(
                    uid=entry.uid,
                    namespace=entry.namespace,
                    pod_name=entry.pod,
                    nf=entry.nf,
                    phase=entry.phase,
                    interfaces=interfaces,
                    node=entry.node,
                )
            )
        return replicas

    def for_node(self, node: str) -> "Picture":
        """The same picture as `node` receives it."""
        return Picture(node, self.nodes, self.cross_connections, self.chain_settings, self.replicas)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": PICTURE_VERSION,
            "node": self.node,
            "nodes": dict(self.nodes),
            "crossConnections": [_xc_to_json(xc) for xc in self.cross_connections],
            "chains": [
                _chain_to_json(namespace, name, settings)
                for (namespace, name), settings in sorted(self.chain_settings.items())
            ],
            "replicas": [entry.to_json() for entry in self.replicas],
        }


# -- encoding ------------------------------------------------------------------------------------


def _xc_to_json(xc: CrossConnectionSpec) -> dict[str, Any]:
    return {
        "name": xc.name,
        "chain": xc.chain,
        "namespace": xc.namespace,
        "sideA": xc.side_a.to_json(),
        "sideB": xc.side_b.to_json(),
    }


def _chain_to_json(namespace: str, name: str, settings: ChainSettings) -> dict[str, Any]:
    t = settings.session_timeouts
    return {
        "namespace": namespace,
        "name": name,
        "maglevTableSize": settings.maglev_table_size,
        "sessionTimeouts": {"tcp": t.tcp, "udp": t.udp, "icmp": t.icmp, "other": t.other},
    }


# -- decoding ------------------------------------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PictureError(f"{where}: must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise PictureError(f"{where}: must be a list, got {type(value).__name__}")
    return value


def _str(obj: Mapping[str, Any], key: str, where: str, *, empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or (not empty and not value):
        raise PictureError(f"{where}.{key}: must be a non-empty string, got {value!r}")
    return value


def _int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PictureError(f"{where}.{key}: must be a positive integer, got {value!r}")
    return value


def _side(raw: Any, where: str) -> XcSide:
    obj = _obj(raw, where)
    mode_raw = _str(obj, "mode", where)
    try:
        mode = Mode(mode_raw)
    except ValueError:
        raise PictureError(f"{where}.mode: {mode_raw!r} is not L2 or L3") from None
    addresses = []
    for i, address in enumerate(_list(obj.get("addresses", []), f"{where}.addresses")):
        try:
            if not isinstance(address, str) or "/" not in address:
                raise ValueError(address)
            addresses.append(ipaddress.ip_interface(address))
        except ValueError:
            raise PictureError(
                f"{where}.addresses[{i}]: {address!r} is not an address with prefix length"
            ) from None
    return XcSide(
        nf=_str(obj, "nf", where),
        interface=_str(obj, "interface", where),
        network=_str(obj, "network", where),
        mode=mode,
        mac=_str(obj, "mac", where),
        addresses=tuple(addresses),
    )


def _xc(raw: Any, where: str) -> CrossConnectionSpec:
    obj = _obj(raw, where)
    return CrossConnectionSpec(
        name=_str(obj, "name", where),
        chain=_str(obj, "chain", where),
        namespace=_str(obj, "namespace", where),
        side_a=_side(obj.get("sideA"), f"{where}.sideA"),
        side_b=_side(obj.get("sideB"), f"{where}.sideB"),
    )


def _chain(raw: Any, where: str) -> tuple[ChainKey, ChainSettings]:
    obj = _obj(raw, where)
    key = (_str(obj, "namespace", where), _str(obj, "name", where))
    defaults = ChainSettings()
    size = _int(obj, "maglevTableSize", where) if "maglevTableSize" in obj else defaults.maglev_table_size
    timeouts = defaults.session_timeouts
    if "sessionTimeouts" in obj:
        where_t = f"{where}.sessionTimeouts"
        t = _obj(obj["sessionTimeouts"], where_t)
        timeouts = SessionTimeouts(
            **{
                name: _int(t, name, where_t) if name in t else getattr(timeouts, name)
                for name in ("tcp", "udp", "icmp", "other")
            }
        )
    return key, ChainSettings(maglev_table_size=size, session_timeouts=timeouts)


def _replica(raw: Any, where: str, nodes: Mapping[str, str]) -> ReplicaEntry:
    obj = _obj(raw, where)
    phase_raw = _str(obj, "phase", where)
    try:
        phase = ReplicaPhase(phase_raw)
    except ValueError:
        allowed = ", ".join(p.value for p in ReplicaPhase)
        raise PictureError(f"{where}.phase: {phase_raw!r} is not one of {allowed}") from None
    node = _str(obj, "node", where)
    if node not in nodes:
        # Never guess where a replica is: a replica on an unknown node would be a black hole.
        raise PictureError(f"{where}.node: {node!r} is not in nodes ({', '.join(sorted(nodes)) or 'none'})")
    return ReplicaEntry(
        uid=_str(obj, "uid", where),
        namespace=_str(obj, "namespace", where),
        pod=_str(obj, "pod", where),
        nf=_str(obj, "nf", where),
        phase=phase,
        node=node,
    )


def parse_picture(raw: Any) -> Picture:
    """Validate a pushed picture (the decoded JSON); PictureError names the first bad field."""
    obj = _obj(raw, "picture")
    version = obj.get("version")
    if version != PICTURE_VERSION:
        raise PictureError(
            f"picture.version: {version!r} is not supported (this agent reads {PICTURE_VERSION})"
        )
    node = _str(obj, "node", "picture")
    nodes: dict[str, str] = {}
    for name, address in _obj(obj.get("nodes"), "picture.nodes").items():
        try:
            parsed = ipaddress.IPv4Address(address)
        except (ValueError, TypeError):
            raise PictureError(f"picture.nodes.{name}: {address!r} is not an IPv4 address") from None
        if str(parsed) in nodes.values():
            other = next(n for n, a in nodes.items() if a == str(parsed))
            raise PictureError(f"picture.nodes.{name}: address {parsed} is also node {other}'s")
        nodes[name] = str(parsed)
    if node not in nodes:
        raise PictureError(f"picture.node: {node!r} has no address in picture.nodes")
    xcs = tuple(
        _xc(x, f"picture.crossConnections[{i}]")
        for i, x in enumerate(_list(obj.get("crossConnections", []), "picture.crossConnections"))
    )
    chains = dict(
        _chain(c, f"picture.chains[{i}]")
        for i, c in enumerate(_list(obj.get("chains", []), "picture.chains"))
    )
    replicas = tuple(
        _replica(r, f"picture.replicas[{i}]", nodes)
        for i, r in enumerate(_list(obj.get("replicas", []), "picture.replicas"))
    )
    seen: set[str] = set()
    for i, entry in enumerate(replicas):
        if entry.uid in seen:
            raise PictureError(f"picture.replicas[{i}].uid: {entry.uid!r} is listed twice")
        seen.add(entry.uid)
    return Picture(node, nodes, xcs, chains, replicas)
