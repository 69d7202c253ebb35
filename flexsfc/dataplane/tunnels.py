"""Replicas on other nodes: the tunnel maps of a data plane (bpf/lib/tunnel.h, docs/multinode.md).

Every node derives the same numbers from what every node knows, the cross-connection's name, the
side and the replica's identity (its pod UID), so nodes never exchange them:
- the VNI (24 bits) under which a port is reached from other nodes (`tunnel_targets` on its node);
- the sender id (16 bits, the VXLAN group-policy field) under which a receiving node finds its own
  reference to the port that sent (`tunnel_senders`, keyed by the sending node's address too);
- the key a remote port has in this node's port records (bit 31 set: never a real ifindex).
Two ports of one node with one VNI, or two remote ports of one (node, xc, side) with one sender id,
would be ambiguous: the second gets no entry, and the collision is reported (`conflicts`).
"""

import dataclasses
import hashlib
import ipaddress
import logging
from collections.abc import Mapping

from flexsfc.dataplane import libbpf, maps, tcfilter
from flexsfc.dataplane.api import ReplicaPort
from flexsfc.dataplane.pins import TC_HANDLE, TC_PRIORITY, Pins

log = logging.getLogger(__name__)

_VNI_SPACE = (1 << 24) - 1  # VNIs 1..2^24-1: 0 is never a port's


def _digest(xc: str, side: int, identity: str) -> bytes:
    return hashlib.blake2b(f"{xc}\0{'AB'[side]}\0{identity}".encode(), digest_size=12).digest()


def tunnel_vni(xc: str, side: int, identity: str) -> int:
    return int.from_bytes(_digest(xc, side, identity)[0:4], "big") % _VNI_SPACE + 1


def sender_id(xc: str, side: int, identity: str) -> int:
    return int.from_bytes(_digest(xc, side, identity)[4:6], "big")


def remote_key(xc: str, side: int, identity: str) -> int:
    """The key of a remote port in this node's port records."""
    return maps.REMOTE_PORT_BIT | (int.from_bytes(_digest(xc, side, identity)[6:10], "big") & 0x7FFFFFFF)


def is_remote_key(ifindex: int) -> bool:
    return bool(ifindex & maps.REMOTE_PORT_BIT)


