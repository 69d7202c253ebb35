"""An agent killed at every step of a replica update: a restarted agent converges, traffic follows.

The update (side B of one cross-connection): r0 RUNNING -> TERMINATING (draining), r1 leaves the
picture (its port goes, its veth stays), r2 and r3 start RUNNING. A child process opens the pinned
data plane and applies it with the reconciler, with every write it makes to the kernel (map update or
delete, a port slot or state byte written through mmap, a filter attached or detached, a Maglev
descriptor published) counted as a step; at step k it SIGKILLs itself before the write. For every k,
a fresh Dataplane and AgentLoop (the restarted agent) then reconcile the same picture, and must leave
exactly what an uninterrupted update leaves: the Maglev table a fresh build of the active replicas,
our filter with this program and the port's tag on every port, none on r1, every slot's state as its
record says; and new flows reach r2 and r3 only. Without the first pass's convergence a kill between
a port record and the table swap leaves the old table (r0 and r1) live for good.

Run as a script, this file is the child: `python test_crash_converge.py HOST_NETNS PIN_DIR PICTURE K`.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from ipaddress import ip_interface
from pathlib import Path
from typing import Any

import pytest

from flexsfc.agent.reconciler import Reconciler
from flexsfc.agent.types import NfReplica, ReplicaPhase, dataplane_name
from flexsfc.dataplane import libbpf, maps, tcfilter
from flexsfc.dataplane.facade import TC_HANDLE, TC_PRIORITY, Dataplane
from flexsfc.dataplane.maglev import build_table
from flexsfc.dataplane.ports import states
from flexsfc.dataplane.ports.table import PortTable
from flexsfc.dataplane.tables import MaglevTables
from flexsfc.model.records import AttachmentRecord
from flexsfc.model.types import CrossConnectionSpec, Mode, Side, XcSide
from flexsfc.util.netns import in_netns

pytestmark = pytest.mark.root

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dataplane"))
from dp_traffic import ReplicaServer, UdpFlows, configure, resolve  # noqa: E402

CLIENT_IP, SERVER_IP = "10.31.0.1", "10.31.0.2"
CLIENT_MAC, SERVER_MAC = "02:c1:00:00:31:01", "02:5e:00:00:31:01"
XC = CrossConnectionSpec(
    name="crash-xc",
    chain="crash",
    namespace="test",
    side_a=XcSide("client", "eth1", "net-a", Mode.L3, CLIENT_MAC, (ip_interface(f"{CLIENT_IP}/24"),)),
    side_b=XcSide("server", "eth1", "net-b", Mode.L3, SERVER_MAC, (ip_interface(f"{SERVER_IP}/24"),)),
)
R, T = ReplicaPhase.RUNNING, ReplicaPhase.TERMINATING
Phases = dict[str, ReplicaPhase]
# (before, after): a scale-out (nothing removed after the table swap: a kill just before the swap
# leaves every record as desired), and a mixed update (a drain, a removal, two additions).
UPDATES: dict[str, tuple[Phases, Phases]] = {
    "scale-out": ({"client": R, "r0": R, "r1": R}, {"client": R, "r0": R, "r1": R, "r2": R}),
    "mixed": ({"client": R, "r0": R, "r1": R}, {"client": R, "r0": T, "r2": R, "r3": R}),
}
SESSION_CAPACITY = 65536


def picture(ifindexes: dict[str, int], phases: dict[str, ReplicaPhase]) -> list[NfReplica]:
    """The agent's input: one replica per name, with its CNI record naming its host veth."""
    replicas = []
    for name, phase in phases.items():
        record = AttachmentRecord(
            container_id=f"c-{name}", ifname="eth1", netns=f"/run/netns/{name}",
            network="net-a" if name == "client" else "net-b", host_ifname=f"h-{name}",
            host_ifindex=ifindexes[name], mac=CLIENT_MAC if name == "client" else SERVER_MAC, mode="L3",
        )  # fmt: skip
        nf = "client" if name == "client" else "server"
        replicas.append(NfReplica(name, XC.namespace, name, nf, phase, (record,)))
    return replicas


