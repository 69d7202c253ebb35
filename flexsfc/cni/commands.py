"""The CNI verbs. Each takes the validated environment and configuration and returns the JSON
document to print (or None), raising CniError on failure."""

import contextlib
import errno
import hashlib
import ipaddress
import os
import secrets
import sys
import time
from collections.abc import Iterator
from typing import Any

from flexsfc.cni import errors, ipam, state
from flexsfc.cni.config import Environment, NetConf, version_tuple
from flexsfc.cni.errors import CniError
from flexsfc.cni.links import (
    POD_END_SYSCTLS_L2,
    POD_END_SYSCTLS_L3,
    LinkError,
    LinkInfo,
    Netlink,
    apply_sysctls,
    quiet_host_end,
)
from flexsfc.cni.result import build_add_result, route_plan
from flexsfc.model.constants import MAX_IFNAME_LEN
from flexsfc.model.mac import derive_mac
from flexsfc.model.records import AttachmentRecord

HOST_PREFIX = "fx"
_HOST_NAME_ATTEMPTS = 4


def host_name(container_id: str, ifname: str, entropy: str = "") -> str:
    """``fx`` + 10 hex digits of (container id, ifname) [+ 3 random hex digits after a collision]."""
    digest = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()
    name = f"{HOST_PREFIX}{digest[:10]}{entropy}"
    assert len(name) <= MAX_IFNAME_LEN
    return name


# ---------------------------------------------------------------------------------------------- ADD


def add(env: Environment, conf: NetConf) -> dict[str, Any]:
    mac = derive_mac(conf.mac_generation_string, env.ifname)
    netns_fd = _open_netns(env.netns)
    try:
        with state.locked(conf.state_dir, conf.lock_timeout_seconds):
            if state.record_for(env.container_id, env.ifname, conf.state_dir) is not None:
                raise CniError(
                    errors.INTERFACE_EXISTS,
                    f"container {env.container_id} already has attachment {env.ifname} on network "
                    f"{conf.name}",
                    "run DEL for it first",
                )
            with _netlink(env.netns) as pod_nl, _netlink(None) as host_nl:
                if pod_nl.link_by_name(env.ifname) is not None:
                    raise _interface_exists(env)
                ipam_result = ipam.run("ADD", conf, env) if conf.ipam else None
                host: LinkInfo | None = None
                try:
                    host = _create_veth(host_nl, pod_nl, env, netns_fd, mac, conf.mtu)
                    pod_sysctls = POD_END_SYSCTLS_L3 if conf.ipam else POD_END_SYSCTLS_L2
                    apply_sysctls(env.ifname, pod_sysctls, env.netns)
                    pod = _configure_pod_end(pod_nl, env.ifname, ipam_result)
                    quiet_host_end(host.name)
                    host_nl.set_up(host.index)
                    record = _record(env, conf, host, pod, ipam_result)
                    state.write_record(conf.state_dir, record)
                except BaseException:
                    _undo_add(host_nl, host, conf, env)
                    raise
    except LinkError as exc:
        raise CniError(errors.LINK_FAILURE, f"cannot set up {env.ifname}", str(exc)) from None
    finally:
        os.close(netns_fd)
    if conf.kubeconfig:
        _publish(conf, env)  # outside the lock: an API call must not hold up other ADDs
    return build_add_result(conf.cni_version, host, pod, env.netns, ipam_result, conf.prev_result)


def _open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CniError(
            errors.CONTAINER_UNKNOWN,
            f"network namespace {path} (CNI_NETNS) cannot be opened",
            f"{exc.strerror}; is the pod sandbox running?",
        ) from None


@contextlib.contextmanager
def _netlink(netns: str | None) -> Iterator[Netlink]:
    link = Netlink(netns)
    try:
        yield link
    finally:
        link.close()


def _interface_exists(env: Environment) -> CniError:
    return CniError(
        errors.INTERFACE_EXISTS,
        f"interface {env.ifname} (CNI_IFNAME) already exists in {env.netns}",
        "choose another interface name or remove the existing interface",
    )


def _create_veth(
    host_nl: Netlink, pod_nl: Netlink, env: Environment, netns_fd: int, mac: str, mtu: int | None
) -> LinkInfo:
    entropy = ""
    for _ in range(_HOST_NAME_ATTEMPTS):
        name = host_name(env.container_id, env.ifname, entropy)
        try:
            host_nl.create_veth(name, env.ifname, netns_fd, mac, mtu)
        except LinkError as exc:
            if exc.errno != errno.EEXIST:
                raise
            if pod_nl.link_by_name(env.ifname) is not None:
                raise _interface_exists(env) from None
            entropy = secrets.token_hex(2)[:3]  # the host name is taken: same hash, more entropy
            continue
        host = host_nl.link_by_name(name)
        if host is None:
            raise LinkError(errno.ENODEV, f"veth {name} vanished right after creation")
        try:
            # The ownership mark, right away: DEL and GC delete only a link that carries it.
            host_nl.set_alias(host.index, state.owner_alias(env.container_id, env.ifname))
        except BaseException:
            with contextlib.suppress(Exception):
                host_nl.delete(host.index)  # not returned yet, so _undo_add would not know it
            raise
        return host
    raise CniError(
        errors.TRY_AGAIN_LATER,
        f"no free host interface name for {env.container_id}/{env.ifname}",
        f"{_HOST_NAME_ATTEMPTS} candidates starting with {host_name(env.container_id, env.ifname)} exist",
    )


