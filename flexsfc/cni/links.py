"""The rtnetlink operations flexsfc-cni needs: pyroute2's message classes on a plain netlink socket.

A CNI plugin is a fresh process per call, so start-up is part of every pod's creation. pyroute2's
``IPRoute`` pulls in asyncio and its whole RTNL machinery (80-140 ms to import here); its message
classes (``ifinfmsg``, ``ifaddrmsg``, ``rtmsg``) cost ~25 ms and do all the encoding and decoding.
The few request/acknowledge exchanges we make go through :class:`flexsfc.util.rtnl.RtnlSocket`.

One :class:`Netlink` per namespace: a netlink socket stays bound to the namespace it was created in,
so the pod-side socket is created under ``setns`` on this thread (no helper process).
"""

import contextlib
import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink import NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL
from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from flexsfc.util.netns import in_netns
from flexsfc.util.rtnl import RtnlError, RtnlSocket

IFF_UP = 0x1
IFA_F_NODAD = 0x2
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1

LinkError = RtnlError  # what the CNI commands catch; a module-level name so it is exported (mypy)
_GONE = (errno.ENODEV, errno.ENOENT)


@dataclass(frozen=True)
class LinkInfo:
    index: int
    name: str
    kind: str | None
    mac: str
    mtu: int
    up: bool
    peer_index: int | None  # IFLA_LINK: for a veth, the peer's index in the peer's namespace
    alias: str | None = None  # IFLA_IFALIAS: flexsfc's ownership mark on host ends (state.owner_alias)


@dataclass(frozen=True)
class RouteInfo:
    dst: str  # CIDR
    gateway: str | None