def node_address(address: str, field: str) -> int:
    """An IPv4 node address as the program compares it (host order); a clear error otherwise."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{field} {address!r}: not an IP address") from None
    if parsed.version != 4:
        raise ValueError(f"{field} {address!r}: the tunnel underlay is IPv4; give the node's IPv4 address")
    if parsed.is_unspecified or parsed.is_multicast:
        raise ValueError(f"{field} {address!r}: not a unicast address")
    return int(parsed)


def keyed_replica(xc: str, side: int, replica: ReplicaPort, field: str) -> ReplicaPort:
    """A replica as the port table takes it: a remote one with its port key (given 0 or that key)."""
    if replica.remote is None:
        return replica
    node_address(replica.remote.address, f"{field}.remote.address")
    key = remote_key(xc, side, replica.identity)
    if replica.ifindex not in (0, key):
        raise ValueError(
            f"{field}.ifindex {replica.ifindex}: a remote replica has no local interface; give 0 (its key "
            f"here is {key})"
        )
    return dataclasses.replace(replica, ifindex=key)


def endpoint_address(entry: maps.TunnelPort) -> str:
    return str(ipaddress.IPv4Address(entry.node))


class TunnelTable:
    """The tunnel maps of one data plane and the in-memory view of what they hold."""

    def __init__(self, pins: Pins) -> None:
        self._pins = pins
        self.conflicts: list[str] = []
        self.refresh()

    def refresh(self) -> None:
        device = maps.U32()
        libbpf.map_lookup(self._pins.fd("tunnel_device"), maps.U32(0), device)
        self.device = int(device.value)
        self._targets = {
            key.value: self._u32("tunnel_targets", key)
            for key in libbpf.map_keys(self._pins.fd("tunnel_targets"), maps.U32)
        }
        self._nodes = {key.value for key in libbpf.map_keys(self._pins.fd("tunnel_nodes"), maps.U32)}

    def _u32(self, name: str, key: maps.U32) -> int:
        value = maps.U32()
        libbpf.map_lookup(self._pins.fd(name), key, value)
        return int(value.value)

    # ---- the device ---------------------------------------------------------------------------------

    def attach(self, ifindex: int, redirect_mode: int) -> None:
        """Our filter at ingress of the VXLAN device `ifindex` (in this thread's netns), then the
        device in the map (remote ports' entries name it)."""
        tag = maps.TAG_TUNNEL | (maps.TAG_PLAIN_REDIRECT if redirect_mode == maps.MODE_REDIRECT else 0)
        prog = self._pins.fd(maps.TUNNEL_PROGRAM_NAME)
        tcfilter.attach_ingress(
            ifindex,
            prog,
            handle=TC_HANDLE,
            priority=TC_PRIORITY,
            tag=tag,
            name=maps.TUNNEL_PROGRAM_NAME,
            prog_id=libbpf.prog_id(prog),
        )
        if ifindex != self.device:
            self._set_device(ifindex)

    def detach(self) -> None:
        if self.device:
            libbpf.tc_detach_ingress(self.device, TC_HANDLE, TC_PRIORITY)
            self._set_device(0)

    def _set_device(self, ifindex: int) -> None:
        libbpf.map_update(self._pins.fd("tunnel_device"), maps.U32(0), maps.U32(ifindex))
        self.device = ifindex
        fd = self._pins.fd("tunnel_ports")
        for slot in range(maps.MAX_PORTS):
            entry = maps.TunnelPort()
            if libbpf.map_lookup(fd, maps.U32(slot), entry) and entry.node:
                entry.device = ifindex
                libbpf.map_update(fd, maps.U32(slot), entry)

    # ---- nodes --------------------------------------------------------------------------------------

    def set_nodes(self, nodes: Mapping[str, str]) -> None:
        """Only these nodes' addresses may send tunnel packets; a duplicate address is an error."""
        wanted: dict[int, str] = {}
        for name, address in sorted(nodes.items()):
            value = node_address(address, f"nodes[{name!r}]")
            if value in wanted:
                raise ValueError(
                    f"nodes[{name!r}] {address}: also the address of node {wanted[value]!r}; every node "
                    "needs an address of its own"
                )
            wanted[value] = name
        fd = self._pins.fd("tunnel_nodes")
        for value in set(wanted) - self._nodes:
            libbpf.map_update(fd, maps.U32(value), maps.U32(1))
        for value in self._nodes - set(wanted):
            libbpf.map_delete(fd, maps.U32(value))
        self._nodes = set(wanted)

    def nodes(self) -> set[str]:
        return {str(ipaddress.IPv4Address(value)) for value in self._nodes}

    # ---- ports --------------------------------------------------------------------------------------

    # A port's entries are written before its slot names it (PortTable.add's `prepare`), and an
    # update overwrites them in place before dropping what no longer applies: a packet whose session
    # still names the port (a replica removed and added back takes the same key and often the same
    # slot) never finds the slot live and its tunnel entry missing.

    def add_local(self, slot: int, xc: str, side: int, identity: str) -> None:
        """A local port: reachable from other nodes under its VNI, known to them by its sender id."""
        vni = tunnel_vni(xc, side, identity)
        entry = maps.TunnelPort(vni=vni, sender=sender_id(xc, side, identity))
        old = self._write_entry(slot, entry)
        if old.vni and old.vni != vni and self._targets.get(old.vni) == slot:
            libbpf.map_delete(self._pins.fd("tunnel_targets"), maps.U32(old.vni))
            del self._targets[old.vni]
        holder = self._targets.get(vni)
        if holder is not None and holder != slot:
            self._conflict(f"{xc}/{'AB'[side]} {identity}: VNI {vni} already names the port in slot {holder}")
            return
        libbpf.map_update(self._pins.fd("tunnel_targets"), maps.U32(vni), maps.U32(slot))
        self._targets[vni] = slot

    def add_remote(self, slot: int, xc_id: int, xc: str, side: int, identity: str, address: str) -> None:
        node = node_address(address, "remote.address")
        sender = sender_id(xc, side, identity)
        entry = maps.TunnelPort(
            node=node, vni=tunnel_vni(xc, side, identity), device=self.device, sender=sender
        )
        old = self._write_entry(slot, entry)
        key = maps.TunnelSenderKey(node=node, xc=xc_id, sender=sender, side=side)
        fd = self._pins.fd("tunnel_senders")
        holder = maps.U32()
        if libbpf.map_lookup(fd, key, holder) and holder.value != slot:
            self._conflict(
                f"{xc}/{'AB'[side]} {identity}: sender id {sender} of node {address} already names slot "
                f"{holder.value}; its packets arrive without a session"
            )
        else:
            libbpf.map_update(fd, key, maps.U32(slot))
        if old.node and (old.node, old.sender) != (node, sender):  # moved to another address
            self._forget_sender(old, slot, xc_id, side)

    def _write_entry(self, slot: int, entry: maps.TunnelPort) -> maps.TunnelPort:
        """Write the slot's entry; returns the one it replaced."""
        fd = self._pins.fd("tunnel_ports")
        old = maps.TunnelPort()
        libbpf.map_lookup(fd, maps.U32(slot), old)
        libbpf.map_update(fd, maps.U32(slot), entry)
        return old

    def _forget_sender(self, entry: maps.TunnelPort, slot: int, xc_id: int, side: int) -> None:
        key = maps.TunnelSenderKey(node=entry.node, xc=xc_id, sender=entry.sender, side=side)
        holder = maps.U32()
        senders = self._pins.fd("tunnel_senders")
        if libbpf.map_lookup(senders, key, holder) and holder.value == slot:
            libbpf.map_delete(senders, key)

    def remove(self, slot: int, xc_id: int, side: int) -> None:
        """Forget the tunnel entries of the port in `slot` (its slot is cleared already)."""
        fd = self._pins.fd("tunnel_ports")
        entry = maps.TunnelPort()
        if not libbpf.map_lookup(fd, maps.U32(slot), entry):
            return
        if entry.node:
            self._forget_sender(entry, slot, xc_id, side)
        elif entry.vni and self._targets.get(entry.vni) == slot:
            libbpf.map_delete(self._pins.fd("tunnel_targets"), maps.U32(entry.vni))
            del self._targets[entry.vni]
        libbpf.map_update(fd, maps.U32(slot), maps.TunnelPort())

    def endpoint(self, slot: int) -> maps.TunnelPort:
        entry = maps.TunnelPort()
        libbpf.map_lookup(self._pins.fd("tunnel_ports"), maps.U32(slot), entry)
        return entry

    def _conflict(self, message: str) -> None:
        log.error("tunnel id collision: %s", message)
        if message not in self.conflicts:
            self.conflicts.append(message)
