"""CNI conformance through the node shim and `flexsfc agent --local`, driven exactly as Multus drives a
plugin: the static executable, CNI_* variables, the network configuration on stdin, real network
namespaces and the real `static` IPAM plugin. Also: the agent stopped (ADD code 11 naming the socket,
STATUS not ready, DEL queued on disk and applied when the agent starts) and the shim alone in an
empty chroot.

Every test starts its own agent (a subprocess on a temporary socket, state, queue and pin
directory) and removes what it made: agent process (by its PID), namespaces, links, mounts, pins.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_harness import CNI_PATH, CniCall, call_environ, invoke, ip_json, l2_config, l3_config, link_exists

from flexsfc.cni import state
from flexsfc.cni.commands import host_name
from flexsfc.cni.shim import build
from flexsfc.model.mac import derive_mac
from flexsfc.testing.netlab import remove_pin_dir, unique_pin_dir

pytestmark = pytest.mark.root

FLEXSFC = Path(sys.executable).with_name("flexsfc")


class Node:
    """One node: the agent (started and stopped at will) and the shim run as Multus runs it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "cni.sock"
        self.state_dir = root / "state"
        self.queue = root / "queue"
        self.node_file = root / "cni.conf"  # empty: the machine's /etc/flexsfc/cni.conf never counts
        self.node_file.write_text("{}")
        self.pin_dir = unique_pin_dir("shim")
        self.shim = build.ensure_built()
        self.agent: subprocess.Popen[bytes] | None = None
        self.log = root / "agent.log"
        self.attempted: set[tuple[str, str]] = set()

    # -- the agent

    def start(self, socket_path: Path | None = None) -> None:
        assert self.agent is None
        path = socket_path or self.socket
        # The node's settings reach the agent as they reach the plugin: node file and variables.
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "FLEXSFC_CNI_CONF": str(self.node_file),
            "FLEXSFC_CNI_STATE_DIR": str(self.state_dir),
            "FLEXSFC_CNI_PIN_DIR": self.pin_dir,
            "FLEXSFC_CNI_DELETE_QUEUE": str(self.queue),
            "FLEXSFC_CNI_SOCKET": str(self.socket),
        }
        command = [
            str(FLEXSFC),
            "agent",
            "--local",
            "-v",
            "--session-capacity",
            "4096",
            "--queue-interval",
            "0.5",
        ]
        if socket_path is not None:
            command += ["--socket", str(socket_path)]
        with open(self.log, "ab") as log:
            self.agent = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.agent.poll() is not None:
                raise AssertionError(f"agent exited {self.agent.returncode}:\n{self.log.read_text()}")
            with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
                probe.connect(str(path))
                return
            time.sleep(0.05)
        raise AssertionError(f"agent not listening on {path}:\n{self.log.read_text()}")

    def stop(self) -> None:
        agent, self.agent = self.agent, None
        if agent is None:
            return
        agent.send_signal(signal.SIGTERM)  # by PID: only the process this test started
        try:
            agent.wait(timeout=15)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(timeout=5)

    # -- the shim, as Multus runs a delegate

    def run(
        self,
        command: str,
        config: dict[str, Any] | bytes | None,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        env: dict[str, str] | None = None,
    ) -> CniCall:
        if container_id and ifname:
            self.attempted.add((container_id, ifname))
        environ = {
            **call_environ(
                command,
                container_id,
                netns,
                ifname,
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_UID=uid",
            ),
            "FLEXSFC_CNI_SOCKET": str(self.socket),
            "FLEXSFC_CNI_DELETE_QUEUE": str(self.queue),
            "FLEXSFC_CNI_CONF": str(self.node_file),
            **(env or {}),
        }
        return invoke(str(self.shim), environ, config)

    def add(self, config: dict[str, Any], netns: str, ifname: str = "eth1") -> tuple[str, CniCall]:
        container_id = f"fxshim{os.urandom(8).hex()}"
        return container_id, self.run("ADD", config, container_id, netns, ifname)

    def records(self) -> list[Any]:
        return state.load_records(str(self.state_dir))

    def queued(self) -> list[str]:
        return sorted(p.name for p in self.queue.iterdir()) if self.queue.is_dir() else []

    def cleanup(self) -> None:
        self.stop()
        names = {r.host_ifname for r in self.records()}
        names |= {host_name(cid, ifname) for cid, ifname in self.attempted}
        for name in names:
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
        remove_pin_dir(self.pin_dir)


