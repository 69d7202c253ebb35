"""CNI DEL and GC: an attachment's ports retired, its host end and record removed (DEL), and GC's
removal of this network's attachments the runtime no longer lists as valid."""

import sys
from typing import Any

from flexsfc.cni import errors, ipam, state
from flexsfc.cni.config import Environment, NetConf
from flexsfc.cni.errors import CniError
from flexsfc.cni.links import LinkError, LinkInfo, Netlink
from flexsfc.cni.verbs import host_name, open_netlink, publish_attachments, require_1_1
from flexsfc.model.records import AttachmentRecord


def delete(env: Environment, conf: NetConf) -> None:
    """Idempotent: succeeds when the link, the netns or the record is already gone."""
    try:
        with state.locked(conf.state_dir, conf.lock_timeout_seconds):
            record = state.record_for(env.container_id, env.ifname, conf.state_dir)
            with open_netlink(None) as host_nl:
                _retire_pod_ports(host_nl, conf, env.container_id)
                _delete_host_end(host_nl, record, env.container_id, env.ifname)
            if conf.ipam:
                ipam.run("DEL", conf, env)
            state.remove_record(conf.state_dir, env.container_id, env.ifname)
    except LinkError as exc:
        raise CniError(errors.LINK_FAILURE, f"cannot remove {env.ifname}", str(exc)) from None
    if conf.kubeconfig and record is not None:
        publish_attachments(conf, env)


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
            and made_for(link, other.container_id, other.ifname)
        ):
            ifindexes.append(link.index)
    if not ifindexes:
        return
    try:
        from flexsfc.dataplane.ports.leaving import retire_ports  # libbpf only when there is something to do

        retire_ports(conf.pin_dir, ifindexes)
    except Exception as exc:
        print(f"flexsfc-cni: ports {ifindexes} not marked leaving in {conf.pin_dir}: {exc}", file=sys.stderr)


def made_for(link: LinkInfo, container_id: str, ifname: str) -> bool:
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
        if link is not None and link.name == record.host_ifname and made_for(link, container_id, ifname):
            host_nl.delete(link.index)
            return
        candidates = [record.host_ifname]
    else:
        candidates = [host_name(container_id, ifname)]
    for name in candidates:
        link = host_nl.link_by_name(name)
        if link is None:
            continue
        if made_for(link, container_id, ifname):
            host_nl.delete(link.index)
        else:
            print(
                f"flexsfc-cni: not deleting {name}: it is not the host end flexsfc-cni made for "
                f"{container_id}/{ifname} (alias {link.alias!r})",
                file=sys.stderr,
            )


def gc(env: Environment, conf: NetConf) -> None:
    """Remove this network's attachments that the runtime no longer lists as valid, and only those."""
    require_1_1(conf, "GC")
    valid = _valid_attachments(conf.raw)
    failures = []
    with state.locked(conf.state_dir, conf.lock_timeout_seconds), open_netlink(None) as host_nl:
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
