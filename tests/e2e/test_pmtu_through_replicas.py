"""Path-MTU discovery through a scaled stateful NF (issue 17), on the local runtime.

The l3-chain example (client -> router -> firewall -> gateway -> server) with the router made
stateful (conntrack, forward policy drop: only new connections from the client side and what
conntrack finds established or related pass) and scaled to 3 replicas, and the firewall -> gateway
link one hop further at an MTU of 1280. Each upload's full-size segments make the firewall answer
"fragmentation needed"; the error must reach the router replica whose conntrack knows the
connection (any other replica drops it as unrelated), or the client never learns the path MTU and
the upload hangs. Before ICMP errors were keyed by the packet they quote, all of them went to one
replica and about a third of the uploads completed.

Each upload is a new connection from a new source port, and the client forgets the path MTU before
each one, so every upload needs its own error to get through.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from e2e_local import LocalRuntime, copy_example

from flexsfc.dataplane.maps import Event
from flexsfc.local.scenario import in_pod, pod_netns, wait_ready

pytestmark = [pytest.mark.root, pytest.mark.slow]

UPLOADS = 24
SERVER, PORT = "10.20.4.2", 9000

ROUTER = """\
set -e
# Stateful router: forwards new connections from the client side and whatever conntrack finds
# established or related (ICMP errors about its connections included); drops everything else.
sysctl -w net.ipv4.ip_forward=1
nft -f - <<'NFT'
table inet flexsfc_router {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "eth1" ct state new accept
  }
}
NFT
exec sleep infinity
"""

# Each upload: a fresh connection after the client forgot the path MTU; the server answers with the
# byte count it received once the client has shut its side down. Prints one boolean per upload.
UPLOAD = textwrap.dedent(
    """
    import json, socket, subprocess, sys
    count, size, server, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    done = []
    for _ in range(count):
        subprocess.run(["ip", "route", "flush", "cache"], check=True)
        try:
            with socket.create_connection((server, port), timeout=6) as s:
                s.settimeout(6)
                s.sendall(b"u" * size)
                s.shutdown(socket.SHUT_WR)
                reply = b""
                while chunk := s.recv(64):
                    reply += chunk
            done.append(int(reply or b"-1") == size)
        except OSError:
            done.append(False)
    print(json.dumps(done))
    """
)


def _command(doc: dict, script: str) -> None:
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["args"] = [script]


def _write_chain(tmp_path: Path) -> Path:
    path = copy_example("l3-chain", tmp_path / "chain")
    manifests = path / "network-functions.yaml"
    docs = list(yaml.safe_load_all(manifests.read_text()))
    for doc in docs:
        name = doc["metadata"]["name"]
        if name == "router":
            doc["spec"]["replicas"] = 3
            _command(doc, ROUTER)
            probe = doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
            probe["exec"]["command"] = ["nft", "list", "table", "inet", "flexsfc_router"]
        elif name in ("firewall", "gateway"):
            # The firewall <-> gateway link is the narrow one.
            link = "eth2" if name == "firewall" else "eth1"
            script = doc["spec"]["template"]["spec"]["containers"][0]["args"][0]
            doc["spec"]["template"]["spec"]["containers"][0]["args"][0] = script.replace(
                "sysctl -w net.ipv4.ip_forward=1",
                f"sysctl -w net.ipv4.ip_forward=1\nip link set {link} mtu 1280",
            )
        elif name == "server":
            _command(doc, f"exec socat TCP-LISTEN:{PORT},reuseaddr,fork SYSTEM:'wc -c'\n")
    manifests.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def _events(pin_dir: str) -> dict[int, int]:
    """The data plane's event counters, summed over CPUs, straight from the pinned map."""
    dump = json.loads(
        subprocess.run(
            ["bpftool", "-j", "map", "dump", "pinned", f"{pin_dir}/events"], capture_output=True, text=True
        ).stdout
    )
    return {
        int.from_bytes(bytes(int(b, 16) for b in e["key"]), "little"): sum(
            int.from_bytes(bytes(int(b, 16) for b in v["value"]), "little") for v in e["values"]
        )
        for e in dump
    }


def test_uploads_through_three_stateful_router_replicas_learn_the_path_mtu(
    local_runtime: LocalRuntime, tmp_path: Path
) -> None:
    rt = local_runtime
    rt.up(_write_chain(tmp_path))
    wait_ready(rt.config)
    assert len(rt.pods("router")) == 3
    client = pod_netns(rt.config, "client")
    proc = subprocess.run(
        in_pod(client, [sys.executable, "-c", UPLOAD, str(UPLOADS), str(256 * 1024), SERVER, str(PORT)]),
        capture_output=True,
        text=True,
        timeout=UPLOADS * 15 + 30,
    )
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    followed = _events(rt.config.pin_dir).get(Event.ICMP_ERROR_FOLLOWED, 0)
    assert sum(done) == UPLOADS, (
        f"{sum(done)} of {UPLOADS} uploads completed ({followed} ICMP errors followed)"
    )
    assert followed >= UPLOADS  # at least one "fragmentation needed" per upload, each to its replica
