"""Run flexsfc-cni exactly as a container runtime (or Multus) does: the installed executable, CNI_*
environment variables, the network configuration on stdin, JSON on stdout."""

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

EXECUTABLE = Path(sys.executable).with_name("flexsfc-cni")
# Where Debian's containernetworking-plugins put `static`; /opt/cni/bin is where setup.sh links it.
CNI_PATH = "/opt/cni/bin:/usr/lib/cni"


@dataclass
class CniCall:
    returncode: int
    output: dict[str, Any] | None
    stderr: str

    @property
    def code(self) -> int | None:
        return (self.output or {}).get("code") if self.returncode else None


def l2_config(state_dir: Path, name: str = "net-l2", **extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.1.0",
        "name": name,
        "type": "flexsfc-cni",
        "macGenerationString": "firewall",
        "mtu": 1450,
        "stateDir": str(state_dir),
        **extra,
    }


def l3_config(state_dir: Path, name: str = "net-l3", **extra: Any) -> dict[str, Any]:
    ipam = {
        "type": "static",
        "addresses": [{"address": "10.240.0.2/24", "gateway": "10.240.0.1"}, {"address": "fd00:240::2/64"}],
        "routes": [{"dst": "10.9.0.0/16"}, {"dst": "fd00:9::/64", "gw": "fd00:240::1"}],
    }
    return {**l2_config(state_dir, name=name, macGenerationString="gateway"), "ipam": ipam, **extra}


class CniRunner:
    """Invokes the plugin; remembers every attachment it asked for and removes what is left."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
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
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns if not netns or netns.startswith("/") else f"/run/netns/{netns}",
            "CNI_IFNAME": ifname,
            "CNI_ARGS": cni_args,
            "CNI_PATH": CNI_PATH,
        }
        environ.update(env or {})
        stdin = config if isinstance(config, bytes) else json.dumps(config or {}).encode()
        done = subprocess.run([str(EXECUTABLE)], input=stdin, env=environ, capture_output=True, timeout=60)
        output = json.loads(done.stdout) if done.stdout.strip() else None
        return CniCall(done.returncode, output, done.stderr.decode())

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
