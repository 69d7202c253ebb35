"""Replacing a pinned program by the one this version builds, without stopping forwarding.

A writer opening a pin directory with `upgrade=True` (the node agent) loads the freshly built object
with every pinned map whose attributes (type, key and value sizes, capacity, flags) are unchanged
passed in by descriptor, so the new program shares their contents: ports, tables, neighbours,
sessions. It compares the kernel's tag of the new program with the pinned one's; when they are equal
and no map changed, nothing happens (the new load is dropped). Otherwise every port's filter is
replaced in place (same handle and priority, NLM_F_REPLACE: cls_bpf swaps the program under RCU, so
each packet runs the old or the new program, none is dropped), then the replaced maps and the
program are re-pinned by rename (each pin changes atomically; the program's goes last). The session
counters and the tables they count are re-pinned first, under a marker pin (RECOUNT_MARK) that goes
once they all are: a writer killed in between leaves the marker, and the next writer to open the
pins recounts the counters from a walk of the tables.

Maps whose attributes changed:
- state the program rebuilds by itself (the session tables, the flow cache, fragments, learned
  neighbours) and counters are created empty: their flows re-hash through the unchanged Maglev
  tables, so a flow whose replica set did not change keeps its replica; the dropped entries are
  counted in the report;
- a new map (none pinned under its name) is created empty;
- any other map (configuration, ports, tables, registry, neighbours) holds what the agent wrote and
  this version could not read the old layout: the upgrade is refused with UpgradeRefused before
  anything is touched, and the old program keeps forwarding (docs/dataplane.md, "Upgrade").

A writer killed half-way leaves some ports on the new program and the old one pinned: the next start
finds the tags different and does it all again (the maps are shared, so both programs agree).
"""

import contextlib
import errno
import logging
import os
from dataclasses import dataclass, field

from flexsfc.dataplane import libbpf, maps, tcfilter
from flexsfc.dataplane.api import DataplaneError
from flexsfc.dataplane.build import ensure_built
from flexsfc.dataplane.pins import RECOUNT_MARK, SESSION_TABLES, TC_HANDLE, TC_PRIORITY, unlink_pin

log = logging.getLogger(__name__)

# Rebuilt by the program from traffic, or counters: replaced empty when their layout changes.
DISPOSABLE = frozenset(
    {
        *SESSION_TABLES,
        *maps.SESSION_COUNTERS,
        "session_clocks",
        "flow_cache",
        "frags",
        "neighbours_learned",
        "drops",
        "events",
        # The flow event stream (events.py): a ring, its switch and per-CPU scratch. Readers attached
        # while these are replaced keep the old ones and must be restarted.
        "flow_events",
        "events_ctl",
        "events_cpu",
        "tunnel_scratch",
    }
)
# The session counters count the entries of the confirmed tables: replaced, either goes with the other.
_COUNTED = frozenset({"sessions", "sessions6", *maps.SESSION_COUNTERS})


class UpgradeRefused(DataplaneError):
    """The pinned state needs a migration this version does not have; nothing was changed."""


@dataclass
class UpgradeReport:
    upgraded: bool = False  # whether the program (or a map) was replaced
    old_prog_id: int = 0
    new_prog_id: int = 0
    kept: list[str] = field(default_factory=list)  # maps passed to the new program as they are
    replaced: dict[str, int] = field(default_factory=dict)  # map -> entries dropped (-1: not counted)
    created: list[str] = field(default_factory=list)  # maps new in this version
    ports: list[int] = field(default_factory=list)  # ports whose filter moved to the new program
    ports_gone: list[int] = field(default_factory=list)  # recorded ports whose interface is gone


def _pin(pin_dir: str, name: str) -> str:
    return os.path.join(pin_dir, name)


def _entries(fd: int, spec: libbpf.MapSpec) -> int:
    """How many entries a hash map holds (-1 for other kinds: arrays are always full)."""
    hash_kinds = {1, 5, 9, 10}  # BPF_MAP_TYPE_HASH, PERCPU_HASH, LRU_HASH, LRU_PERCPU_HASH
    if spec.type not in hash_kinds:
        return -1
    return sum(count for _, count in libbpf.map_key_batches(fd, spec.key_size, spec.value_size))