class Netlink(RtnlSocket):
    """The link, address and route requests of the plugin on an rtnetlink socket of one namespace."""

    _request = RtnlSocket.request

    # -- links ----------------------------------------------------------------------------------

    def _get_link(self, what: str, **selector: Any) -> LinkInfo | None:
        msg = ifinfmsg()
        if "index" in selector:
            msg["index"] = selector["index"]
        else:
            msg["attrs"] = [["IFLA_IFNAME", selector["name"]]]
        try:
            replies = self._request(what, msg, RTM_GETLINK)
        except LinkError as exc:
            if exc.errno in _GONE:
                return None
            raise
        return _link_info(replies[0]) if replies else None

    def link_by_name(self, name: str) -> LinkInfo | None:
        return self._get_link(f"get link {name}", name=name)

    def link_by_index(self, index: int) -> LinkInfo | None:
        return self._get_link(f"get link #{index}", index=index)

    def create_veth(
        self, host_name: str, pod_name: str, pod_netns_fd: int, mac: str, mtu: int | None
    ) -> None:
        """One RTM_NEWLINK: the host end here (down), the pod end directly in the pod's namespace.

        Creating the peer in its namespace costs ~1.4 ms; creating then moving it ~15 ms more. (The
        kernel refuses IFF_UP on a peer created in another namespace, so the pod end is set up after.)
        """
        peer: list[list[Any]] = [
            ["IFLA_IFNAME", pod_name],
            ["IFLA_NET_NS_FD", pod_netns_fd],
            ["IFLA_ADDRESS", mac],
        ]
        host: list[list[Any]] = [["IFLA_IFNAME", host_name]]
        if mtu is not None:
            peer.append(["IFLA_MTU", mtu])
            host.append(["IFLA_MTU", mtu])
        veth_data = {"attrs": [["VETH_INFO_PEER", {"attrs": peer}]]}
        host.append(["IFLA_LINKINFO", {"attrs": [["IFLA_INFO_KIND", "veth"], ["IFLA_INFO_DATA", veth_data]]}])
        msg = ifinfmsg()
        msg["attrs"] = host
        self._request(f"create veth {host_name} <-> {pod_name}", msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)

    def set_alias(self, index: int, alias: str) -> None:
        """Set IFLA_IFALIAS (the kernel ignores it in the RTM_NEWLINK that creates a link)."""
        msg = ifinfmsg()
        msg["index"] = index
        msg["attrs"] = [["IFLA_IFALIAS", alias]]
        self._request(f"set alias of link #{index}", msg, RTM_NEWLINK)

    def set_up(self, index: int) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        msg["flags"] = IFF_UP
        msg["change"] = IFF_UP
        self._request(f"set link #{index} up", msg, RTM_NEWLINK)

    def delete(self, index: int) -> bool:
        """Delete a link (a veth takes its peer along); False when it is already gone."""
        msg = ifinfmsg()
        msg["index"] = index
        try:
            self._request(f"delete link #{index}", msg, RTM_DELLINK)
        except LinkError as exc:
            if exc.errno in _GONE:
                return False
            raise
        return True

    # -- addresses and routes -------------------------------------------------------------------

    def add_address(self, index: int, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET if iface.version == 4 else socket.AF_INET6
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = index
        msg["attrs"] = [["IFA_ADDRESS", str(iface.ip)]]
        if iface.version == 4:
            msg["attrs"].append(["IFA_LOCAL", str(iface.ip)])
        else:
            # All replicas share the address: DAD would only delay it (or mark it duplicate).
            msg["flags"] = IFA_F_NODAD
        self._request(f"add address {cidr}", msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL)

    def addresses(self, index: int) -> list[str]:
        msg = ifaddrmsg()
        replies = self._request(f"list addresses of #{index}", msg, RTM_GETADDR, NLM_F_DUMP)
        return [f"{r.get_attr('IFA_ADDRESS')}/{r['prefixlen']}" for r in replies if r["index"] == index]

    def add_route(self, index: int, dst: str, gateway: str | None) -> None:
        network = ipaddress.ip_network(dst, strict=False)
        msg = rtmsg()
        msg["family"] = socket.AF_INET if network.version == 4 else socket.AF_INET6
        msg["dst_len"] = network.prefixlen
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = RTPROT_STATIC
        msg["scope"] = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        msg["type"] = RTN_UNICAST
        msg["attrs"] = [["RTA_OIF", index]]
        if network.prefixlen:
            msg["attrs"].append(["RTA_DST", str(network.network_address)])
        if gateway:
            msg["attrs"].append(["RTA_GATEWAY", gateway])
        what = f"add route {network} via {gateway or 'link'}"
        self._request(what, msg, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL)

    def routes(self, index: int) -> list[RouteInfo]:
        found = []
        for family in (socket.AF_INET, socket.AF_INET6):
            msg = rtmsg()
            msg["family"] = family
            for r in self._request(f"list routes of #{index}", msg, RTM_GETROUTE, NLM_F_DUMP):
                if r.get_attr("RTA_OIF") != index or r.get_attr("RTA_TABLE", r["table"]) != RT_TABLE_MAIN:
                    continue
                dst = r.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                found.append(RouteInfo(f"{dst}/{r['dst_len']}", r.get_attr("RTA_GATEWAY")))
        return found


def _link_info(msg: Any) -> LinkInfo:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    return LinkInfo(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        mac=msg.get_attr("IFLA_ADDRESS"),
        mtu=msg.get_attr("IFLA_MTU"),
        up=bool(msg["flags"] & IFF_UP),
        peer_index=msg.get_attr("IFLA_LINK"),
        alias=msg.get_attr("IFLA_IFALIAS"),
    )


# Host-end sysctls: the host end only feeds the cross-connection's TC program, which redirects every
# packet before the host stack sees it. Until that program is attached (or for what it passes up),
# the host must neither speak on this link nor route what arrives on it.
HOST_END_SYSCTLS = (
    ("ipv6", "disable_ipv6", "1"),  # no link-local address, DAD, router solicitations or MLD reports
    ("ipv4", "forwarding", "0"),  # never route pod traffic into the node's networks (nodes forward)
    ("ipv4", "arp_ignore", "8"),  # never answer ARP for the node's own addresses on this link
)


# Pod-end sysctls. Every replica carries the same addresses on purpose, so duplicate address
# detection would only delay them (an IPv6 link-local address stays tentative for about a second and
# neighbour solicitations wait for it). An L2 (bump-in-the-wire) interface has no addresses at all: it
# must not emit router solicitations, MLD reports or DAD probes of its own into the chain.
POD_END_SYSCTLS_L3 = (("ipv6", "accept_dad", "0"),)
POD_END_SYSCTLS_L2 = (("ipv6", "disable_ipv6", "1"),)


def apply_sysctls(ifname: str, sysctls: tuple[tuple[str, str, str], ...], netns: str | None = None) -> None:
    """Write per-interface sysctls, in `netns` when given (a family absent from the kernel is skipped).

    /proc/sys/net resolves to the network namespace of the thread that opens the file.
    """
    with in_netns(netns) if netns else contextlib.nullcontext():
        for family, key, value in sysctls:
            # FLEXSFC_PROCFS: the node agent's host procfs mount (its own /proc/sys is read-only).
            path = f"{os.environ.get('FLEXSFC_PROCFS') or '/proc'}/sys/net/{family}/conf/{ifname}/{key}"
            if os.path.exists(path):
                with open(path, "w", encoding="ascii") as handle:
                    handle.write(value)


def quiet_host_end(ifname: str) -> None:
    """Apply :data:`HOST_END_SYSCTLS` to the host end."""
    apply_sysctls(ifname, HOST_END_SYSCTLS)
