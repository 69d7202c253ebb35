"""CNI ADD: the veth pair (host end named by host_name, pod end moved into the pod's namespace and
configured), IPAM, the attachment record, the pod's annotation; undone on failure."""

import contextlib
import errno
import ipaddress
import os
import secrets
import time
from typing import Any

from flexsfc.cni import errors, ipam, state
from flexsfc.cni.config import Environment, NetConf
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
from flexsfc.cni.verbs import _HOST_NAME_ATTEMPTS, host_name, open_netlink, publish_attachments
from flexsfc.model.mac import derive_mac
from flexsfc.model.records import AttachmentRecord


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
            with open_netlink(env.netns) as pod_nl, open_netlink(None) as host_nl:
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
        publish_attachments(conf, env)  # outside the lock: an API call must not hold up other ADDs
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