def upgrade_pinned(pin_dir: str, capacities: dict[str, int]) -> UpgradeReport:
    """Move the pinned data plane at `pin_dir` to this version's program (see the module docstring).

    `capacities`: max_entries to give maps whose size is chosen at load (the per-CPU arrays); the
    session tables keep the capacity they were pinned with. Ports are re-attached in the calling
    thread's network namespace (the host's)."""
    report = UpgradeReport()
    obj = libbpf.BpfObject(str(ensure_built()))
    opened: dict[str, int] = {}
    try:
        old_prog = libbpf.obj_get(_pin(pin_dir, maps.PROGRAM_NAME))
        opened[maps.PROGRAM_NAME] = old_prog
        report.old_prog_id = libbpf.prog_id(old_prog)
        old_tunnel_pin = _pin(pin_dir, maps.TUNNEL_PROGRAM_NAME)
        if os.path.exists(old_tunnel_pin):  # versions before multi-node have none
            opened[maps.TUNNEL_PROGRAM_NAME] = libbpf.obj_get(old_tunnel_pin)
        refused = []
        specs: dict[str, libbpf.MapSpec] = {}
        for name in obj.map_names():
            if "." in name:
                continue  # the object's own .rodata/.bss (e.g. "xconnec.rodata"): never pinned
            path = _pin(pin_dir, name)
            if name in capacities:
                obj.set_max_entries(name, capacities[name])
            if not os.path.exists(path):
                report.created.append(name)
                continue
            fd = opened[name] = libbpf.obj_get(path)
            pinned = specs[name] = libbpf.MapSpec.of(libbpf.map_info(fd))
            if name in SESSION_TABLES:
                obj.set_max_entries(name, pinned.max_entries)  # the capacity the operator chose
            wanted = obj.map_spec(name)
            if pinned == wanted:
                report.kept.append(name)
            elif name in DISPOSABLE:
                report.replaced[name] = -1
            else:
                refused.append(f"{name} (pinned {pinned}, this version {wanted})")
        if set(SESSION_TABLES) & report.replaced.keys() and "flow_cache" in report.kept:
            # The flow cache holds copies of sessions: kept, it would go on steering flows whose
            # sessions were dropped, until each entry is evicted.
            report.kept.remove("flow_cache")
            report.replaced["flow_cache"] = -1
        if _COUNTED & report.replaced.keys():
            for name in sorted(_COUNTED & set(report.kept)):
                report.kept.remove(name)
                report.replaced[name] = -1
        if refused:
            raise UpgradeRefused(
                f"pin_dir {pin_dir}: this version cannot take over the pinned data plane: the layout of "
                f"{'; '.join(refused)} changed and no migration exists for it. The old program keeps "
                f"forwarding; run the previous agent version, or remove the state (`rm -r {pin_dir}`: each "
                "port forwards with the old program until the new agent's first pass replaces its "
                "filter; sessions are lost) and start again"
            )
        for name in report.kept:
            obj.reuse_map_fd(name, opened[name])
        for name in report.replaced:
            report.replaced[name] = _entries(opened[name], specs[name])
        obj.load()
        new_prog = obj.program_fd(maps.PROGRAM_NAME)
        report.new_prog_id = libbpf.prog_id(new_prog)
        new_tunnel = obj.program_fd(maps.TUNNEL_PROGRAM_NAME)
        old_tunnel = opened.get(maps.TUNNEL_PROGRAM_NAME)
        if (
            libbpf.prog_tag(new_prog) == libbpf.prog_tag(old_prog)
            and old_tunnel is not None
            and libbpf.prog_tag(new_tunnel) == libbpf.prog_tag(old_tunnel)
            and not report.replaced
            and not report.created
        ):
            return report  # the same program: the new load goes with obj.close()
        report.upgraded = True
        _move_filters(pin_dir, opened, new_prog, report)
        _move_tunnel_filter(opened, new_tunnel, report)
        _repin_maps(obj, pin_dir, report)
        _repin(new_tunnel, _pin(pin_dir, maps.TUNNEL_PROGRAM_NAME))
        _repin(new_prog, _pin(pin_dir, maps.PROGRAM_NAME))  # last: the pins are complete again
        log.warning(
            "data plane at %s upgraded: program %d -> %d on %d ports; maps kept %s, replaced empty %s "
            "(entries dropped), new %s",
            pin_dir, report.old_prog_id, report.new_prog_id, len(report.ports), ", ".join(report.kept),
            report.replaced or "none", report.created or "none",
        )  # fmt: skip
        return report
    finally:
        obj.close()
        for fd in opened.values():
            os.close(fd)


