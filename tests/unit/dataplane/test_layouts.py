"""The numpy view of `port_slots` the facade writes through mmap and the ctypes mirror that the CNI
plugin's retire path uses must agree byte for byte (the kernel tests check ctypes against the maps)."""

import ctypes

from flexsfc.dataplane import maps
from flexsfc.dataplane.ports.states import PORT_SLOT_DTYPE


def test_port_slot_dtype_matches_the_ctypes_mirror() -> None:
    assert PORT_SLOT_DTYPE.itemsize == ctypes.sizeof(maps.PortSlot)
    for name in ("ifindex", "xc", "side", "state"):
        assert PORT_SLOT_DTYPE.fields[name][1] == getattr(maps.PortSlot, name).offset, name
    counters = maps.PortSlot.counters.offset
    for name, _ in maps.PortCounters._fields_:
        assert PORT_SLOT_DTYPE.fields[name][1] == counters + getattr(maps.PortCounters, name).offset, name


def test_port_states_are_the_programs() -> None:
    # The enum xc_port_state of the compiled object's BTF, as test_contract.py (which reads BTF and
    # checks every other shared constant) sees it: no parsing of the C source.
    from test_contract import btf_of_built_object

    assert btf_of_built_object().enumerators("xc_port_state") == {
        "PORT_ACTIVE": maps.PORT_ACTIVE,
        "PORT_DRAINING": maps.PORT_DRAINING,
        "PORT_LEAVING": maps.PORT_LEAVING,
    }
