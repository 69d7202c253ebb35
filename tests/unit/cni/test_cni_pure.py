"""Pure pieces of the plugin (no kernel): host-end names, the route rule, the reader API."""

from pathlib import Path

from cni_records import l2_record

from flexsfc.cni import state
from flexsfc.cni.commands import host_name
from flexsfc.cni.ipam import IpamResult
from flexsfc.cni.result import route_plan


def test_host_names_are_short_stable_and_distinct() -> None:
    names = {host_name(f"container-{i}", "eth1") for i in range(1000)}
    assert len(names) == 1000 and all(n.startswith("fx") and len(n) == 12 for n in names)
    assert host_name("c", "eth1") == host_name("c", "eth1") != host_name("c", "eth2")
    assert len(host_name("c" * 64, "a" * 15, entropy="abc")) == 15


def test_route_without_gw_takes_its_family_gateway_or_becomes_a_link_route() -> None:
    ipam = IpamResult(
        ips=({"address": "10.0.0.2/24", "gateway": "10.0.0.1"}, {"address": "fd00::2/64"}),
        routes=({"dst": "10.1.0.0/16"}, {"dst": "fd01::/64"}, {"dst": "10.2.0.0/16", "gw": "10.0.0.9"}),
    )
    assert route_plan(ipam) == [("10.1.0.0/16", "10.0.0.1"), ("fd01::/64", None), ("10.2.0.0/16", "10.0.0.9")]


def test_reader_api_round_trip(tmp_path: Path) -> None:
    record = l2_record()
    assert state.load_records(str(tmp_path / "absent")) == []
    state.write_record(str(tmp_path), record)
    (tmp_path / ".lock").write_text("")
    assert state.load_records(str(tmp_path)) == [record]
    assert state.record_for("c1", "eth1", state_dir=str(tmp_path)) == record
    assert state.record_for("c1", "eth2", state_dir=str(tmp_path)) is None
    state.remove_record(str(tmp_path), "c1", "eth1")
    assert state.load_records(str(tmp_path)) == []
