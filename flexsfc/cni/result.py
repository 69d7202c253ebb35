"""The ADD result in the format of the requested cniVersion, merged with a chained prevResult."""

import ipaddress
from typing import Any

from flexsfc.cni.config import version_tuple
from flexsfc.cni.ipam import IpamResult
from flexsfc.cni.links import LinkInfo


def build_add_result(
    cni_version: str,
    host: LinkInfo,
    pod: LinkInfo,
    sandbox: str,
    ipam: IpamResult | None,
    prev_result: dict[str, Any] | None,
) -> dict[str, Any]:
    """Interfaces: (prevResult's), our host end (no sandbox), our pod end (with sandbox).

    IPs point at the pod end by index; 0.3.x/0.4.0 results also carry each IP's "version".
    """
    prev = prev_result or {}
    interfaces = list(prev.get("interfaces") or [])
    interfaces.append({"name": host.name, "mac": host.mac})
    pod_entry: dict[str, Any] = {"name": pod.name, "mac": pod.mac, "sandbox": sandbox}
    if version_tuple(cni_version) >= (1, 1, 0):
        pod_entry["mtu"] = pod.mtu
    interfaces.append(pod_entry)
    pod_index = len(interfaces) - 1

    ips = list(prev.get("ips") or [])
    routes = list(prev.get("routes") or [])
    dns = dict(prev.get("dns") or {})
    if ipam is not None:
        for ip in ipam.ips:
            entry = {k: v for k, v in ip.items() if k not in ("version", "interface")}
            entry["interface"] = pod_index
            if version_tuple(cni_version) < (1, 0, 0):
                entry["version"] = str(ipaddress.ip_interface(ip["address"]).version)
            ips.append(entry)
        routes.extend(ipam.routes)
        dns = ipam.dns or dns
    result: dict[str, Any] = {"cniVersion": cni_version, "interfaces": interfaces, "ips": ips}
    if routes:
        result["routes"] = routes
    if dns:
        result["dns"] = dns
    return result


def route_plan(ipam: IpamResult) -> list[tuple[str, str | None]]:
    """(destination, gateway) per IPAM route; a route without "gw" uses its family's IP gateway.

    The same rule as the reference plugins (ipam.ConfigureIface); no gateway at all -> link route.
    """
    gateways: dict[int, str] = {}
    for ip in ipam.ips:
        if ip.get("gateway"):
            gateways.setdefault(ipaddress.ip_interface(ip["address"]).version, ip["gateway"])
    plan = []
    for route in ipam.routes:
        dst = str(ipaddress.ip_network(route["dst"], strict=False))
        gateway = route.get("gw") or gateways.get(ipaddress.ip_network(dst).version)
        plan.append((dst, gateway))
    return plan