@pytest.fixture
def node() -> Iterator[Node]:
    root = Path(tempfile.mkdtemp(prefix="fxs"))  # short: a unix socket path has at most 107 bytes
    node = Node(root)
    try:
        yield node
    finally:
        node.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _with_prev(config: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    return {**config, "prevResult": result}


# ------------------------------------------------------------------------------------ conformance


def test_version_is_answered_without_an_agent(node: Node) -> None:
    for requested in ("0.4.0", "1.0.0", "1.1.0"):
        call = node.run("VERSION", {"cniVersion": requested})
        assert call.returncode == 0, call
        assert call.output == {
            "cniVersion": requested,
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        }
    empty = node.run("VERSION", b"")
    assert (empty.returncode, empty.output["cniVersion"]) == (0, "1.1.0")


def test_l2_add_check_del_twice(node: Node, netns_factory) -> None:
    node.start()
    assert os.listdir(node.pin_dir)  # the agent holds the node's pinned data plane
    pod = netns_factory("l2")
    config = l2_config()
    container_id, add = node.add(config, pod)
    assert add.returncode == 0, add
    host, pod_end = add.output["interfaces"]
    assert pod_end == {
        "name": "eth1",
        "mac": derive_mac("firewall", "eth1"),
        "sandbox": f"/run/netns/{pod}",
        "mtu": 1450,
    }
    assert link_exists(host["name"]) and link_exists("eth1", pod)
    [record] = node.records()
    assert (record.container_id, record.mode, record.pod_name) == (container_id, "L2", "pod")

    check = node.run("CHECK", _with_prev(config, add.output), container_id, pod, "eth1")
    assert (check.returncode, check.output) == (0, None), check

    for _ in range(2):  # DEL is idempotent
        delete = node.run("DEL", config, container_id, pod, "eth1")
        assert (delete.returncode, delete.output) == (0, None), delete
        assert not link_exists(host["name"]) and not link_exists("eth1", pod)
        assert node.records() == [] and node.queued() == []


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_l3_static_ipam_dual_stack_add_check_del(node: Node, netns_factory, version: str) -> None:
    node.start()
    pod = netns_factory("l3")
    config = l3_config(cniVersion=version)
    container_id, add = node.add(config, pod)
    assert add.returncode == 0, add
    assert [ip["address"] for ip in add.output["ips"]] == ["10.240.0.2/24", "fd00:240::2/64"]
    addresses = {
        f"{a['local']}/{a['prefixlen']}"
        for link in ip_json("addr", "show", "dev", "eth1", netns=pod)
        for a in link["addr_info"]
        if a.get("scope") == "global"
    }
    assert addresses == {"10.240.0.2/24", "fd00:240::2/64"}
    routes = {r["dst"] for r in ip_json("route", "show", "dev", "eth1", netns=pod)}
    assert "10.9.0.0/16" in routes
    assert "fd00:9::/64" in {r["dst"] for r in ip_json("-6", "route", "show", "dev", "eth1", netns=pod)}

    check = node.run("CHECK", _with_prev(config, add.output), container_id, pod, "eth1")
    assert (check.returncode, check.output) == (0, None), check
    subprocess.run(["ip", "-n", pod, "addr", "del", "10.240.0.2/24", "dev", "eth1"], check=True)
    broken = node.run("CHECK", _with_prev(config, add.output), container_id, pod, "eth1")
    assert (broken.returncode, broken.code) == (1, 102)
    assert "10.240.0.2/24" in broken.output["msg"]

    for _ in range(2):
        delete = node.run("DEL", config, container_id, pod, "eth1")
        assert (delete.returncode, delete.output) == (0, None), delete
    assert not link_exists("eth1", pod) and node.records() == []


def test_gc_and_status(node: Node, netns_factory) -> None:
    node.start()
    config = l3_config()
    pods = [netns_factory(f"gc{i}") for i in range(2)]
    keep, _ = node.add(config, pods[0])
    stale, stale_add = node.add(config, pods[1])
    stale_host = stale_add.output["interfaces"][0]["name"]
    gc_config = {**config, "cni.dev/valid-attachments": [{"containerID": keep, "ifname": "eth1"}]}
    gc = node.run("GC", gc_config)
    assert (gc.returncode, gc.output) == (0, None), gc
    assert [r.container_id for r in node.records()] == [keep]
    assert not link_exists(stale_host) and link_exists("eth1", pods[0])
    assert stale != keep

    ready = node.run("STATUS", config)
    assert (ready.returncode, ready.output) == (0, None), ready
    missing = node.run("STATUS", l3_config(ipam={"type": "no-such-ipam"}))
    assert (missing.returncode, missing.code) == (1, 50)


def test_error_codes(node: Node, netns_factory) -> None:
    node.start()
    pod = netns_factory("err")
    config = l2_config()
    cid = "fxshim-errors"

    def code(call: CniCall) -> int | None:
        assert call.returncode == 1 and call.output["cniVersion"], call
        return call.code

    assert code(node.run("NOPE", config, cid, pod, "eth1")) == 4
    assert code(node.run("ADD", config, "../x", pod, "eth1")) == 4
    assert code(node.run("ADD", b"not json", cid, pod, "eth1")) == 6
    assert code(node.run("ADD", l2_config(macGenerationString=""), cid, pod, "eth1")) == 7
    assert code(node.run("ADD", l2_config(stateDir="/tmp"), cid, pod, "eth1")) == 7  # node-level field
    assert code(node.run("ADD", l2_config(cniVersion="9.9.9"), cid, pod, "eth1")) == 1
    assert code(node.run("STATUS", l2_config(cniVersion="1.0.0"))) == 1
    assert code(node.run("ADD", config, cid, "/run/netns/fxshim-no-such-ns", "eth1")) == 3
    assert code(node.run("GC", config)) == 7  # no cni.dev/valid-attachments
    assert code(node.run("CHECK", config, cid, pod, "eth1")) == 7  # no prevResult
    first = node.run("ADD", config, cid, pod, "eth1")
    assert first.returncode == 0, first
    assert code(node.run("ADD", config, cid, pod, "eth1")) == 104
    assert node.run("DEL", config, cid, pod, "eth1").returncode == 0


def test_concurrent_calls_l2_and_l3(node: Node, netns_factory) -> None:
    """One thread per connection in the agent; the plugin's locks (and the agent's environment lock
    for IPAM) keep eight parallel ADDs, then DELs, apart."""
    from concurrent.futures import ThreadPoolExecutor

    node.start()
    pods = [netns_factory(f"par{i}") for i in range(8)]
    configs = [l3_config() if i % 2 else l2_config() for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        added = list(pool.map(lambda i: node.add(configs[i], pods[i]), range(8)))
    for pod, (_, call) in zip(pods, added, strict=True):
        assert call.returncode == 0, call
        assert call.output["interfaces"][-1]["sandbox"] == f"/run/netns/{pod}"
    records = {r.container_id: r for r in node.records()}
    assert {cid for cid, _ in added} == set(records)
    assert all(records[cid].netns == f"/run/netns/{pod}" for pod, (cid, _) in zip(pods, added, strict=True))
    with ThreadPoolExecutor(8) as pool:
        deleted = list(
            pool.map(lambda i: node.run("DEL", configs[i], added[i][0], pods[i], "eth1"), range(8))
        )
    assert all(call.returncode == 0 for call in deleted), deleted
    assert node.records() == [] and not any(link_exists("eth1", pod) for pod in pods)


def test_the_caller_cannot_choose_node_level_settings(node: Node, netns_factory, tmp_path: Path) -> None:
    """Only CNI_* variables reach the agent: a FLEXSFC_CNI_STATE_DIR in the shim's environment is
    ignored, records land in the agent's state directory."""
    node.start()
    elsewhere = tmp_path / "elsewhere"
    call = node.run(
        "ADD", l2_config(), "fxshim-tenant", netns_factory("ten"), "eth1",
        env={"FLEXSFC_CNI_STATE_DIR": str(elsewhere)},
    )  # fmt: skip
    assert call.returncode == 0, call
    assert not elsewhere.exists() and [r.container_id for r in node.records()] == ["fxshim-tenant"]


def test_socket_from_the_node_file(node: Node) -> None:
    node.start()
    node.node_file.write_text(json.dumps({"socket": str(node.socket)}))
    status = node.run("STATUS", l2_config(), env={"FLEXSFC_CNI_SOCKET": ""})
    assert (status.returncode, status.output) == (0, None), status
    node.node_file.write_text(json.dumps({"socket": str(node.root / "nobody.sock")}))
    down = node.run("STATUS", l2_config(), env={"FLEXSFC_CNI_SOCKET": ""})
    assert (down.returncode, down.code) == (1, 50) and "nobody.sock" in down.output["msg"]


# ------------------------------------------------------------------------------------ agent down


def test_agent_down_add_fails_fast_status_not_ready_del_queued_then_applied(
    node: Node, netns_factory
) -> None:
    node.start()
    pod = netns_factory("down")
    config = l3_config()
    container_id, add = node.add(config, pod)
    assert add.returncode == 0, add
    host = add.output["interfaces"][0]["name"]
    node.stop()
    assert not node.socket.exists()

    started = time.monotonic()
    refused = node.run("ADD", config, "fxshim-later", netns_factory("later"), "eth1")
    assert time.monotonic() - started < 2
    assert (refused.returncode, refused.code) == (1, 11)
    assert str(node.socket) in refused.output["msg"]
    assert node.run("CHECK", _with_prev(config, add.output), container_id, pod, "eth1").code == 11
    assert node.run("GC", {**config, "cni.dev/valid-attachments": []}).code == 11
    status = node.run("STATUS", config)
    assert (status.returncode, status.code) == (1, 50) and str(node.socket) in status.output["msg"]

    delete = node.run("DEL", config, container_id, pod, "eth1")
    assert (delete.returncode, delete.output) == (0, None), delete
    [queued] = node.queued()
    assert queued.startswith("del-") and "queued" in delete.stderr
    assert os.stat(node.queue / queued).st_mode & 0o077 == 0
    assert link_exists(host) and len(node.records()) == 1  # nothing happened yet

    node.start()  # replays the queue before it listens
    assert node.queued() == []
    assert not link_exists(host) and not link_exists("eth1", pod) and node.records() == []
    again = node.run("DEL", config, container_id, pod, "eth1")
    assert (again.returncode, again.output) == (0, None)


def test_del_queued_while_the_agent_runs_is_applied_by_the_periodic_pass(node: Node, netns_factory) -> None:
    """A DEL queued while the agent was restarting (after its start-up pass) is not left behind."""
    node.start()
    pod = netns_factory("late")
    config = l2_config()
    container_id, add = node.add(config, pod)
    host = add.output["interfaces"][0]["name"]
    down = node.run("DEL", config, container_id, pod, "eth1", env={"FLEXSFC_CNI_SOCKET": "/nonexistent"})
    assert down.returncode == 0 and len(node.queued()) == 1
    deadline = time.monotonic() + 10
    while node.queued() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.queued() == [] and not link_exists(host)


def test_del_that_cannot_be_queued_asks_to_retry(node: Node, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    call = node.run(
        "DEL", l2_config(), "fxshim-noqueue", "", "eth1", env={"FLEXSFC_CNI_DELETE_QUEUE": str(blocker / "q")}
    )
    assert (call.returncode, call.code) == (1, 11)
    assert "queueing" in call.output["details"]


# ---------------------------------------------------------------------------------- empty chroot


def test_shim_runs_alone_in_an_empty_chroot(node: Node, netns_factory) -> None:
    """The chroot holds the shim, the agent's socket (at the default path) and a netns path; nothing
    else: no libc, no loader, no /etc, no /proc, no environment but CNI_*."""
    pod = netns_factory("chroot")
    jail = node.root / "jail"
    (jail / "run" / "flexsfc").mkdir(parents=True)
    (jail / "run" / "netns").mkdir(parents=True)
    shutil.copy2(node.shim, jail / "flexsfc-cni")
    netns_path = f"/run/netns/{pod}"  # the same path inside and outside: the agent resolves it
    (jail / "run" / "netns" / pod).touch()
    subprocess.run(["mount", "--bind", netns_path, str(jail / "run" / "netns" / pod)], check=True)
    try:
        node.start(socket_path=jail / "run" / "flexsfc" / "cni.sock")
        found = sorted(str(p.relative_to(jail)) for p in jail.rglob("*"))
        assert found == [
            "flexsfc-cni", "run", "run/flexsfc", "run/flexsfc/cni.sock", "run/netns", f"run/netns/{pod}",
        ]  # fmt: skip

        def in_jail(command: str, config: dict[str, Any], container_id: str = "") -> CniCall:
            environ = {
                "CNI_COMMAND": command,
                "CNI_CONTAINERID": container_id,
                "CNI_NETNS": netns_path if container_id else "",
                "CNI_IFNAME": "eth1" if container_id else "",
                "CNI_PATH": CNI_PATH,
            }
            node.attempted.add((container_id, "eth1"))

            def enter() -> None:
                os.chroot(jail)
                os.chdir("/")

            return invoke("/flexsfc-cni", environ, config, timeout=30, preexec_fn=enter)

        version = in_jail("VERSION", {"cniVersion": "1.1.0"})
        assert version.returncode == 0 and "1.1.0" in version.output["supportedVersions"]
        config = l3_config()
        add = in_jail("ADD", config, "fxshim-chroot")
        assert add.returncode == 0, add
        assert link_exists("eth1", pod)
        delete = in_jail("DEL", config, "fxshim-chroot")
        assert (delete.returncode, delete.output) == (0, None), delete
        assert not link_exists("eth1", pod) and node.records() == []
    finally:
        node.stop()
        subprocess.run(["umount", str(jail / "run" / "netns" / pod)], check=False, capture_output=True)
