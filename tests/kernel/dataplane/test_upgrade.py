"""Upgrading the pinned program under traffic (flexsfc.dataplane.upgrade).

An "old" program is built from a scratch copy of bpf/ with one edit (build.SOURCE points at it, as in
test_build.py) and pinned with ports attached; UDP flows then run through it, round after round,
while a writer of this version opens the pins with upgrade=True. Every packet must be answered (the
filters are replaced in place, port by port), every port must run the new program, and sessions
must survive when their map's layout did not change (flows of a draining replica stay on it). A
changed session layout drops the sessions (counted) and the flows re-hash to the same replicas; a
changed layout of a control map is refused before anything is touched, and the old program keeps
forwarding.
"""

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dp_traffic import Background, ReplicaServer, UdpFlows, configure, resolve

from flexsfc.dataplane import build, libbpf, maps, upgrade
from flexsfc.dataplane.api import DataplaneError, Neighbour, ReplicaPort, ReplicaState
from flexsfc.dataplane.facade import TC_HANDLE, TC_PRIORITY, Dataplane
from flexsfc.dataplane.pins import RECOUNT_MARK, destroy_pinned
from flexsfc.dataplane.stats import SessionReader
from flexsfc.dataplane.upgrade import UpgradeRefused
from flexsfc.model.types import Side

