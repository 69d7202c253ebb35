"""CNI CHECK and STATUS: an attachment's links and addresses as ADD left them (CHECK), the plugin's
readiness on this node (STATUS)."""

import ipaddress
import os

from flexsfc.cni import errors, ipam, state
from flexsfc.cni.config import Environment, NetConf, version_tuple
from flexsfc.cni.errors import CniError
from flexsfc.cni.links import LinkError, Netlink
from flexsfc.cni.verb_del import made_for
from flexsfc.cni.verbs import open_netlink, require_1_1
from flexsfc.model.mac import derive_mac
from flexsfc.model.records import AttachmentRecord


def check(env: Environment, conf: NetConf) -> None:
    if version_tuple(conf.cni_version) < (0, 4, 0):
        raise CniError(
            errors.INCOMPATIBLE_VERSION,
            f"CHECK is not defined for cniVersion {conf.cni_version}",
            "use cniVersion 0.4.0 or later",
        )
    if conf.prev_result is None:
        raise CniError(
            errors.INVALID_CONFIG,
            "invalid network configuration: field 'prevResult' is required for CHECK",
            "pass the result of ADD as prevResult",
        )
    record = state.record_for(env.container_id, env.ifname, conf.state_dir)
    if record is None:
        raise _check_failed(f"no attachment recorded for container {env.container_id} interface {env.ifname}")
    try:
        with open_netlink(None) as host_nl:
            _check_links(env, conf, record, host_nl)
    except LinkError as exc:
        raise CniError(errors.LINK_FAILURE, f"cannot inspect {env.ifname}", str(exc)) from None
    if conf.ipam:
        ipam.run("CHECK", conf, env)


def _check_links(env: Environment, conf: NetConf, record: AttachmentRecord, host_nl: Netlink) -> None:
    if not os.path.exists(env.netns):
        raise _check_failed(f"network namespace {env.netns} (CNI_NETNS) does not exist")
    with open_netlink(env.netns) as pod_nl:
        pod = pod_nl.link_by_name(env.ifname)
        if pod is None:
            raise _check_failed(f"interface {env.ifname} is missing in {env.netns}")
        if pod.kind != "veth":
            raise _check_failed(f"interface {env.ifname} is a {pod.kind}, expected veth")
        expected_mac = derive_mac(conf.mac_generation_string, env.ifname)
        if pod.mac != expected_mac:
            raise _check_failed(f"interface {env.ifname} has MAC {pod.mac}, expected {expected_mac}")
        if conf.mtu is not None and pod.mtu != conf.mtu:
            raise _check_failed(f"interface {env.ifname} has MTU {pod.mtu}, expected {conf.mtu}")
        if not pod.up:
            raise _check_failed(f"interface {env.ifname} is down")
        present = {str(ipaddress.ip_interface(a)) for a in pod_nl.addresses(pod.index)}
        for address in _expected_addresses(env, conf, record):
            if address not in present:
                raise _check_failed(f"interface {env.ifname} lacks address {address}")
        routes = {r.dst for r in pod_nl.routes(pod.index)}
        for dst, _gateway in record.extra.get("routes", []):
            if dst not in routes:
                raise _check_failed(f"route to {dst} via {env.ifname} is missing")
    host = host_nl.link_by_index(record.host_ifindex)
    if host is None or host.name != record.host_ifname:
        raise _check_failed(f"host end {record.host_ifname} (index {record.host_ifindex}) is missing")
    if not made_for(host, env.container_id, env.ifname):
        raise _check_failed(f"host end {host.name} lacks flexsfc-cni's mark (alias {host.alias!r})")
    if host.peer_index != pod.index or pod.peer_index != host.index:
        raise _check_failed(f"host end {host.name} is not the peer of {env.ifname}")
    if not host.up:
        raise _check_failed(f"host end {host.name} is down")


def _expected_addresses(env: Environment, conf: NetConf, record: AttachmentRecord) -> list[str]:
    """Addresses prevResult gives our interface; the record's when prevResult names none."""
    prev = conf.prev_result or {}
    interfaces = prev.get("interfaces") or []
    ours = {
        i
        for i, iface in enumerate(interfaces)
        if isinstance(iface, dict) and iface.get("name") == env.ifname and iface.get("sandbox")
    }
    from_prev = [
        str(ipaddress.ip_interface(ip["address"]))
        for ip in prev.get("ips") or []
        if isinstance(ip, dict) and ip.get("interface") in ours and "address" in ip
    ]
    return from_prev or list(record.ips)


def _check_failed(message: str) -> CniError:
    return CniError(errors.CHECK_FAILED, message)


def status(env: Environment, conf: NetConf) -> None:
    """Ready when the state directory is usable and the IPAM plugin is installed (code 50 otherwise)."""
    require_1_1(conf, "STATUS")
    try:
        os.makedirs(conf.state_dir, mode=0o700, exist_ok=True)
        writable = os.access(conf.state_dir, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise CniError(
            errors.PLUGIN_NOT_AVAILABLE,
            f"state directory {conf.state_dir} (node-level stateDir) is not writable",
            "make it writable by the plugin (root) or set the node's stateDir to a writable directory "
            "(docs/cni.md, node-level configuration)",
        )
    if conf.ipam:
        try:
            ipam.find_plugin(conf.ipam["type"], ipam.plugin_path(env.cni_path))
        except CniError as exc:
            raise CniError(errors.PLUGIN_NOT_AVAILABLE, exc.msg, exc.details) from None
