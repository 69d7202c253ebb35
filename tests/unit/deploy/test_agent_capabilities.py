"""The agent's capability set is enough (root): `flexsfc agent --local` started with its bounding set
cut down to the DaemonSet's capabilities creates and pins the data plane and serves ADD (L2, and L3
with `static` from FLEXSFC_IPAM_PATH only: the call's CNI_PATH names nothing), DEL (with the leaving
mark in the pinned maps) and the health probe, all through the node shim.

What this cannot show here: the container's own restrictions (read-only /proc/sys, AppArmor), which
the DaemonSet handles with /host/proc and an Unconfined profile (docs/kubernetes.md, "Privileges").
"""

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flexsfc.cni.shim import build as shim_build
from flexsfc.operator import deployset

REPO = Path(__file__).parents[3]
FLEXSFC = REPO / ".venv" / "bin" / "flexsfc"

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
    pytest.mark.skipif(not os.path.exists("/usr/lib/cni/static"), reason="needs containernetworking-plugins"),
]


def _bounding_set() -> str:
    """setpriv's --bounding-set for the DaemonSet's capabilities; those this machine's own bounding set
    lacks are left out (a smaller set only makes the test stricter)."""
    available = int(
        next(
            line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("CapBnd")
        ).split()[1],
        16,
    )
    numbers = {"NET_ADMIN": 12, "SYS_ADMIN": 21, "SYS_RESOURCE": 24}
    kept = [name for name in deployset.AGENT_CAPABILITIES if available & (1 << numbers[name])]
    assert {"NET_ADMIN", "SYS_ADMIN"} <= set(kept)
    return "-all," + ",".join(f"+{name.lower()}" for name in kept)


@pytest.fixture
def reduced_agent(tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    tag = uuid.uuid4().hex[:6]
    netns, pin_dir = f"fxcap-{tag}", f"/sys/fs/bpf/flexsfc-captest-{tag}"
    conf = tmp_path / "cni.conf"
    conf.write_text(
        json.dumps(
            {
                "stateDir": str(tmp_path / "state"),
                "pinDir": pin_dir,
                "socket": str(tmp_path / "cni.sock"),
                "deleteQueue": str(tmp_path / "queue"),
            }
        )
    )
    subprocess.run(["ip", "netns", "add", netns], check=True)
    env = {**os.environ, "FLEXSFC_CNI_CONF": str(conf), "FLEXSFC_IPAM_PATH": deployset.IMAGE_IPAM_PATH}
    agent = subprocess.Popen(
        ["setpriv", f"--bounding-set={_bounding_set()}", str(FLEXSFC), "agent", "--local"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "cni.sock").exists():
            assert agent.poll() is None, agent.stdout.read() if agent.stdout else ""
            assert time.monotonic() < deadline, "the agent did not start"
            time.sleep(0.1)
        yield conf, netns, str(tmp_path / "cni.sock")
    finally:
        agent.terminate()
        agent.wait(timeout=30)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        shutil.rmtree(pin_dir, ignore_errors=True)


def _shim(conf: Path, netns: str, command: str, ifname: str, config: dict[str, object]) -> dict[str, object]:
    environ = {
        "FLEXSFC_CNI_CONF": str(conf),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "captest",
        "CNI_NETNS": f"/run/netns/{netns}",
        "CNI_IFNAME": ifname,
        "CNI_PATH": "/nonexistent",  # the node's directory: the agent must not need it
    }
    done = subprocess.run(
        [str(shim_build.ensure_built())],
        input=json.dumps(config).encode(),
        env=environ,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def test_the_daemonsets_capabilities_serve_the_shim(reduced_agent: tuple[Path, str, str]) -> None:
    conf, netns, socket_path = reduced_agent
    l2 = {"cniVersion": "1.1.0", "name": "cap-l2", "type": "flexsfc-cni", "macGenerationString": "fw"}
    l3 = {
        "cniVersion": "1.0.0",
        "name": "cap-l3",
        "type": "flexsfc-cni",
        "macGenerationString": "gw",
        "ipam": {"type": "static", "addresses": [{"address": "10.77.0.2/24"}]},
    }
    assert _shim(conf, netns, "ADD", "eth1", l2)["interfaces"]
    result = _shim(conf, netns, "ADD", "eth2", l3)
    assert result["ips"] == [{"address": "10.77.0.2/24", "interface": 1}]
    links = subprocess.run(["ip", "-n", netns, "-br", "addr"], capture_output=True, text=True, check=True)
    assert "eth1" in links.stdout and "10.77.0.2/24" in links.stdout
    health = subprocess.run([str(FLEXSFC), "agent-health", "--socket", socket_path], capture_output=True)
    assert health.returncode == 0, health.stderr
    _shim(conf, netns, "DEL", "eth1", l2)
    _shim(conf, netns, "DEL", "eth2", l3)
    links = subprocess.run(["ip", "-n", netns, "-br", "link"], capture_output=True, text=True, check=True)
    assert "eth1" not in links.stdout and "eth2" not in links.stdout
