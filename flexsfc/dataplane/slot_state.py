"""The agent's writes of a port's state byte, atomic against the CNI plugin's leaving marks.

Every CPU's copy of a port slot carries the port's state (`port_slots`, read by the program). The
CNI plugin marks a port leaving from another process (retire.py), and leaving is final. The agent
sets the other states through the native compare-and-swap of bpf/slot_state.c, never by a plain
store: a store could land just after the plugin's mark and undo it.
"""

import ctypes
from functools import cache

import numpy as np

from flexsfc.dataplane import maps
from flexsfc.dataplane.build import ensure_slot_state_lib


@cache
def _native() -> ctypes.CDLL:
    helper = ctypes.CDLL(str(ensure_slot_state_lib()))
    fn = helper.set_state_unless_final
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_uint8, ctypes.c_uint8]
    return helper


def set_state(slots: np.ndarray, slot: int, state: int) -> bool:
    """Set the state of `slot` in every CPU's copy (`slots` is the [cpu, slot] view of the map),
    unless the port is leaving; then all copies are made leaving. Returns whether it is leaving."""
    column = slots[:, slot]
    if state == maps.PORT_LEAVING:
        column["state"] = maps.PORT_LEAVING  # final: nothing to protect
        return True
    first = slots.ctypes.data + slot * slots.strides[1] + slots.dtype.fields["state"][1]
    kept = _native().set_state_unless_final(first, slots.strides[0], slots.shape[0], state, maps.PORT_LEAVING)
    if kept:
        column["state"] = maps.PORT_LEAVING  # the mark may have reached only some CPUs' copies yet
    return kept > 0
