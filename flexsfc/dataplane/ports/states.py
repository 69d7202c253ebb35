"""The numpy view of `port_slots` and the agent's writes of a port's state byte, atomic against the
CNI plugin's leaving marks.

Every CPU's copy of a port slot carries the port's state (`port_slots`, read by the program). The
CNI plugin marks a port leaving from another process (leaving.py), and leaving is final. The agent
sets the other states through the native compare-and-swap of native/slot_state.c, never by a plain
store: a store could land just after the plugin's mark and undo it.
"""

import ctypes
from functools import cache

import numpy as np
import numpy.typing as npt

from flexsfc.dataplane import maps
from flexsfc.dataplane.api import ReplicaState
from flexsfc.dataplane.build import ensure_slot_state_lib

# A numpy view of maps.PortSlot, laid out from the ctypes mirror itself (what the facade writes through
# mmap and what the CNI plugin's leaving mark reads must agree byte for byte).
COUNTERS = [name for name, *_ in maps.PortCounters._fields_]
PORT_SLOT_DTYPE = np.dtype(
    {
        "names": ["ifindex", "xc", "side", "state", *COUNTERS],
        "formats": ["<u4", "<u4", "u1", "u1", *["<u8"] * len(COUNTERS)],
        "offsets": [
            *(getattr(maps.PortSlot, name).offset for name in ("ifindex", "xc", "side", "state")),
            *(maps.PortSlot.counters.offset + getattr(maps.PortCounters, name).offset for name in COUNTERS),
        ],
        "itemsize": ctypes.sizeof(maps.PortSlot),
    }
)
_STATE_OFFSET = maps.PortSlot.state.offset

# [cpu][slot] records of PORT_SLOT_DTYPE.
Slots = npt.NDArray[np.void]

STATE = {
    ReplicaState.ACTIVE: maps.PORT_ACTIVE,
    ReplicaState.DRAINING: maps.PORT_DRAINING,
    ReplicaState.LEAVING: maps.PORT_LEAVING,
}
REPLICA_STATE = {value: state for state, value in STATE.items()}


@cache
def _native() -> ctypes.CDLL:
    helper = ctypes.CDLL(str(ensure_slot_state_lib()))
    fn = helper.set_state_unless_final
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_uint8, ctypes.c_uint8]
    return helper


def set_state(slots: Slots, slot: int, state: int) -> bool:
    """Set the state of `slot` in every CPU's copy (`slots` is the [cpu, slot] view of the map),
    unless the port is leaving; then all copies are made leaving. Returns whether it is leaving."""
    column = slots[:, slot]
    if state == maps.PORT_LEAVING:
        column["state"] = maps.PORT_LEAVING  # final: nothing to protect
        return True
    first = slots.ctypes.data + slot * slots.strides[1] + _STATE_OFFSET
    kept = int(
        _native().set_state_unless_final(first, slots.strides[0], slots.shape[0], state, maps.PORT_LEAVING)
    )
    if kept:
        column["state"] = maps.PORT_LEAVING  # the mark may have reached only some CPUs' copies yet
    return kept > 0
