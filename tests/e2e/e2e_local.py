"""End-to-end helpers: the local runtime driven through the `flexsfc` CLI, as a user runs it.

Each test gets its own state directory, pin directory and namespace prefix, so tests can run while
other engineers run theirs; whatever happens, the fixture brings the runtime down and removes what
is left (processes, namespaces, links, pinned maps).
"""

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flexsfc.local import control
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.pod import process_alive
from flexsfc.local.state import RuntimeState, read_state
from flexsfc.local.status import PodCounters, PodStatus, RuntimeStatus

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
FLEXSFC = str(Path(sys.executable).with_name("flexsfc"))


def copy_example(name: str, dest: Path, *, pre_stop_seconds: float | None = 1) -> Path:
    """The example's manifests with short preStop delays (keeps the suite fast), written to `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted((EXAMPLES / name).glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(src.read_text()) if d]
        for doc in docs:
            if doc.get("kind") != "Deployment" or pre_stop_seconds is None:
                continue
            for container in doc["spec"]["template"]["spec"]["containers"]:
                hook = (container.get("lifecycle") or {}).get("preStop")
                if hook:
                    hook["exec"]["command"] = ["sleep", str(pre_stop_seconds)]
        (dest / src.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return dest


_BRIDGE = """
          command: [sh, -c]
          args:
            - |
              set -e
              ip link add br0 type bridge
              ip link set eth1 master br0
              ip link set eth2 master br0
              ip link set eth1 up
              ip link set eth2 up
              ip link set br0 up
              exec sleep infinity
          readinessProbe:
            exec: {command: [sh, -c, "ip -o link show br0 | grep -q LOWER_UP"]}"""


def _nad(name: str, address: str | None = None) -> str:
    """A flexsfc-cni NetworkAttachmentDefinition; with `address`, static IPAM of it."""
    ipam = (
        f',\n    "ipam": {{"type": "static", "addresses": [{{"address": "{address}"}}]}}' if address else ""
    )
    return f"""apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {{name: {name}}}
spec:
  config: '{{"cniVersion": "1.0.0", "name": "{name}", "type": "flexsfc-cni",
    "macGenerationString": "{name}"{ipam}}}'
"""


def _deployment(nf: str, replicas: int, grace: int, networks: str, container: str) -> str:
    """A Deployment of the NF `nf` with one container (`container`: its YAML after `- `)."""
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {nf}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{flexsfc.io/network-function: {nf}}}}}
  template:
    metadata:
      labels: {{flexsfc.io/network-function: {nf}}}
      annotations: {{k8s.v1.cni.cncf.io/networks: {networks}}}
    spec:
      terminationGracePeriodSeconds: {grace}
      containers:
        - {container}
"""


def bridge_chain_manifests(
    chain: str,
    prefix: str,
    client_ip: str,
    server_ip: str,
    *,
    firewall_replicas: int = 1,
    firewall_grace: int = 2,
    pre_stop_seconds: float | None = None,
    server_command: str = "[sleep, infinity]",
) -> str:
    """Manifests of a client -> transparent-bridge firewall -> server chain (one YAML stream).

    The NetworkAttachmentDefinitions are named `<prefix>-client-eth1`, `<prefix>-fw-eth1` and so on;
    the client and server get `client_ip`/24 and `server_ip`/24 on eth1; `server_command` is a YAML
    flow list.
    """
    firewall = "name: firewall" + _BRIDGE
    if pre_stop_seconds is not None:
        firewall += "\n          lifecycle:\n            preStop:\n              exec: "
        firewall += f'{{command: [sleep, "{pre_stop_seconds:g}"]}}'
    chain_doc = f"""apiVersion: flexsfc.io/v1alpha1
kind: ServiceFunctionChain
metadata: {{name: {chain}}}
spec:
  networkFunctions:
    - {{name: client, links: {{firewall: eth1}}}}
    - {{name: firewall, links: {{client: eth1, server: eth2}}}}
    - {{name: server, links: {{firewall: eth1}}}}
"""
    docs = [
        chain_doc,
        _nad(f"{prefix}-client-eth1", f"{client_ip}/24"),
        _nad(f"{prefix}-fw-eth1"),
        _nad(f"{prefix}-fw-eth2"),
        _nad(f"{prefix}-server-eth1", f"{server_ip}/24"),
        _deployment(
            "client", 1, 2, f"{prefix}-client-eth1@eth1", "{name: client, command: [sleep, infinity]}"
        ),
        _deployment(
            "firewall",
            firewall_replicas,
            firewall_grace,
            f'"{prefix}-fw-eth1@eth1, {prefix}-fw-eth2@eth2"',
            firewall,
        ),
        _deployment(
            "server", 1, 2, f"{prefix}-server-eth1@eth1", f"{{name: server, command: {server_command}}}"
        ),
    ]
    return "\n" + "---\n".join(docs)


