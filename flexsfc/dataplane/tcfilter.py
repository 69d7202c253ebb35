"""Our cls_bpf filter at TC ingress, attached with a classid that tags it with its port.

libbpf's ``bpf_tc_attach`` (1.1) cannot set a classid, so the attach is one rtnetlink request
encoded by pyroute2's ``tcmsg``. cls_bpf hands the classid's low 16 bits to the program
(``skb->tc_classid``) before running it: the tag saves the program its ingress-port lookup on every
packet. Detach and query stay with libbpf (by handle and priority): they need no classid.
"""

import errno
import socket

from pyroute2.netlink import NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.rtnl import RTM_GETTFILTER, RTM_NEWQDISC, RTM_NEWTFILTER
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from flexsfc.dataplane import libbpf
from flexsfc.util.rtnl import RtnlError, RtnlSocket

TC_H_CLSACT = 0xFFFFFFF1
TC_H_INGRESS_PARENT = 0xFFFFFFF2  # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)
CLSACT_HANDLE = 0xFFFF0000
ETH_P_ALL = 0x0003
TCA_BPF_FLAG_ACT_DIRECT = 1
TAG_BITS = 16  # what survives into skb->tc_classid (qdisc_skb_cb's field is 16 bits wide)


class TcFilterError(RuntimeError):
    pass


def _filter_msg(ifindex: int, handle: int, priority: int) -> tcmsg:
    msg = tcmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = ifindex
    msg["handle"] = handle
    msg["parent"] = TC_H_INGRESS_PARENT
    msg["info"] = (priority << 16) | socket.htons(ETH_P_ALL)
    return msg


def _ensure_clsact(sock: RtnlSocket, ifindex: int) -> None:
    """Create the clsact qdisc when missing; an existing one (maybe shared) is left as it is."""
    msg = tcmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = ifindex
    msg["handle"] = CLSACT_HANDLE
    msg["parent"] = TC_H_CLSACT
    msg["attrs"] = [["TCA_KIND", "clsact"]]
    try:
        sock.request(f"add clsact on ifindex {ifindex}", msg, RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL)
    except RtnlError as exc:
        if exc.errno != errno.EEXIST:
            raise TcFilterError(str(exc)) from exc


def attach_ingress(ifindex: int, prog_fd: int, *, handle: int, priority: int, tag: int, name: str) -> None:
    """Attach (or replace) our direct-action filter at ingress of `ifindex`, tagged with `tag`.

    Acts in the calling thread's network namespace, like libbpf's tc calls.
    """
    if not 0 < tag < 1 << TAG_BITS:
        raise ValueError(f"tag {tag}: must be in 1..{(1 << TAG_BITS) - 1} (the program reads 16 bits)")
    options = [
        ["TCA_BPF_FD", prog_fd],
        # As libbpf names it: `tc filter show` and tools that look for "<name>:[<id>]" find the id.
        ["TCA_BPF_NAME", f"{name}:[{libbpf.prog_id(prog_fd)}]"],
        ["TCA_BPF_FLAGS", TCA_BPF_FLAG_ACT_DIRECT],
        ["TCA_BPF_CLASSID", tag],
    ]
    msg = _filter_msg(ifindex, handle, priority)
    msg["attrs"] = [["TCA_KIND", "bpf"], ["TCA_OPTIONS", {"attrs": options}]]
    with RtnlSocket() as sock:
        _ensure_clsact(sock, ifindex)
        try:
            sock.request(
                f"attach filter on ifindex {ifindex}", msg, RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_REPLACE
            )
        except RtnlError as exc:
            raise TcFilterError(str(exc)) from exc


def ingress_tag(ifindex: int, *, handle: int, priority: int) -> int | None:
    """The tag (classid) of our filter at ingress of `ifindex`; None when there is no such filter."""
    msg = _filter_msg(ifindex, 0, 0)
    with RtnlSocket() as sock:
        try:
            replies = sock.request(f"list filters of ifindex {ifindex}", msg, RTM_GETTFILTER, NLM_F_DUMP)
        except RtnlError as exc:
            if exc.errno in (errno.ENODEV, errno.EINVAL, errno.ENOENT):
                return None
            raise TcFilterError(str(exc)) from exc
    for reply in replies:
        if (
            reply["handle"] != handle
            or reply["info"] >> 16 != priority
            or reply.get_attr("TCA_KIND") != "bpf"
        ):
            continue
        options = reply.get_attr("TCA_OPTIONS")
        classid = options.get_attr("TCA_BPF_CLASSID") if options is not None else None
        return classid or 0
    return None
