"""What the CNI verbs share: the host end's name, a netlink handle's lifetime, publishing a pod's
attachments, the CNI 1.1 check of the newer verbs. The verbs: flexsfc.cni.verb_add (ADD),
flexsfc.cni.verb_del (DEL, GC), flexsfc.cni.verb_check (CHECK, STATUS)."""

import contextlib
import hashlib
from collections.abc import Iterator

from flexsfc.cni import errors, state
from flexsfc.cni.config import Environment, NetConf, version_tuple
from flexsfc.cni.errors import CniError
from flexsfc.cni.links import Netlink
from flexsfc.model.constants import MAX_IFNAME_LEN

HOST_PREFIX = "fx"
_HOST_NAME_ATTEMPTS = 4


def host_name(container_id: str, ifname: str, entropy: str = "") -> str:
    """``fx`` + 10 hex digits of (container id, ifname) [+ 3 random hex digits after a collision]."""
    digest = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()
    name = f"{HOST_PREFIX}{digest[:10]}{entropy}"
    assert len(name) <= MAX_IFNAME_LEN
    return name


@contextlib.contextmanager
def open_netlink(netns: str | None) -> Iterator[Netlink]:
    link = Netlink(netns)
    try:
        yield link
    finally:
        link.close()


def publish_attachments(conf: NetConf, env: Environment) -> None:
    from flexsfc.cni.annotate import try_annotate_pod

    assert conf.kubeconfig is not None
    mine = [
        r
        for r in state.load_records(conf.state_dir)
        if (r.pod_namespace, r.pod_name, r.pod_uid) == (env.pod_namespace, env.pod_name, env.pod_uid)
    ]
    try_annotate_pod(conf.kubeconfig, env.pod_namespace, env.pod_name, mine)


def require_1_1(conf: NetConf, verb: str) -> None:
    if version_tuple(conf.cni_version) < (1, 1, 0):
        raise CniError(
            errors.INCOMPATIBLE_VERSION,
            f"{verb} is defined from cniVersion 1.1.0, the configuration has {conf.cni_version}",
            "set cniVersion to 1.1.0",
        )
