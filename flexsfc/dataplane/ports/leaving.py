"""Mark ports leaving in a pinned data plane from outside the agent, before their veths go.

The CNI plugin calls this on DEL, so a pod's sessions re-hash to the other replicas the moment its
interfaces are about to disappear, not when the agent later hears that the pod is gone (on a
cluster the kubelet tears the sandbox down before the API deletes the pod: without this, packets of
the flows still pinned to the replica would be sent to a vanished veth in between).

Leaving is final (the agent never makes a leaving port a target again), so it is safe to do from
another process: only the state byte of the port's slot changes, plus the state in the port's
record (`ports`, a hash of every port) that a restarted agent reads. The `ports_by_index` array is
left alone: an array answers for every index, so it cannot tell a port from a former one. Kept free
of numpy and of the facade (and so is this package's `__init__`): it runs in the CNI plugin, whose
start-up time is part of every pod's creation and deletion. The agent's side of the same byte is
states.set_state.
"""

import ctypes
import errno
import mmap
import os
from collections.abc import Iterable

from flexsfc.dataplane import libbpf, maps

_STATE_OFFSET = maps.PortSlot.state.offset
_SLOT_SIZE = ctypes.sizeof(maps.PortSlot)


def retire_ports(pin_dir: str, ifindexes: Iterable[int]) -> list[int]:
    """Mark the ports of these host ifindexes LEAVING; returns the ifindexes that were ports.

    Nothing to do (an empty list) when no data plane is pinned at `pin_dir` or none of them is a port.
    """
    wanted = sorted({i for i in ifindexes if i > 0})
    if not wanted or not os.path.exists(os.path.join(pin_dir, maps.PROGRAM_NAME)):
        return []
    info_fd = libbpf.obj_get(os.path.join(pin_dir, "ports"))
    try:
        found: list[tuple[int, maps.PortInfo]] = []
        for ifindex in wanted:
            info = maps.PortInfo()
            if libbpf.map_lookup(info_fd, maps.U32(ifindex), info):
                found.append((ifindex, info))
        if not found:
            return []
        _mark_slots(pin_dir, found)
        for ifindex, info in found:
            if info.state != maps.PORT_LEAVING:
                info.state = maps.PORT_LEAVING
                try:
                    libbpf.map_update(info_fd, maps.U32(ifindex), info, libbpf.BPF_EXIST)
                except libbpf.BpfError as exc:
                    # The agent removed the port meanwhile: never re-create its entry.
                    if exc.errno != errno.ENOENT:
                        raise
        return [ifindex for ifindex, _ in found]
    finally:
        os.close(info_fd)


def _mark_slots(pin_dir: str, ports: list[tuple[int, maps.PortInfo]]) -> None:
    slots_fd = libbpf.obj_get(os.path.join(pin_dir, "port_slots"))
    try:
        entries = libbpf.map_info(slots_fd).max_entries
        length = -(-entries * _SLOT_SIZE // mmap.PAGESIZE) * mmap.PAGESIZE
        with mmap.mmap(slots_fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as view:
            for cpu in range(entries // maps.MAX_PORTS):
                for ifindex, info in ports:
                    base = (cpu * maps.MAX_PORTS + info.slot) * _SLOT_SIZE
                    # Only a slot still held by this port: it may have been freed and reused.
                    if int.from_bytes(view[base : base + 4], "little") == ifindex:
                        view[base + _STATE_OFFSET] = maps.PORT_LEAVING
    finally:
        os.close(slots_fd)
