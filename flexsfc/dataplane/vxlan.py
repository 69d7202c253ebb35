"""The node's VXLAN device: where cross-connections hand packets for replicas on other nodes.

One device per node in external (collect_md) mode: the program sets each packet's destination node
and VNI itself (bpf_skb_set_tunnel_key), so one device serves every cross-connection and node. The
group-policy extension (`gbp`) carries 16 more bits, the sender's identity (docs/multinode.md).
`learning` is off: the device never builds a forwarding table from what it receives.
"""

import errno
import logging

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from flexsfc.model.constants import DEFAULT_TUNNEL_DEVICE, DEFAULT_TUNNEL_PORT, TUNNEL_OVERHEAD

log = logging.getLogger(__name__)


class TunnelDeviceError(RuntimeError):
    pass


def _matches(link: object, port: int) -> bool:
    info = link.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get_attr("IFLA_INFO_DATA")
    return bool(
        data is not None
        and data.get_attr("IFLA_VXLAN_COLLECT_METADATA")
        and data.get_attr("IFLA_VXLAN_PORT") == port
        and data.get_attr("IFLA_VXLAN_GBP") is not None
    )


def ensure_tunnel_device(
    name: str = DEFAULT_TUNNEL_DEVICE,
    *,
    port: int = DEFAULT_TUNNEL_PORT,
    mtu: int | None = None,
) -> int:
    """Create (or keep) the node's VXLAN device, up; returns its ifindex. A device of that name of
    another kind or configuration is an error naming it: it is never replaced (it may not be ours).
    `mtu`: the device's MTU (the underlay's minus TUNNEL_OVERHEAD by default, the kernel's choice)."""
    if not 1 <= port <= 65535:
        raise TunnelDeviceError(f"tunnel port {port}: must be 1..65535")
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            link = ipr.get_links(found[0])[0]
            if not _matches(link, port):
                raise TunnelDeviceError(
                    f"interface {name!r} exists and is not a VXLAN device in external gbp mode on UDP port "
                    f"{port}; remove it or choose another tunnel device name"
                )
            ifindex = int(found[0])
        else:
            try:
                ipr.link(
                    "add",
                    ifname=name,
                    kind="vxlan",
                    vxlan_collect_metadata=1,
                    vxlan_port=port,
                    vxlan_gbp=True,
                    vxlan_learning=0,
                )
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise TunnelDeviceError(
                        f"cannot create {name!r}: another external VXLAN device uses UDP port {port}; "
                        "set the tunnel port (agent --tunnel-port) to a free one"
                    ) from exc
                raise TunnelDeviceError(f"cannot create VXLAN device {name!r}: {exc}") from exc
            ifindex = int(ipr.link_lookup(ifname=name)[0])
            log.info("tunnel device %s (ifindex %d, UDP %d) created", name, ifindex, port)
        if mtu is not None:
            ipr.link("set", index=ifindex, mtu=mtu)
        ipr.link("set", index=ifindex, state="up")
        return ifindex


def remove_tunnel_device(name: str = DEFAULT_TUNNEL_DEVICE) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            ipr.link("del", index=found[0])


def nf_mtu(underlay_mtu: int) -> int:
    """The MTU NF interfaces can use when their packets may cross the tunnel."""
    return underlay_mtu - TUNNEL_OVERHEAD