def _configure_pod_end(pod_nl: Netlink, ifname: str, ipam_result: ipam.IpamResult | None) -> LinkInfo:
    pod = pod_nl.link_by_name(ifname)
    if pod is None:
        raise LinkError(errno.ENODEV, f"{ifname} missing in the pod right after creation")
    if not pod.up:
        pod_nl.set_up(pod.index)
    if ipam_result is not None:
        for ip in ipam_result.ips:
            pod_nl.add_address(pod.index, ip["address"])
        for dst, gateway in route_plan(ipam_result):
            pod_nl.add_route(pod.index, dst, gateway)
    return pod


def _record(
    env: Environment, conf: NetConf, host: LinkInfo, pod: LinkInfo, ipam_result: ipam.IpamResult | None
) -> AttachmentRecord:
    ips = tuple(str(ipaddress.ip_interface(ip["address"])) for ip in (ipam_result.ips if ipam_result else ()))
    routes = [list(r) for r in route_plan(ipam_result)] if ipam_result else []
    return AttachmentRecord(
        container_id=env.container_id,
        ifname=env.ifname,
        netns=env.netns,
        network=conf.name,
        host_ifname=host.name,
        host_ifindex=host.index,
        mac=pod.mac,
        mode=conf.mode,
        ips=ips,
        mtu=pod.mtu,
        pod_namespace=env.pod_namespace,
        pod_name=env.pod_name,
        pod_uid=env.pod_uid,
        created_at=time.time(),
        extra={"podIfindex": pod.index, "routes": routes},
    )


def _undo_add(host_nl: Netlink, host: LinkInfo | None, conf: NetConf, env: Environment) -> None:
    """Leave nothing behind after a failed ADD: the veth pair (both ends) and the IPAM allocation."""
    with contextlib.suppress(Exception):
        if host is not None:
            host_nl.delete(host.index)
    with contextlib.suppress(Exception):
        state.remove_record(conf.state_dir, env.container_id, env.ifname)
    if conf.ipam:
        with contextlib.suppress(Exception):
            ipam.run("DEL", conf, env)


def _publish(conf: NetConf, env: Environment) -> None:
    from flexsfc.cni.annotate import try_annotate_pod

    assert conf.kubeconfig is not None
    mine = [
        r
        for r in state.load_records(conf.state_dir)
        if (r.pod_namespace, r.pod_name, r.pod_uid) == (env.pod_namespace, env.pod_name, env.pod_uid)
    ]
    try_annotate_pod(conf.kubeconfig, env.pod_namespace, env.pod_name, mine)


# ---------------------------------------------------------------------------------------------- DEL


def delete(env: Environment, conf: NetConf) -> None:
    """Idempotent: succeeds when the link, the netns or the record is already gone."""
    try:
        with state.locked(conf.state_dir, conf.lock_timeout_seconds):
            record = state.record_for(env.container_id, env.ifname, conf.state_dir)
            with _netlink(None) as host_nl:
                _retire_pod_ports(host_nl, conf, env.container_id)
                _delete_host_end(host_nl, record, env.container_id, env.ifname)
            if conf.ipam:
                ipam.run("DEL", conf, env)
            state.remove_record(conf.state_dir, env.container_id, env.ifname)
    except LinkError as exc:
        raise CniError(errors.LINK_FAILURE, f"cannot remove {env.ifname}", str(exc)) from None
    if conf.kubeconfig and record is not None:
        _publish(conf, env)


def _retire_pod_ports(host_nl: Netlink, conf: NetConf, container_id: str) -> None:
    """Before the pod's first veth goes, all its ports stop being targets in the node's data plane.

    All of them at once: a bump in the wire whose far side were still a target would take packets in
    that could no longer get out of a deleted near side. Best effort: no data plane (or an old one)
    must never make DEL fail; the agent removes the ports anyway once it hears the pod is gone.
    """
    ifindexes = []
    for other in state.load_records(conf.state_dir, container_id=container_id):
        link = host_nl.link_by_index(other.host_ifindex)
        if (
            link is not None
            and link.name == other.host_ifname
            and _made_for(link, other.container_id, other.ifname)
        ):
            ifindexes.append(link.index)
    if not ifindexes:
        return
    try:
        from flexsfc.dataplane.ports.leaving import retire_ports  # libbpf only when there is something to do

        retire_ports(conf.pin_dir, ifindexes)
    except Exception as exc:
        print(f"flexsfc-cni: ports {ifindexes} not marked leaving in {conf.pin_dir}: {exc}", file=sys.stderr)


def _made_for(link: LinkInfo, container_id: str, ifname: str) -> bool:
    """Whether flexsfc-cni created this link as the host end of (container id, ifname): a veth with
    that attachment's alias. A name alone proves nothing: anyone on the node can create ``fx...``."""
    return link.kind == "veth" and link.alias == state.owner_alias(container_id, ifname)


