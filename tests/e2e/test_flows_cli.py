"""`flexsfc flows` and `flexsfc sessions` against a local runtime, as a user runs them.

A transparent-bridge firewall with three replicas between a client and a server; 12 UDP flows with
fixed source ports from the client pod (the server has no listener: its kernel answers each datagram
with an ICMP port unreachable, which the cross-connections follow back to the flow's replica).
`flexsfc flows --follow --json` runs meanwhile. Checked:
- each flow's `created` event on the client-firewall cross-connection names a firewall replica, and
  that replica is the one the packets went through: the same flow's `created` event on the
  firewall-server cross-connection has it on side A (its bridge emitted them), and `flexsfc sessions`
  shows it;
- a scale-in to two replicas: the next packets of the removed replica's flows are reported moved,
  from it to a remaining replica (reason leaving or removed), and no other flow moves.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_local import FLEXSFC, LocalRuntime, bridge_chain_manifests

from flexsfc.dataplane.events import stream_lease
from flexsfc.local.scenario import in_pod, pod_netns, wait_ready, wait_settled

pytestmark = [pytest.mark.root, pytest.mark.slow]

FLOWS = 12
CLIENT_IP, SERVER_IP = "10.72.1.1", "10.72.1.2"
SPORT = 41000

MANIFESTS = bridge_chain_manifests("flows-chain", "fl", CLIENT_IP, SERVER_IP, firewall_replicas=3)

# Sends `packets` datagrams on each flow (fixed source ports: a second run continues the same flows).
SENDER = f"""
import socket, sys, time
packets = int(sys.argv[1])
socks = []
for i in range({FLOWS}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{CLIENT_IP}", {SPORT} + i))
    socks.append(s)
for _ in range(packets):
    for s in socks:
        try:
            s.sendto(b"flow", ("{SERVER_IP}", 9000))
        except OSError:
            pass  # an ICMP error reported on the socket
    time.sleep(0.05)
"""


def _send(netns: str, packets: int) -> None:
    subprocess.run(in_pod(netns, ["python3", "-c", SENDER, str(packets)]), check=True, timeout=30)


def _client_port(event: dict[str, Any]) -> int | None:
    flow = event["flow"]
    if not flow or flow["proto"] != "udp":
        return None
    for addr, port in ((flow["src"], flow["sport"]), (flow["dst"], flow["dport"])):
        if addr == CLIENT_IP and SPORT <= port < SPORT + FLOWS:
            return int(port)
    return None


def _nf(port: dict[str, Any] | None) -> str | None:
    return port["nf"] if port else None


def _pod(port: dict[str, Any] | None) -> str | None:
    return port["pod"] if port else None


class Follower:
    """`flexsfc flows --follow --json` in the background, stopped by its PID."""

    def __init__(self, runtime: LocalRuntime, *args: str) -> None:
        self.config = runtime.config
        argv = [FLEXSFC, "flows", "--follow", "--json", "--state-dir", runtime.config.state_dir, *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while stream_lease(self.config.pin_dir)[1] < 1:
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "flexsfc flows did not attach"
            time.sleep(0.1)

    def stop(self) -> list[dict[str, Any]]:
        time.sleep(0.5)
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=15)
        assert self.proc.returncode == 0, err
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_flows_reports_each_flows_replica_and_the_moves_of_a_scale_in(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    rt = local_runtime
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "chain.yaml").write_text(MANIFESTS)
    rt.up(manifests)
    wait_ready(rt.config)
    client_ns = pod_netns(rt.config, "client")

    follower = Follower(rt)
    try:
        _send(client_ns, 3)
        events = follower.stop()
    finally:
        follower.kill()
    created = [e for e in events if e["kind"] == "created" and _client_port(e) is not None]
    upstream = {_client_port(e): e for e in created if _nf(e["a"]) == "client"}
    downstream = {_client_port(e): e for e in created if _nf(e["a"]) == "firewall"}
    assert sorted(upstream) == list(range(SPORT, SPORT + FLOWS)), events
    replica = {}
    for port, event in upstream.items():
        assert _nf(event["b"]) == "firewall" and event["chain"] == "flows-chain"
        replica[port] = _pod(event["b"])
        # The packets went through that replica: its bridge sent them on to the server.
        assert _pod(downstream[port]["a"]) == replica[port]
        assert _nf(downstream[port]["b"]) == "server"
    assert len(set(replica.values())) >= 2  # 12 flows over 3 replicas
    assert any(e["kind"] == "icmp-error" for e in events)  # the server's port unreachables

    # The session table says the same.
    xc = upstream[SPORT]["xc"]
    shown = rt.cli("sessions", xc, "--json", "--state-dir", rt.config.state_dir, "--port", str(SPORT + 1))
    lines = [json.loads(line) for line in shown.stdout.splitlines()]
    assert lines[-1]["summary"]["shown"] == 1
    assert lines[0]["b"]["pod"] == replica[SPORT + 1]
    table = rt.cli("sessions", xc.split("/")[-1], "--state-dir", rt.config.state_dir, "--limit", "5")
    assert "5 shown (--limit 5)" in table.stdout and "confirmed session(s)" in table.stdout

    # Scale-in: one replica goes (the runtime picks which); its flows move, no other does.
    follower = Follower(rt, "--kind", "moved", "--nf", "firewall")
    try:
        rt.cli("scale", "firewall", "2")
        wait_settled(rt.config, "firewall", 2)
        _send(client_ns, 2)
        moves = follower.stop()
    finally:
        follower.kill()
    remaining = {p.key for p in rt.pods("firewall")}
    (victim,) = set(replica.values()) - remaining
    victim_flows = {port for port, pod in replica.items() if pod == victim}
    moved = {_client_port(e): e for e in moves if _nf(e["a"]) == "client" and _client_port(e) is not None}
    assert set(moved) == victim_flows, moves
    for event in moved.values():
        assert event["kind"] == "rehashed" and event["reason"] in ("leaving", "removed")
        assert _pod(event["old"]) == victim and _pod(event["b"]) not in (victim, None)
    assert all(e["kind"] in ("rehashed", "followed") for e in moves)
    assert os.path.exists(rt.config.pin_dir)
