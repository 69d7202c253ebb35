"""`flexsfc up --flow-history N` and `flexsfc flows --last` on the local runtime, as a user runs them.

A transparent-bridge firewall with three replicas between a client and a server without a listener
(its kernel answers each datagram with an ICMP port unreachable). Checked:
- without a history, `flows --last` fails and names the option that turns it on;
- `up --flow-history` on the running runtime turns it on in place (the supervisor's reader holds the
  stream); after 12 UDP flows, `flows --last N --json` names for every flow the firewall replica its
  packets went through: that replica sent them on to the server (the downstream cross-connection's
  created event) and its port's counter grew by the flows' datagrams;
- `--last K` gives the newest K matching events; `up --flow-history 0` turns the stream off.
"""

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from e2e_local import LocalRuntime, bridge_chain_manifests

from flexsfc.dataplane.events import stream_lease
from flexsfc.dataplane.facade import Dataplane
from flexsfc.local.scenario import in_pod, pod_netns, wait_ready

pytestmark = [pytest.mark.root, pytest.mark.slow]

FLOWS, PACKETS = 12, 3
CLIENT_IP, SERVER_IP = "10.73.1.1", "10.73.1.2"
SPORT = 43000
MANIFESTS = bridge_chain_manifests("hist-chain", "fh", CLIENT_IP, SERVER_IP, firewall_replicas=3)

SENDER = f"""
import socket, time
socks = []
for i in range({FLOWS}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{CLIENT_IP}", {SPORT} + i))
    socks.append(s)
for _ in range({PACKETS}):
    for s in socks:
        try:
            s.sendto(b"flow", ("{SERVER_IP}", 9000))
        except OSError:
            pass  # an ICMP error reported on the socket
    time.sleep(0.05)
"""


def _client_port(event: dict[str, Any]) -> int | None:
    flow = event["flow"]
    if not flow or flow["proto"] != "udp":
        return None
    for addr, port in ((flow["src"], flow["sport"]), (flow["dst"], flow["dport"])):
        if addr == CLIENT_IP and SPORT <= port < SPORT + FLOWS:
            return int(port)
    return None


def _last(rt: LocalRuntime, *args: str) -> list[dict[str, Any]]:
    shown = rt.cli("flows", "--state-dir", rt.config.state_dir, "--json", "--last", *args)
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def _firewall_delivered(rt: LocalRuntime) -> dict[str, int]:
    """Packets delivered to each firewall replica's eth1 (from the client's side): the port counters."""
    with Dataplane(rt.config.pin_dir) as dp:  # a reader of the runtime's pins
        stats = dp.port_stats()
    return {
        p.key: stats[r.host_ifindex].to_port_packets
        for p in rt.status().pods
        if p.nf == "firewall"
        for r in p.records
        if r.ifname == "eth1"
    }


def test_up_flow_history_and_flows_last_name_each_flows_replica(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    rt = local_runtime
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "chain.yaml").write_text(MANIFESTS)
    rt.up(manifests)
    wait_ready(rt.config)

    off = rt.cli("flows", "--state-dir", rt.config.state_dir, "--last", "5", check=False)
    assert off.returncode != 0 and "--flow-history N" in off.stderr, off
    assert stream_lease(rt.config.pin_dir)[1] == 0  # the default: no history, the stream off

    rt.cli("up", str(manifests), "--flow-history", "1000")
    assert stream_lease(rt.config.pin_dir)[1] == 1  # the supervisor's history reads it
    before = _firewall_delivered(rt)
    client_ns = pod_netns(rt.config, "client")
    subprocess.run(in_pod(client_ns, ["python3", "-c", SENDER]), check=True, timeout=30)
    time.sleep(0.5)
    after = _firewall_delivered(rt)

    ours = ("--kind", "created", "--chain", "hist-chain", "--proto", "udp", "--port", "9000")
    events = _last(rt, "1000", *ours)
    upstream = {_client_port(e): e for e in events if e["a"] and e["a"]["nf"] == "client"}
    downstream = {_client_port(e): e for e in events if e["a"] and e["a"]["nf"] == "firewall"}
    assert sorted(p for p in upstream if p is not None) == list(range(SPORT, SPORT + FLOWS)), events
    replica = {port: upstream[port]["b"]["pod"] for port in range(SPORT, SPORT + FLOWS)}
    for port, pod in replica.items():
        assert upstream[port]["b"]["nf"] == "firewall"
        assert downstream[port]["a"]["pod"] == pod  # its bridge sent the packets on
    assert len(set(replica.values())) >= 2
    # Each replica's eth1 was delivered its flows' datagrams (and at most the client's ARP for the
    # server besides: it crosses one of them).
    for pod in after:
        flows = sum(p == pod for p in replica.values())
        assert 0 <= after[pod] - before[pod] - PACKETS * flows <= 2, (pod, before, after, replica)

    newest = _last(rt, "2", *ours)  # the newest matching: later ARP sessions of the chain do not count
    assert [e["time"] for e in newest] == [e["time"] for e in events[-2:]]
    icmp = _last(rt, "1000", "--kind", "icmp-error")
    assert icmp and all(e["kind"] == "icmp-error" for e in icmp)

    rt.cli("up", str(manifests), "--flow-history", "0")
    assert stream_lease(rt.config.pin_dir)[1] == 0