pytestmark = [pytest.mark.root, pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")]

CLIENT_IP, SERVER_IP = "10.41.0.1", "10.41.0.2"
CLIENT_MAC, SERVER_MAC = "02:c1:00:00:41:01", "02:5e:00:00:41:01"
XC = "xc-upgrade"
ENTRY = "__u32 tag = skb->tc_classid;\n"


def _code_change(tree: Path) -> None:
    """Different instructions, same behaviour: a tag no filter carries."""
    entry = tree / build.SOURCE.name
    text = entry.read_text()
    assert ENTRY in text
    entry.write_text(text.replace(ENTRY, ENTRY + "\tif (tag == 0xdeadbeef)\n\t\treturn TC_ACT_SHOT;\n", 1))


def _session_layout_change(tree: Path) -> None:
    """The IPv4 session map with other flags: another map to the kernel, the same to the program."""
    maps_h = tree / "lib" / "maps.h"
    text = maps_h.read_text()
    end = text.index("} sessions SEC")
    start = text.rindex("struct {\n", 0, end) + len("struct {\n")
    block = text[start:end]
    # Flags each kind of hash accepts: per-CPU LRU lists for an LRU hash, no preallocation otherwise.
    flag = "BPF_F_NO_COMMON_LRU" if "BPF_MAP_TYPE_LRU_HASH" in block else "BPF_F_NO_PREALLOC"
    assert "map_flags" not in block
    maps_h.write_text(text[:start] + f"\t__uint(map_flags, {flag});\n" + text[start:])
    _code_change(tree)


def _control_layout_change(tree: Path) -> None:
    consts = tree / "lib" / "consts.h"
    text = consts.read_text()
    assert "MAX_NEIGHBOURS = 8192," in text
    consts.write_text(text.replace("MAX_NEIGHBOURS = 8192,", "MAX_NEIGHBOURS = 4096,", 1))


@dataclass
class Chain:
    dp: Dataplane
    client_ns: str
    ports: dict[str, int]  # name -> host ifindex


@pytest.fixture
def old_program(tmp_path, monkeypatch) -> Callable[[Callable[[Path], None]], None]:
    """Point the build at an edited copy of bpf/ (until the test calls it back with None)."""

    def use(edit: Callable[[Path], None] | None) -> None:
        if edit is None:
            monkeypatch.undo()
            return
        tree = tmp_path / "bpf"
        shutil.copytree(build.SOURCE.parent, tree, ignore=shutil.ignore_patterns("*.o", "*.stamp", ".*"))
        edit(tree)
        monkeypatch.setattr(build, "SOURCE", tree / build.SOURCE.name)

    return use


def _chain(host, pin_dir: str, netns_factory) -> Iterator[Chain]:
    client_ns = netns_factory("upclient")
    client = host.add_port(client_ns, mac=CLIENT_MAC)
    configure(client_ns, client.pod_ifname, f"{CLIENT_IP}/24")
    dp = Dataplane(pin_dir, session_capacity=65536, seed=777)
    servers = []
    try:
        dp.ensure_xc(XC)
        dp.set_replicas(XC, Side.A, [ReplicaPort(client.ifindex, "client")])
        dp.set_neighbours(XC, Side.A, [Neighbour(CLIENT_IP, CLIENT_MAC)])
        dp.set_neighbours(XC, Side.B, [Neighbour(SERVER_IP, SERVER_MAC)])
        ports = {"client": client.ifindex}
        namespaces = []
        for name in ("r0", "r1", "r2"):
            ns = netns_factory(name)
            port = host.add_port(ns, mac=SERVER_MAC)
            configure(ns, port.pod_ifname, f"{SERVER_IP}/24")
            servers.append(ReplicaServer(ns, name))
            ports[name] = port.ifindex
            namespaces.append(ns)
        dp.set_replicas(XC, Side.B, [ReplicaPort(ports[n], n) for n in ("r0", "r1", "r2")])
        for ns in namespaces:
            resolve(ns, CLIENT_IP)
        resolve(client_ns, SERVER_IP)
        yield Chain(dp, client_ns, ports)
    finally:
        for server in servers:
            server.stop()
        dp.close()
        destroy_pinned(pin_dir)  # whatever version the pins are now


def _attached_prog_ids(chain: Chain) -> set[int | None]:
    return {libbpf.tc_query_ingress(i, TC_HANDLE, TC_PRIORITY) for i in chain.ports.values()}


def _upgrade_under_traffic(chain: Chain, pin_dir: str, flows: UdpFlows, ids: list[bytes]) -> Dataplane:
    with Background(flows, ids) as background:
        background.wait_rounds(2)
        sent, started = flows.sent, time.monotonic()
        new = Dataplane(pin_dir, upgrade=True)
        took, during = time.monotonic() - started, flows.sent - sent
        background.wait_rounds(3)
    assert background.lost == 0, f"{background.lost} of {flows.sent} packets lost"
    print(f"upgrade took {took:.2f} s with {during} packets sent meanwhile; {flows.sent} sent, 0 lost")
    return new


def test_a_changed_program_is_upgraded_under_traffic_keeping_sessions(
    host, pin_dir, netns_factory, old_program
) -> None:
    old_program(_code_change)
    for chain in _chain(host, pin_dir, netns_factory):
        old_program(None)  # this version's program from here on
        (old_id,) = _attached_prog_ids(chain)
        flows = UdpFlows(chain.client_ns, SERVER_IP)
        try:
            ids = flows.open(60, "up")
            assert flows.round(ids) == 0
            placed = {f: flows.replica_of(f) for f in ids}
            # r0 drains: its flows now stay on it only through their sessions.
            chain.dp.set_replicas(
                XC,
                Side.B,
                [ReplicaPort(chain.ports["r0"], "r0", ReplicaState.DRAINING)]
                + [ReplicaPort(chain.ports[n], n) for n in ("r1", "r2")],
            )
            on_r0 = [f for f in ids if placed[f] == "r0"]
            assert on_r0
            sessions = chain.dp.session_count(XC)
            new = _upgrade_under_traffic(chain, pin_dir, flows, ids)
            try:
                report = new.upgrade_report
                assert report is not None and report.upgraded and not report.replaced
                assert "sessions" in report.kept and sorted(report.ports) == sorted(chain.ports.values())
                new_id = libbpf.prog_id(new.prog_fd)
                assert new_id != old_id and new_id == report.new_prog_id
                assert _attached_prog_ids(chain) == {new_id}
                # Sessions kept: every flow, those of the draining r0 too, stayed on its replica.
                assert {f: flows.replica_of(f) for f in ids} == placed
                assert new.session_count(XC) == sessions
                # Opening again finds the same program: nothing more to do.
                again = Dataplane(pin_dir, upgrade=True)
                assert again.upgrade_report is not None and not again.upgrade_report.upgraded
                assert libbpf.prog_id(again.prog_fd) == new_id
                again.close()
            finally:
                new.close()
        finally:
            flows.close()


def test_a_changed_session_layout_drops_the_sessions_and_flows_rehash_in_place(
    host, pin_dir, netns_factory, old_program
) -> None:
    old_program(_session_layout_change)
    for chain in _chain(host, pin_dir, netns_factory):
        old_program(None)
        flows = UdpFlows(chain.client_ns, SERVER_IP)
        try:
            ids = flows.open(60, "sl")
            assert flows.round(ids) == 0
            placed = {f: flows.replica_of(f) for f in ids}
            new = _upgrade_under_traffic(chain, pin_dir, flows, ids)
            try:
                report = new.upgrade_report
                assert report is not None and report.upgraded
                assert report.replaced["sessions"] >= len(ids) and "sessions" not in report.kept
                kept = {"ports", "port_slots", "maglev_pool", "maglev_tables", "xc_registry"}
                assert kept <= set(report.kept)
                assert _attached_prog_ids(chain) == {libbpf.prog_id(new.prog_fd)}
                # The Maglev tables were kept: the re-hashed flows land where they were.
                assert {f: flows.replica_of(f) for f in ids} == placed
                assert new.session_count(XC) >= len(ids)  # created again in the new map
            finally:
                new.close()
        finally:
            flows.close()


def _dying_after_one(repin: Callable[[int, str], None]) -> Callable[[int, str], None]:
    """`repin` that re-pins one map, then fails as a killed writer would stop."""
    calls: list[str] = []

    def dying_repin(fd: int, path: str) -> None:
        if calls:
            raise DataplaneError("killed")
        calls.append(path)
        repin(fd, path)

    return dying_repin


def test_an_upgrade_killed_between_re_pins_leaves_counts_that_match_the_tables(
    host, pin_dir, netns_factory, old_program, monkeypatch
) -> None:
    """A writer dying after the first replaced map is re-pinned: the next writer's counts equal a
    walk of the tables (the counters are not left counting the table they replaced)."""
    old_program(_session_layout_change)
    for chain in _chain(host, pin_dir, netns_factory):
        old_program(None)
        flows = UdpFlows(chain.client_ns, SERVER_IP)
        try:
            ids = flows.open(40, "ki")
            assert flows.round(ids) == 0
            assert chain.dp.session_count(XC) >= len(ids)
            repin = upgrade._repin
            monkeypatch.setattr(upgrade, "_repin", _dying_after_one(repin))
            with pytest.raises(DataplaneError, match="killed"):
                Dataplane(pin_dir, upgrade=True)
            monkeypatch.setattr(upgrade, "_repin", repin)
            new = Dataplane(pin_dir, upgrade=True)
            try:
                walked = SessionReader(new._pins).counts_by_id
                assert new.session_counts_by_id() == walked()
                assert flows.round(ids) == 0  # sessions created again, and counted
                assert new.session_counts_by_id() == walked() and new.session_count(XC) >= len(ids)
                assert not os.path.exists(os.path.join(pin_dir, RECOUNT_MARK))
            finally:
                new.close()
        finally:
            flows.close()


def test_a_changed_control_map_layout_is_refused_and_the_old_program_keeps_forwarding(
    host, pin_dir, netns_factory, old_program, monkeypatch
) -> None:
    old_program(_control_layout_change)
    monkeypatch.setitem(maps.MAP_CAPACITIES, "neighbours", 4096)
    for chain in _chain(host, pin_dir, netns_factory):
        old_program(None)
        (old_id,) = _attached_prog_ids(chain)
        flows = UdpFlows(chain.client_ns, SERVER_IP)
        try:
            ids = flows.open(30, "cl")
            assert flows.round(ids) == 0
            with pytest.raises(UpgradeRefused, match="neighbours"):
                Dataplane(pin_dir, upgrade=True)
            assert _attached_prog_ids(chain) == {old_id}
            assert flows.round(ids) == 0  # still forwarding, with the old program
        finally:
            flows.close()
