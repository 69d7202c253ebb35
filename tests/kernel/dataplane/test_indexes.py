"""The facade's in-memory indexes (ports and neighbours per side, free xc ids, port slots, pool regions)
against the pinned maps: a fresh process reading the pins must see what the writer's indexes say,
and the capacity of MAX_XC - 1 cross-connections is reachable (real kernel, real maps).
"""

import pytest

from flexsfc.dataplane import libbpf, maps
from flexsfc.dataplane.api import Neighbour, ReplicaPort, ReplicaState
from flexsfc.dataplane.facade import Dataplane, DataplaneError
from flexsfc.model.types import Side

pytestmark = pytest.mark.root


def _view(dp: Dataplane) -> dict:
    """Everything the indexes answer, per cross-connection and side."""
    out = {}
    for name in sorted(dp.list_xcs()):
        for side in Side:
            out[(name, side)] = (
                dp.replicas(name, side),
                sorted(dp.neighbours(name, side), key=lambda n: n.ip),
                dp.maglev_table(name, side),
            )
    return out, dp.list_xcs(), sorted(dp.port_stats())


def test_indexes_match_the_pins_after_every_kind_of_write(host, dataplane: Dataplane, pin_dir: str) -> None:
    ports = [host.add_port().ifindex for _ in range(6)]
    dp = dataplane
    for name in ("one", "two", "three"):
        dp.ensure_xc(name, maglev_table_size=251)
    dp.set_replicas("one", Side.A, [ReplicaPort(ports[0], "p0")])
    dp.set_replicas("one", Side.B, [ReplicaPort(ports[1], "p1"), ReplicaPort(ports[2], "p2")])
    dp.set_replicas("two", Side.B, [ReplicaPort(ports[3], "p3")])
    dp.set_neighbours(
        "one", Side.A, [Neighbour("10.0.0.1", "02:00:00:00:00:01"), Neighbour("fd00::1", "02:00:00:00:00:01")]
    )
    dp.set_neighbours("two", Side.B, [Neighbour("10.0.0.2", "02:00:00:00:00:02")])
    # Replace, drain, remove, re-program with a new MAC, delete a cross-connection, reuse its id.
    dp.set_replicas(
        "one", Side.B, [ReplicaPort(ports[2], "p2", ReplicaState.DRAINING), ReplicaPort(ports[4], "p4")]
    )
    dp.set_neighbours("one", Side.A, [Neighbour("10.0.0.1", "02:00:00:00:00:09")])
    two_id = dp.list_xcs()["two"]
    dp.delete_xc("two")
    assert dp.ensure_xc("four", maglev_table_size=251) == two_id  # smallest free id, as before
    dp.set_replicas("four", Side.A, [ReplicaPort(ports[3], "p3"), ReplicaPort(ports[5], "p5")])
    dp.set_neighbours("four", Side.A, [Neighbour("10.0.0.4", "02:00:00:00:00:04")])

    reader = Dataplane(pin_dir)
    try:
        assert reader.reopened
        assert _view(reader) == _view(dp)
        assert reader.neighbours("one", Side.A) == [Neighbour("10.0.0.1", "02:00:00:00:00:09")]
        assert reader.neighbours("three", Side.B) == []
        # Pool regions come back from the registry as the writer allocated them.
        regions = {(x.pool_base, x.table_size) for x in map(dp.xc_layout, dp.list_xcs())}
        assert {(x.pool_base, x.table_size) for x in map(reader.xc_layout, reader.list_xcs())} == regions
    finally:
        reader.close()
    neighbours = libbpf.map_dump_batch(dp.map_fd("neighbours"), maps.NeighKey, maps.NeighVal, 100)
    assert len(neighbours) == 2  # one/A (fd00::1 was dropped), four/A; two's went with it


def test_capacity_is_max_xc_minus_one_and_freed_ids_and_pool_come_back(dataplane: Dataplane) -> None:
    dp = dataplane
    capacity = maps.MAX_XC - 1
    assert capacity >= 1023
    for i in range(capacity):
        dp.ensure_xc(f"x{i}", maglev_table_size=251)
    with pytest.raises(DataplaneError, match=f"at most {capacity} per node"):
        dp.ensure_xc("one-too-many", maglev_table_size=251)
    middle = dp.xc_layout("x500")
    dp.delete_xc("x500")
    again = dp.ensure_xc("again", maglev_table_size=251)
    assert (again, dp.xc_layout("again").pool_base) == (middle.id, middle.pool_base)
    # The descriptor array covers the highest id: both sides of the last xc are published, empty.
    last = max(dp.list_xcs().values())
    assert last == capacity
    assert dp.maglev_table(f"x{capacity - 1}", Side.B) == []


def test_neighbour_capacity_is_checked_up_front(dataplane: Dataplane) -> None:
    dp = dataplane
    dp.ensure_xc("n", maglev_table_size=251)
    too_many = [Neighbour(f"fd00::{i:x}", "02:00:00:00:00:01") for i in range(1, maps.MAX_NEIGHBOURS + 2)]
    with pytest.raises(DataplaneError, match="programmed neighbours one node holds"):
        dp.set_neighbours("n", Side.A, too_many)
    assert dp.neighbours("n", Side.A) == []
