"""Invoke the CNI plugin for a pod exactly as Multus does: env vars, the NAD's config on stdin.

The runtime runs the node shim (`/opt/cni/bin/flexsfc-cni` when that is the shim, else the one
built in the package) with only the `CNI_*` variables Multus sets, `PATH`, and `FLEXSFC_CNI_CONF`
naming the runtime's node file (flexsfc.local.node): the shim finds the supervisor's CNI socket
there, and the supervisor runs the plugin's logic with the runtime's node-level settings. That is
the cluster's path: the shim, a socket, the agent as the only writer of the BPF maps.

Without a node file (`node_file=None`) the Python plugin (`flexsfc-cni` console script, one process
per call) runs directly with the node-level settings in its environment: for tests that need the
plugin to act in a network namespace of their own (tests/kernel/operator), and the benchmark's
baseline. The runtime never does.
"""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from flexsfc.cni.config import ENV_NODE_CONFIG, NODE_LEVEL_FIELDS, node_environment
from flexsfc.local.config import CNI_BIN_DIR, CNI_PATH, CNI_PLUGIN
from flexsfc.util.netns import netns_path

CNI_TIMEOUT_SECONDS = 30


class CniError(RuntimeError):
    pass


@dataclass(frozen=True)
class CniCall:
    container_id: str
    netns_path: str
    ifname: str
    pod_namespace: str
    pod_name: str
    pod_uid: str
    # The NetworkAttachmentDefinition's spec.config, plus the runtime's node-level stateDir and pinDir
    # (the runtime is the node here). Those reach the plugin through its environment, never on stdin:
    # the plugin refuses node-level fields in a network configuration (docs/cni.md).
    config: dict[str, Any]
    # The simulated node's network namespace (`up --nodes N`): the shim runs there, as the kubelet of
    # that node runs it, and the agent it asks creates the host-side veths in its own (the node's).
    node_netns: str = ""

    def stdin_config(self) -> dict[str, Any]:
        return {key: value for key, value in self.config.items() if key not in NODE_LEVEL_FIELDS}

    def env(self, command: str, node_file: str | None = None) -> dict[str, str]:
        """The plugin's environment: through the shim, the node file names the agent's socket;
        directly, the node-level settings come in variables (the plugin refuses them on stdin)."""
        if node_file is not None:
            node = {ENV_NODE_CONFIG: node_file}
        else:
            node = node_environment(
                state_dir=self.config.get("stateDir"), pin_dir=self.config.get("pinDir"), kubeconfig=""
            )
        return node | {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": self.netns_path,
            "CNI_IFNAME": self.ifname,
            "CNI_ARGS": (
                f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.pod_namespace};"
                f"K8S_POD_NAME={self.pod_name};K8S_POD_UID={self.pod_uid}"
            ),
            "CNI_PATH": CNI_PATH,
        }


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF"
    except OSError:
        return False


def shim_path() -> str:
    """The node shim, as Multus finds it in the CNI bin directory; else the package's build of it.

    `/opt/cni/bin/flexsfc-cni` counts only when it is an executable (ELF) file: before
    scripts/setup.sh links the shim there it was the Python plugin, which would write the maps
    itself instead of asking the agent.
    """
    installed = os.path.join(CNI_BIN_DIR, CNI_PLUGIN)
    if os.access(installed, os.X_OK) and _is_elf(installed):
        return installed
    from flexsfc.cni.shim.build import executable_path

    built = str(executable_path())
    if os.access(built, os.X_OK):
        return built
    raise CniError(
        f"the flexsfc-cni node shim is not built ({installed} is not it, {built} is missing); run "
        "scripts/setup.sh (make setup) or `python -m flexsfc.cni.shim.build`"
    )


def python_plugin_path() -> str:
    """The Python plugin (console script `flexsfc-cni`) of this installation."""
    beside = os.path.join(os.path.dirname(sys.executable), CNI_PLUGIN)
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(CNI_PLUGIN)
    if found is None or _is_elf(found):
        raise CniError(f"the Python flexsfc-cni plugin is not installed beside {sys.executable}")
    return found


def cni_add(call: CniCall, node_file: str | None = None) -> dict[str, Any]:
    """ADD through the shim to the agent named by `node_file`; without one, the Python plugin directly."""
    return _invoke("ADD", call, node_file)


def cni_del(call: CniCall, node_file: str | None = None) -> None:
    _invoke("DEL", call, node_file)


def _invoke(command: str, call: CniCall, node_file: str | None) -> dict[str, Any]:
    plugin = shim_path() if node_file is not None else python_plugin_path()
    argv = [plugin]
    if call.node_netns:
        # nsenter --net, never `ip netns exec`: it remounts /sys and would hide bpffs.
        argv = ["nsenter", f"--net={netns_path(call.node_netns)}", "--", plugin]
    try:
        proc = subprocess.run(
            argv,
            input=json.dumps(call.stdin_config()).encode(),
            env=call.env(command, node_file),
            capture_output=True,
            timeout=CNI_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CniError(f"CNI {command} for {call.ifname} timed out after {CNI_TIMEOUT_SECONDS}s") from exc
    out = proc.stdout.decode(errors="replace").strip()
    if proc.returncode != 0:
        detail = out or proc.stderr.decode(errors="replace").strip()
        try:
            err = json.loads(out)
            detail = f"{err.get('msg', '')} {err.get('details', '')} (code {err.get('code')})".strip()
        except (json.JSONDecodeError, AttributeError):
            pass
        raise CniError(
            f"CNI {command} for {call.ifname} (network {call.config.get('name')}) failed: {detail}"
        )
    if command != "ADD" or not out:
        return {}
    try:
        return json.loads(out)
    except json.JSONDecodeError as exc:
        raise CniError(f"CNI ADD for {call.ifname} returned invalid JSON: {out[:200]}") from exc