def _delete_host_end(
    host_nl: Netlink, record: AttachmentRecord | None, container_id: str, ifname: str
) -> None:
    """Deleting the host end removes the pod end too (and the netns removes both when it goes).

    Without a record (ADD died before writing it, or the record was unusable) the hash-derived name
    is the only candidate. Only a link marked as this attachment's host end is ever deleted; one
    created before the mark existed, or in the instant between creation and marking, goes with the
    pod's network namespace.
    """
    if record is not None:
        link = host_nl.link_by_index(record.host_ifindex)
        if link is not None and link.name == record.host_ifname and _made_for(link, container_id, ifname):
            host_nl.delete(link.index)
            return
        candidates = [record.host_ifname]
    else:
        candidates = [host_name(container_id, ifname)]
    for name in candidates:
        link = host_nl.link_by_name(name)
        if link is None:
            continue
        if _made_for(link, container_id, ifname):
            host_nl.delete(link.index)
        else:
            print(
                f"flexsfc-cni: not deleting {name}: it is not the host end flexsfc-cni made for "
                f"{container_id}/{ifname} (alias {link.alias!r})",
                file=sys.stderr,
            )


# -------------------------------------------------------------------------------------------- CHECK


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
        with _netlink(None) as host_nl:
            _check_links(env, conf, record, host_nl)
    except LinkError as exc:
        raise CniError(errors.LINK_FAILURE, f"cannot inspect {env.ifname}", str(exc)) from None
    if conf.ipam:
        ipam.run("CHECK", conf, env)


def _check_links(env: Environment, conf: NetConf, record: AttachmentRecord, host_nl: Netlink) -> None:
    if not os.path.exists(env.netns):
        raise _check_failed(f"network namespace {env.netns} (CNI_NETNS) does not exist")
    with _netlink(env.netns) as pod_nl:
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
    if not _made_for(host, env.container_id, env.ifname):
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


# ----------------------------------------------------------------------------------- STATUS and GC


def status(env: Environment, conf: NetConf) -> None:
    """Ready when the state directory is usable and the IPAM plugin is installed (code 50 otherwise)."""
    _require_1_1(conf, "STATUS")
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


def gc(env: Environment, conf: NetConf) -> None:
    """Remove this network's attachments that the runtime no longer lists as valid, and only those."""
    _require_1_1(conf, "GC")
    valid = _valid_attachments(conf.raw)
    failures = []
    with state.locked(conf.state_dir, conf.lock_timeout_seconds), _netlink(None) as host_nl:
        for record in state.load_records(conf.state_dir):
            if record.network != conf.name or (record.container_id, record.ifname) in valid:
                continue
            try:
                _delete_host_end(host_nl, record, record.container_id, record.ifname)
                if conf.ipam:
                    overrides = {
                        "CNI_CONTAINERID": record.container_id,
                        "CNI_IFNAME": record.ifname,
                        "CNI_NETNS": "",
                    }
                    ipam.run("DEL", conf, env, overrides)
                state.remove_record(conf.state_dir, record.container_id, record.ifname)
            except (CniError, LinkError) as exc:
                failures.append(f"{record.container_id}/{record.ifname}: {exc}")
    if failures:
        raise CniError(errors.LINK_FAILURE, "GC could not remove every stale attachment", "; ".join(failures))


def _valid_attachments(document: dict[str, Any]) -> set[tuple[str, str]]:
    """Union of ``cni.dev/valid-attachments`` (CNI 1.1) and ``cni.dev/attachments`` (its draft name)."""
    keys = ("cni.dev/valid-attachments", "cni.dev/attachments")
    if not any(key in document for key in keys):
        raise CniError(
            errors.INVALID_CONFIG,
            "invalid network configuration: field 'cni.dev/valid-attachments' is required for GC",
            'list the attachments to keep as [{"containerID": ..., "ifname": ...}] (may be empty)',
        )
    valid = set()
    for key in keys:
        entries = document.get(key, [])
        if not isinstance(entries, list):
            raise CniError(
                errors.INVALID_CONFIG,
                f"invalid network configuration: field {key!r} must be a list",
                'write it as [{"containerID": ..., "ifname": ...}] (may be empty)',
            )
        for entry in entries:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("containerID"), str)
                or not isinstance(entry.get("ifname"), str)
            ):
                raise CniError(
                    errors.INVALID_CONFIG,
                    f"invalid network configuration: field {key!r} has an entry without string "
                    "'containerID' and 'ifname'",
                    f'{repr(entry)[:200]}: write each entry as {{"containerID": "<id>", "ifname": "<name>"}}',
                )
            valid.add((entry["containerID"], entry["ifname"]))
    return valid


def _require_1_1(conf: NetConf, verb: str) -> None:
    if version_tuple(conf.cni_version) < (1, 1, 0):
        raise CniError(
            errors.INCOMPATIBLE_VERSION,
            f"{verb} is defined from cniVersion 1.1.0, the configuration has {conf.cni_version}",
            "set cniVersion to 1.1.0",
        )
