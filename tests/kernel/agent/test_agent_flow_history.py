"""`flexsfc flows` through the node agent: the real `flexsfc agent --local --flow-history N` process
owns a pinned data plane; UDP flows cross a cross-connection of it to three replicas in network
namespaces; then, as an operator does on a cluster node (`kubectl exec` into the agent pod):
- `flexsfc flows --agent-socket <flows.sock> --last N --json`: the agent's history names, for every
  flow, the replica its packets reached (the replica's own answer, and the per-port counters: each
  replica was delivered exactly the packets of the flows the history gives it);
- `flexsfc flows --pin-dir <the agent's pins> -n K --json`: the next K events, live, the same way.

The agent in local mode learns no chains (the cluster's agent reconciles them from the API server),
so the test opens the agent's pin directory as a second writer only to build its topology (the
cross-connection, its replicas and neighbours); everything it reads goes through the agent and the
CLI. Everything it creates goes even when it fails: the agent process (stopped by its PID), its
socket directory, the namespaces and veths (the kernel tests' `host` fixture), the pins (`pin_dir`).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flexsfc.agent.flow_history import HistoryUnavailable, fetch
from flexsfc.dataplane import maps
from flexsfc.dataplane.api import Neighbour, ReplicaPort
from flexsfc.dataplane.events import stream_lease
from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.types import Side
from flexsfc.testing.netlab import Host

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dataplane"))
from dp_traffic import UDP_PORT, ReplicaServer, UdpFlows, configure

pytestmark = pytest.mark.root

FLEXSFC = Path(sys.executable).with_name("flexsfc")
XC = "xc-agent-history"
CLIENT_IP, SERVER_IP = "10.41.0.1", "10.41.0.2"
CLIENT_MAC, SERVER_MAC = "02:c1:00:00:41:01", "02:5e:00:00:41:01"
REPLICAS = ("r0", "r1", "r2")
HISTORY = 500


class Agent:
    """`flexsfc agent --local` on its own pins, state, sockets; stopped by the PID it was started with."""

    def __init__(self, root: Path, pin_dir: str) -> None:
        self.root, self.pin_dir = root, pin_dir
        self.cni_socket = root / "cni.sock"
        self.flows_socket = root / "flows.sock"  # the default: next to the CNI socket
        self.log = root / "agent.log"
        (root / "cni.conf").write_text("{}")  # the machine's /etc/flexsfc/cni.conf never counts
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "FLEXSFC_CNI_CONF": str(root / "cni.conf"),
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},  # a checkout run from elsewhere
        }
        command = [
            str(FLEXSFC), "agent", "--local", "--pin-dir", pin_dir, "--state-dir", str(root / "state"),
            "--socket", str(self.cni_socket), "--delete-queue", str(root / "queue"),
            "--session-capacity", "4096", "--flow-history", str(HISTORY),
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(HistoryUnavailable, OSError):
                fetch(str(self.flows_socket))
                return
            time.sleep(0.05)
        raise AssertionError(f"agent serves no flow history on {self.flows_socket}:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # by PID: only the process this test started
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def agent(host: Host, pin_dir: str) -> Iterator[Agent]:
    # Started from the test's private host namespace (where `host` put this thread): nothing of it
    # touches the machine's. Short root: a unix socket path has at most 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="fxh"))
    agent = Agent(root, pin_dir)
    try:
        agent.wait_serving()
        yield agent
    finally:
        agent.stop()
        shutil.rmtree(root, ignore_errors=True)


def _flows_cli(*args: str, timeout: float = 60) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(FLEXSFC), "flows", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _client_sport(event: dict[str, Any]) -> int:
    flow = event["flow"]
    return int(flow["sport"] if flow["src"] == CLIENT_IP else flow["dport"])


def _static_neighbour(netns: str, ip: str, mac: str, ifname: str) -> None:
    # No ARP on the wire while the counters are compared: every packet delivered is a flow's.
    subprocess.run(
        ["ip", "-n", netns, "neigh", "replace", ip, "lladdr", mac, "dev", ifname, "nud", "permanent"],
        check=True,
    )


def _delivered(dp: Dataplane, ports: dict[str, int]) -> dict[str, int]:
    stats = dp.port_stats()
    return {
        name: stats[ifindex].to_port_packets if ifindex in stats else 0 for name, ifindex in ports.items()
    }


def test_flows_last_through_the_agent_and_live_on_its_pins_name_each_flows_replica(
    host: Host, agent: Agent, netns_factory: Any, tmp_path: Path
) -> None:
    # The second writer: the agent has these pins open and created them (this open loads nothing).
    dp = Dataplane(agent.pin_dir)
    servers: dict[str, ReplicaServer] = {}
    flows: UdpFlows | None = None
    try:
        assert dp.reopened
        client_ns = netns_factory("hclient")
        client = host.add_port(client_ns, mac=CLIENT_MAC)
        configure(client_ns, client.pod_ifname, f"{CLIENT_IP}/24")
        _static_neighbour(client_ns, SERVER_IP, SERVER_MAC, client.pod_ifname)
        ports: dict[str, int] = {}
        for name in REPLICAS:
            ns = netns_factory(f"h{name}")
            port = host.add_port(ns, mac=SERVER_MAC)
            configure(ns, port.pod_ifname, f"{SERVER_IP}/24")
            _static_neighbour(ns, CLIENT_IP, CLIENT_MAC, port.pod_ifname)
            servers[name] = ReplicaServer(ns, name)
            ports[name] = port.ifindex
        dp.ensure_xc(XC)
        dp.set_replicas(XC, Side.A, [ReplicaPort(client.ifindex, "client")])
        dp.set_replicas(XC, Side.B, [ReplicaPort(ifindex, name) for name, ifindex in ports.items()])
        dp.set_neighbours(XC, Side.A, [Neighbour(CLIENT_IP, CLIENT_MAC)])
        dp.set_neighbours(XC, Side.B, [Neighbour(SERVER_IP, SERVER_MAC)])
        assert stream_lease(agent.pin_dir)[1] == 1  # the agent's history is the stream's reader

        # 1. Through the agent's history socket.
        flows = UdpFlows(client_ns, SERVER_IP)
        before = _delivered(dp, ports)
        ids = flows.open(12, "h")
        assert flows.round(ids) == 0 and flows.round(ids) == 0
        after = _delivered(dp, ports)
        sport = {flows.sockets[f].getsockname()[1]: f for f in ids}
        time.sleep(0.5)  # the agent's reader polls every 0.2 s
        history = _flows_cli(
            "--agent-socket", str(agent.flows_socket), "--last", str(HISTORY), "--json",
            "--kind", "created", "--proto", "udp", "--port", str(UDP_PORT),
        )  # fmt: skip
        replica_of = {_client_sport(e): e["b"]["pod"] for e in history}
        assert set(replica_of) == set(sport), history
        for port, flow in sport.items():
            assert replica_of[port] == flows.replica_of(flow)  # the replica that answered
        for event in history:
            assert event["xc"] == XC and event["a"]["ifindex"] == client.ifindex
            assert event["b"]["ifindex"] == ports[event["b"]["pod"]]
        # Per-port counters: two rounds, one datagram per flow each, nothing else delivered.
        for name in REPLICAS:
            assert after[name] - before[name] == 2 * sum(pod == name for pod in replica_of.values()), (
                name,
                before,
                after,
                replica_of,
            )
        assert len(set(replica_of.values())) >= 2  # 12 flows over 3 replicas
        # --last counts matching events: the newest ones, in order.
        newest = _flows_cli(
            "--agent-socket", str(agent.flows_socket), "--last", "3", "--json", "--kind", "created"
        )
        assert [_client_sport(e) for e in newest] == [_client_sport(e) for e in history[-3:]]

        # 2. Live on the agent's pins, as `kubectl exec <agent pod> -- flexsfc flows --pin-dir ...`.
        live_count = 6
        reader = subprocess.Popen(
            [
                str(FLEXSFC), "flows", "--pin-dir", agent.pin_dir, "-n", str(live_count), "--json",
                "--kind", "created", "--proto", "udp", "--port", str(UDP_PORT),
                "--state-dir", str(tmp_path / "no-local-runtime"), "--duration", "30",
            ],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while stream_lease(agent.pin_dir)[1] < 2:  # the agent's history and this reader
                assert reader.poll() is None, reader.communicate()
                assert time.monotonic() < deadline, "flexsfc flows did not attach"
                time.sleep(0.05)
            time.sleep(0.3)  # the history yields the ring to it (it polls every 0.05 s)
            before = _delivered(dp, ports)
            more = flows.open(live_count, "live")
            assert flows.round(more) == 0
            after = _delivered(dp, ports)
            out, err = reader.communicate(timeout=30)
        finally:
            if reader.poll() is None:
                reader.kill()  # by PID: the reader this test started
                reader.wait()
        assert reader.returncode == 0, err
        live = [json.loads(line) for line in out.splitlines() if line.strip()]
        live_sport = {flows.sockets[f].getsockname()[1]: f for f in more}
        live_replica = {_client_sport(e): e["b"]["pod"] for e in live}
        assert set(live_replica) == set(live_sport), live
        for port, flow in live_sport.items():
            assert live_replica[port] == flows.replica_of(flow)
        for name in REPLICAS:
            assert after[name] - before[name] == sum(pod == name for pod in live_replica.values())

        # The ring has one consumer position: the history yielded it to that reader (its events are
        # the reader's, the reply names the gap) and records again once the reader is gone.
        time.sleep(0.3)
        again = flows.open(3, "again")
        assert flows.round(again) == 0
        time.sleep(0.5)
        result = subprocess.run(
            [
                str(FLEXSFC), "flows", "--agent-socket", str(agent.flows_socket), "--last", str(HISTORY),
                "--json", "--kind", "created", "--proto", "udp", "--port", str(UDP_PORT),
            ],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "yielded the stream to another reader" in result.stderr
        everything = [json.loads(line) for line in result.stdout.splitlines()]
        kept = [_client_sport(e) for e in everything]
        assert kept[: len(history)] == [_client_sport(e) for e in history]
        assert set(kept[len(history) :]) == {flows.sockets[f].getsockname()[1] for f in again}
        assert all(e["kind"] == maps.FlowEventKind.CREATED.name.lower() for e in everything)
    finally:
        if flows is not None:
            flows.close()
        for server in servers.values():
            server.stop()
        dp.close()  # the agent's pins: `pin_dir` removes them once the agent is gone
