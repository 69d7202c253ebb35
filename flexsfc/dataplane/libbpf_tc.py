"""TC bindings of libbpf: the clsact hook, cls_bpf filter attach / detach / query at ingress, and
TCX links (kernel >= 6.6)."""

import ctypes
import errno

from flexsfc.dataplane.libbpf_core import check, lib

BPF_TC_INGRESS = 1
BPF_TC_EGRESS = 2
BPF_TC_F_REPLACE = 1


class BpfTcHook(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ifindex", ctypes.c_int),
        ("attach_point", ctypes.c_int),
        ("parent", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class BpfTcOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("prog_fd", ctypes.c_int),
        ("flags", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("handle", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


def _tc_hook(ifindex: int) -> BpfTcHook:
    return BpfTcHook(sz=ctypes.sizeof(BpfTcHook), ifindex=ifindex, attach_point=BPF_TC_INGRESS)


def tc_hook_create_ingress(ifindex: int) -> None:
    """Create the clsact qdisc of `ifindex` when missing; an existing one (maybe shared) stays as is."""
    hook = _tc_hook(ifindex)
    rc = lib().bpf_tc_hook_create(ctypes.addressof(hook))
    if rc < 0 and rc != -errno.EEXIST:
        check("bpf_tc_hook_create", rc, f"ifindex {ifindex}")


def tc_attach_ingress(ifindex: int, prog_fd: int, handle: int, priority: int) -> None:
    """Attach `prog_fd` as a direct-action cls_bpf filter at ingress with our handle and priority,
    untagged (the data plane attaches through flexsfc.dataplane.tcfilter, which sets a classid).

    Creates the clsact qdisc when missing; an existing one (maybe shared) is reused as is.
    """
    tc_hook_create_ingress(ifindex)
    hook = _tc_hook(ifindex)
    opts = BpfTcOpts(
        sz=ctypes.sizeof(BpfTcOpts), prog_fd=prog_fd, flags=BPF_TC_F_REPLACE, handle=handle, priority=priority
    )
    check(
        "bpf_tc_attach",
        lib().bpf_tc_attach(ctypes.addressof(hook), ctypes.addressof(opts)),
        f"ifindex {ifindex}",
    )


def tc_detach_ingress(ifindex: int, handle: int, priority: int) -> bool:
    """Remove only our filter (never the clsact qdisc). False when it or the interface is gone."""
    hook = _tc_hook(ifindex)
    opts = BpfTcOpts(sz=ctypes.sizeof(BpfTcOpts), handle=handle, priority=priority)
    rc = lib().bpf_tc_detach(ctypes.addressof(hook), ctypes.addressof(opts))
    if rc in (-errno.ENOENT, -errno.ENODEV, -errno.EINVAL):
        return False
    check("bpf_tc_detach", rc, f"ifindex {ifindex}")
    return True


def tc_query_ingress(ifindex: int, handle: int, priority: int) -> int | None:
    """Program id of our filter on `ifindex`, or None."""
    hook = _tc_hook(ifindex)
    opts = BpfTcOpts(sz=ctypes.sizeof(BpfTcOpts), handle=handle, priority=priority)
    rc = lib().bpf_tc_query(ctypes.addressof(hook), ctypes.addressof(opts))
    if rc in (-errno.ENOENT, -errno.ENODEV, -errno.EINVAL):
        return None
    check("bpf_tc_query", rc, f"ifindex {ifindex}")
    return int(opts.prog_id)


BPF_TCX_INGRESS = 46  # enum bpf_attach_type, kernel >= 6.6


def tcx_attach_ingress(ifindex: int, prog_fd: int) -> int:
    """A TCX link running `prog_fd` at ingress of `ifindex` (this thread's network namespace), after
    the programs already there; returns the link's fd. Closing the last fd detaches it (unless it is
    pinned). libbpf 1.1 has no tcx API: its generic `bpf_link_create` passes the ifindex where the
    kernel reads it, and no options means "append"."""
    return check(
        "bpf_link_create(BPF_TCX_INGRESS)", lib().bpf_link_create(prog_fd, ifindex, BPF_TCX_INGRESS, None)
    )
