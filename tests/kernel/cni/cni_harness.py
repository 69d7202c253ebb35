"""Run flexsfc-cni exactly as a container runtime (or Multus) does: the installed executable, CNI_*
environment variables, the network configuration on stdin, JSON on stdout.

The executable here is the Python plugin (the venv's `flexsfc-cni` console script), which runs the
plugin's logic in its own process: each test gives it a node of its own (state directory, pin
directory, node file) through its environment, and reads what it writes on stderr. That is the
logic the node agent serves in-process (flexsfc.cni.dispatch); the path on a node and in the local
runtime, the static shim passing calls to the agent's socket, has its own conformance suite
(test_shim_conformance.py) and is what /opt/cni/bin/flexsfc-cni is (scripts/setup.sh).
"""

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexsfc.cni import state
from flexsfc.cni.commands import host_name
from flexsfc.cni.config import ENV_NODE_CONFIG, node_environment

EXECUTABLE = Path(sys.executable).with_name("flexsfc-cni")
# `static` is Debian's, in /usr/lib/cni (setup.sh links no IPAM plugin into /opt/cni/bin).
CNI_PATH = "/opt/cni/bin:/usr/lib/cni"


@dataclass
class CniCall:
    returncode: int
    output: dict[str, Any] | None
    stderr: str

    @property
    def code(self) -> int | None:
        return (self.output or {}).get("code") if self.returncode else None


def call_environ(
    command: str, container_id: str = "", netns: str = "", ifname: str = "", cni_args: str = ""
) -> dict[str, str]:
    """The CNI_* variables of one call; `netns` a path or the name of a namespace in /run/netns."""
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns if not netns or netns.startswith("/") else f"/run/netns/{netns}",
        "CNI_IFNAME": ifname,
        "CNI_ARGS": cni_args,
        "CNI_PATH": CNI_PATH,
    }


def invoke(
    executable: str, environ: dict[str, str], config: dict[str, Any] | bytes | None, **run: Any
) -> CniCall:
    """Runs a CNI executable with `environ` only and the configuration on stdin (timeout 60 s unless
    `run` says otherwise); its exit status, JSON output and stderr."""
    stdin = config if isinstance(config, bytes) else json.dumps(config or {}).encode()
    done = subprocess.run(
        [executable], input=stdin, env=environ, capture_output=True, **{"timeout": 60, **run}
    )
    output = json.loads(done.stdout) if done.stdout.strip() else None
    return CniCall(done.returncode, output, done.stderr.decode())


def l2_config(name: str = "net-l2", **extra: Any) -> dict[str, Any]:
    """A network configuration as a NetworkAttachmentDefinition holds it (no node-level fields)."""
    return {
        "cniVersion": "1.1.0",
        "name": name,
        "type": "flexsfc-cni",
        "macGenerationString": "firewall",
        "mtu": 1450,
        **extra,
    }


def l3_config(name: str = "net-l3", **extra: Any) -> dict[str, Any]:
    ipam = {
        "type": "static",
        "addresses": [{"address": "10.240.0.2/24", "gateway": "10.240.0.1"}, {"address": "fd00:240::2/64"}],
        "routes": [{"dst": "10.9.0.0/16"}, {"dst": "fd00:9::/64", "gw": "fd00:240::1"}],
    }
    return {**l2_config(name=name, macGenerationString="gateway"), "ipam": ipam, **extra}


class CniRunner:
    """Invokes the plugin; remembers every attachment it asked for and removes what is left.

    It plays the node too: the state directory (and, when a test sets it, the pin directory) reach
    the plugin as node-level settings in its environment, as the local runtime passes them.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.pin_dir: str | None = None  # None: the node file's, else the plugin's default
        self.kubeconfig: str | None = ""  # "": no annotation; None: the node file's
        self.node_config: Path | None = None  # the node file (FLEXSFC_CNI_CONF)
        self.attempted: set[tuple[str, str]] = set()

    @staticmethod
    def new_container_id() -> str:
        return f"fxtest{uuid.uuid4().hex}"

    def run(
        self,
        command: str,
        config: dict[str, Any] | bytes | None,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        cni_args: str = "",
        env: dict[str, str] | None = None,
    ) -> CniCall:
        if container_id and ifname:
            self.attempted.add((container_id, ifname))
        environ = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            **call_environ(command, container_id, netns, ifname, cni_args),
            **node_environment(
                state_dir=str(self.state_dir), pin_dir=self.pin_dir, kubeconfig=self.kubeconfig
            ),
        }
        if self.node_config is not None:
            environ[ENV_NODE_CONFIG] = str(self.node_config)
        environ.update(env or {})
        return invoke(str(EXECUTABLE), environ, config)

    def add(
        self, config: dict[str, Any], netns: str, ifname: str = "eth1", **kwargs: Any
    ) -> tuple[str, CniCall]:
        container_id = kwargs.pop("container_id", None) or self.new_container_id()
        call = self.run("ADD", config, container_id, netns, ifname, **kwargs)
        return container_id, call

    def cleanup(self) -> None:
        names = {r.host_ifname for r in state.load_records(str(self.state_dir))}
        names |= {host_name(cid, ifname) for cid, ifname in self.attempted}
        for name in names:
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def link_exists(name: str, netns: str | None = None) -> bool:
    cmd = ["ip", *(["-n", netns] if netns else []), "link", "show", "dev", name]
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


def ip_json(*args: str, netns: str | None = None) -> Any:
    cmd = ["ip", "-j", *(["-n", netns] if netns else []), *args]
    return json.loads(subprocess.run(cmd, capture_output=True, check=True, text=True).stdout or "[]")