@dataclass
class LocalRuntime:
    config: RuntimeConfig

    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        options: list[str] = []
        if args[0] == "up":
            options = self.up_options()
        elif args[0] in ("down", "scale", "status", "exec", "logs"):
            options = ["--state-dir", self.config.state_dir]
        argv = [FLEXSFC, args[0], *options, *args[1:]]  # options before a `-- command` of exec
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"}
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def up_options(self) -> list[str]:
        """This runtime's directories and prefix, as `flexsfc up` (and the supervisor) take them."""
        return [
            "--state-dir",
            self.config.state_dir,
            "--pin-dir",
            self.config.pin_dir,
            "--netns-prefix",
            self.config.netns_prefix,
        ]

    def up(self, path: Path) -> subprocess.CompletedProcess[str]:
        return self.cli("up", str(path))

    def request(self, op: str, **fields: Any) -> Any:
        return control.request(self.config, op, **fields)

    def status(self) -> RuntimeStatus:
        return control.status(self.config)

    def state(self) -> RuntimeState | None:
        return read_state(self.config)

    def pods(self, nf: str, phase: str | None = "running") -> list[PodStatus]:
        state = self.state()
        return [
            p
            for p in (state.pods if state is not None else ())
            if p.nf == nf and (phase is None or p.phase == phase)
        ]


def counters(pod: PodStatus) -> PodCounters:
    """A pod's counters, which every pod of a live status has."""
    assert pod.counters is not None, f"{pod.name}: no counters"
    return pod.counters


def leftovers(config: RuntimeConfig, state: RuntimeState | None = None) -> list[str]:
    """Everything a runtime could leave behind that still exists."""
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [
        f"netns {line.split()[0]}"
        for line in netns.splitlines()
        if line.startswith(config.netns_prefix + "-")
    ]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for pod in state.pods if state is not None else ():
        for rec in pod.records:
            if f" {rec.host_ifname}@" in links or f" {rec.host_ifname}:" in links:
                found.append(f"link {rec.host_ifname}")
        for proc in pod.processes:
            # A killed container whose parent died (the supervisor) is a zombie until init reaps
            # it: dead, not left behind. process_alive also tells a reused PID apart.
            if process_alive(proc):
                found.append(f"process {proc.pid}")
    if os.path.exists(config.pin_dir):
        found.append(f"pin dir {config.pin_dir}")
    if os.path.exists(config.state_dir):
        found.append(f"state dir {config.state_dir}")
    return found


@contextlib.contextmanager
def private_runtime(tmp: Path, pin_name: str = "e2e", netns_letter: str = "e") -> Iterator[LocalRuntime]:
    """A LocalRuntime with its own state dir (under `tmp`), pin dir and namespace prefix.

    Whatever happens, the runtime is brought down on exit and whatever it left (processes,
    namespaces, links, pinned maps) is removed.
    """
    tag = uuid.uuid4().hex[:6]
    config = RuntimeConfig(
        state_dir=str(tmp / "runtime"),
        pin_dir=f"/sys/fs/bpf/flexsfc/{pin_name}-{tag}",
        netns_prefix=f"fx{netns_letter}{tag[:4]}",
    )
    runtime = LocalRuntime(config)
    try:
        yield runtime
    finally:
        state = runtime.state()
        try:
            control.down(config)
        finally:
            if leftovers(config, state):
                control.cleanup_from_state(config, state)
            for name in leftovers(config):
                if name.startswith("netns "):
                    subprocess.run(["ip", "netns", "del", name.split()[1]], capture_output=True)
            shutil.rmtree(config.pin_dir, ignore_errors=True)