# ---- the child: an agent applying the update, killed before its k-th write ---------------------------


def _counting(k: int) -> Callable[[], int]:
    """Wrap every kernel write the data plane makes; SIGKILL this process before the k-th one."""
    count = [0]

    def step() -> None:
        if count[0] == k:
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1

    def wrap(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            step()
            return original(*args, **kwargs)

        setattr(owner, name, wrapped)

    for owner, name in (
        (libbpf, "map_update"),
        (libbpf, "map_delete"),
        (libbpf, "tc_detach_ingress"),
        (tcfilter, "attach_ingress"),
        (states, "set_state"),
        (PortTable, "_write_slot"),
        (PortTable, "_clear_slot"),
        (MaglevTables, "_publish"),
    ):
        wrap(owner, name)
    return lambda: count[0]


def child(host_netns: str, pin_dir: str, ifindexes: dict[str, int], phases: dict[str, str], k: int) -> None:
    with in_netns(host_netns):
        dp = Dataplane(pin_dir, session_capacity=SESSION_CAPACITY)
        steps = _counting(k)  # after opening: only the update's writes count
        Reconciler(dp).reconcile([XC], picture(ifindexes, {n: ReplicaPhase(p) for n, p in phases.items()}))
        print(steps())  # the whole update took this many steps (never reached when killed)


# ---- the test --------------------------------------------------------------------------------------


@dataclass
class Chain:
    host: str
    pin_dir: str
    ifindexes: dict[str, int]
    client_ns: str


def restart_and_sync(chain: Chain, phases: dict[str, ReplicaPhase]) -> list[str]:
    """A restarted agent: a fresh Dataplane on the pins and a loop's first pass. Returns its repairs."""
    from flexsfc.agent.locked import LockedDataplane
    from flexsfc.agent.loop import AgentLoop

    dp = Dataplane(chain.pin_dir, session_capacity=SESSION_CAPACITY)
    try:
        loop = AgentLoop(LockedDataplane(dp))  # type: ignore[arg-type]
        loop.set_cross_connections([XC])
        loop.set_replicas(picture(chain.ifindexes, phases))
        loop.sync("restart")
        assert loop.converged
        check_converged(dp, chain, phases)
        return loop.repairs
    finally:
        dp.close()


def check_converged(dp: Dataplane, chain: Chain, phases: dict[str, ReplicaPhase]) -> None:
    """What an uninterrupted update leaves: records, slots, filters and both tables."""
    state = {R: maps.PORT_ACTIVE, T: maps.PORT_DRAINING}
    prog_id = libbpf.prog_id(dp.prog_fd)
    mode = maps.MODE_PEER if dp.redirect_mode.value == "peer" else maps.MODE_REDIRECT
    for name, ifindex in chain.ifindexes.items():
        if name not in phases:
            assert libbpf.tc_query_ingress(ifindex, TC_HANDLE, TC_PRIORITY) is None, f"{name}: filter left"
            continue
        assert libbpf.tc_query_ingress(ifindex, TC_HANDLE, TC_PRIORITY) == prog_id, f"{name}: no filter"
        tag = tcfilter.ingress_tag(ifindex, handle=TC_HANDLE, priority=TC_PRIORITY)
        assert tag == maps.filter_tag(dp.port_slot(ifindex), mode), f"{name}: wrong tag"
        assert set(dp.port_slot_states(ifindex)) == {state[phases[name]]}, f"{name}: slot state"
    for side, names in ((Side.A, ["client"]), (Side.B, [n for n in phases if n != "client"])):
        active = sorted((n, chain.ifindexes[n]) for n in names if phases[n] == R)
        expected = [
            active[i][1]
            for i in build_table([n for n, _ in active], len(dp.maglev_table(dataplane_name(XC), side)))
        ]
        assert dp.maglev_table(dataplane_name(XC), side) == expected, f"side {side.value}: stale Maglev table"
        listed = {p.ifindex for p in dp.replicas(dataplane_name(XC), side)}
        assert listed == {chain.ifindexes[n] for n in names}


def check_traffic(chain: Chain, phases: Phases, tag: str) -> None:
    """New flows reach the active replicas only, each of them some."""
    flows = UdpFlows(chain.client_ns, SERVER_IP)
    try:
        ids = flows.open(48, tag)
        assert flows.round(ids) == 0
        seen = {flows.replica_of(f) for f in ids}
        assert seen == {n for n, p in phases.items() if n != "client" and p == R}, seen
    finally:
        flows.close()


@pytest.fixture
def chain(netns_factory, tmp_path) -> Iterator[tuple[Chain, dict[str, ReplicaServer]]]:
    from flexsfc.testing.netlab import Host, remove_pin_dir, unique_pin_dir

    host_ns = netns_factory("crhost")
    pin_dir = unique_pin_dir("crash")
    servers: dict[str, ReplicaServer] = {}
    with ExitStack() as stack:
        stack.callback(remove_pin_dir, pin_dir)
        stack.enter_context(in_netns(host_ns))
        host = Host(host_ns)
        ifindexes = {}
        client_ns = netns_factory("crclient")
        port = host.add_port(client_ns, mac=CLIENT_MAC)
        configure(client_ns, port.pod_ifname, f"{CLIENT_IP}/24")
        ifindexes["client"] = port.ifindex
        namespaces = {}
        for name in ("r0", "r1", "r2", "r3"):
            ns = netns_factory(name)
            port = host.add_port(ns, mac=SERVER_MAC)
            configure(ns, port.pod_ifname, f"{SERVER_IP}/24")
            ifindexes[name], namespaces[name] = port.ifindex, ns
            servers[name] = ReplicaServer(ns, name)
            stack.callback(servers[name].stop)
        result = Chain(host_ns, pin_dir, ifindexes, client_ns)
        dp = Dataplane(pin_dir, session_capacity=SESSION_CAPACITY, seed=4242)
        stack.callback(lambda: Dataplane(pin_dir).destroy())
        dp.close()
        restart_and_sync(result, dict.fromkeys(ifindexes, R))  # every replica resolves the client
        for name in namespaces:
            resolve(namespaces[name], CLIENT_IP)
        resolve(client_ns, SERVER_IP)
        yield result, servers


def run_child(chain: Chain, phases: Phases, k: int) -> subprocess.CompletedProcess[str]:
    args = [chain.host, chain.pin_dir, json.dumps(chain.ifindexes), json.dumps(phases), str(k)]
    return subprocess.run(
        [sys.executable, __file__, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("update", sorted(UPDATES))
def test_killed_at_every_step_of_a_replica_update_a_restart_converges(chain, update: str) -> None:
    chain, _servers = chain
    before, after = UPDATES[update]
    restart_and_sync(chain, before)
    full = run_child(chain, after, -1)  # no kill: how many steps the update takes
    assert full.returncode == 0, full.stderr
    steps = int(full.stdout.split()[-1])
    assert steps >= 5, steps  # a port added (records, slot, filter) and a swap at least
    repaired_at: list[int] = []
    started = time.monotonic()
    for k in range(steps):
        restart_and_sync(chain, before)  # back to the state before the update (itself a restart)
        killed = run_child(chain, after, k)
        assert killed.returncode == -signal.SIGKILL, (k, killed.returncode, killed.stderr)
        if restart_and_sync(chain, after):
            repaired_at.append(k)
        check_traffic(chain, after, f"{update}-{k}-")
    # Some kill points leave what only the convergence repairs (the stale table among them).
    assert repaired_at, "no kill point needed a repair: the test does not exercise convergence"
    print(f"{steps} kill points in {time.monotonic() - started:.1f} s; repaired after {repaired_at}")


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5]))