def _repin_maps(obj: libbpf.BpfObject, pin_dir: str, report: UpgradeReport) -> None:
    """Re-pin the replaced and created maps, the counted group (_COUNTED) first, counters before
    tables. Each pin changes atomically but the group does not: while it is in flux (and whenever
    it ends up with new counters beside kept tables) the RECOUNT_MARK pin stays, and the next writer
    to open the pins recounts the counters from a walk of the tables (Dataplane.__init__)."""
    changed = [*report.replaced, *report.created]
    counted = sorted(_COUNTED & set(changed), key=lambda n: (n not in maps.SESSION_COUNTERS, n))
    mark = _pin(pin_dir, RECOUNT_MARK)
    if counted and not os.path.exists(mark):
        libbpf.obj_pin(obj.map_fd(counted[0]), mark)
    for name in (*counted, *(n for n in changed if n not in counted)):
        _repin(obj.map_fd(name), _pin(pin_dir, name))
        if counted and name == counted[-1] and set(changed) >= _COUNTED:
            unlink_pin(mark)  # the whole group is new, hence consistent: nothing to recount


def _move_filters(pin_dir: str, opened: dict[str, int], prog_fd: int, report: UpgradeReport) -> None:
    """Replace every recorded port's filter by one running `prog_fd`, with the same tag."""
    cfg = maps.Config()
    libbpf.map_lookup(opened["config"], maps.U32(0), cfg)
    ports_fd = opened["ports"]
    for key in libbpf.map_keys(ports_fd, maps.U32):
        info = maps.PortInfo()
        if not libbpf.map_lookup(ports_fd, key, info):
            continue
        ifindex = key.value
        if ifindex & maps.REMOTE_PORT_BIT:
            continue  # a replica on another node: no filter here
        if libbpf.tc_query_ingress(ifindex, TC_HANDLE, TC_PRIORITY) is None:
            # No filter (its veth is gone, or a writer died before attaching it): nothing to move;
            # the agent's first pass attaches what should be there.
            report.ports_gone.append(ifindex)
            continue
        try:
            tcfilter.attach_ingress(
                ifindex, prog_fd, handle=TC_HANDLE, priority=TC_PRIORITY,
                tag=maps.filter_tag(info.slot, cfg.redirect_mode), name=maps.PROGRAM_NAME,
                prog_id=report.new_prog_id,
            )  # fmt: skip
        except tcfilter.TcFilterError as exc:
            if "No such device" not in str(exc):
                raise
            report.ports_gone.append(ifindex)
            continue
        report.ports.append(ifindex)


def _move_tunnel_filter(opened: dict[str, int], prog_fd: int, report: UpgradeReport) -> None:
    """Replace the filter at ingress of the node's VXLAN device (multi-node), when one is recorded,
    by one running the new tunnel program `prog_fd`, with the same tag."""
    if "tunnel_device" not in opened:
        return  # pinned by a version without the tunnel
    device, cfg = maps.U32(), maps.Config()
    libbpf.map_lookup(opened["tunnel_device"], maps.U32(0), device)
    libbpf.map_lookup(opened["config"], maps.U32(0), cfg)
    if not device.value or libbpf.tc_query_ingress(device.value, TC_HANDLE, TC_PRIORITY) is None:
        return  # no device any more: the agent's set_tunnel attaches it again
    tag = maps.TAG_TUNNEL | (maps.TAG_PLAIN_REDIRECT if cfg.redirect_mode == maps.MODE_REDIRECT else 0)
    tcfilter.attach_ingress(
        device.value, prog_fd, handle=TC_HANDLE, priority=TC_PRIORITY, tag=tag,
        name=maps.TUNNEL_PROGRAM_NAME, prog_id=libbpf.prog_id(prog_fd),
    )  # fmt: skip
    report.ports.append(device.value)


def _repin(fd: int, path: str) -> None:
    """Pin `fd` at `path` in one step: pinned beside it, then renamed over it (bpffs renames
    atomically), so a reader opening the pins finds the old object or the new, never none."""
    tmp = f"{path}_upgrading"  # no dot: bpffs refuses names with one
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    libbpf.obj_pin(fd, tmp)
    try:
        os.rename(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DataplaneError(f"re-pinning {path}: {os.strerror(exc.errno or errno.EIO)}") from exc
