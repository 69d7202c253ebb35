"""Invoke the CNI plugin for a pod exactly as Multus does: env vars, the NAD's config on stdin."""

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from flexsfc.local.config import CNI_BIN_DIR, CNI_PATH, CNI_PLUGIN

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
    config: dict[str, Any]  # the NetworkAttachmentDefinition's spec.config, with stateDir set

    def env(self, command: str) -> dict[str, str]:
        return {
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


def plugin_path() -> str:
    return os.path.join(CNI_BIN_DIR, CNI_PLUGIN)


def cni_add(call: CniCall) -> dict[str, Any]:
    return _invoke("ADD", call)


def cni_del(call: CniCall) -> None:
    _invoke("DEL", call)


def _invoke(command: str, call: CniCall) -> dict[str, Any]:
    plugin = plugin_path()
    if not os.access(plugin, os.X_OK):
        raise CniError(f"CNI plugin {plugin} not found; run scripts/setup.sh (make setup) to install it")
    try:
        proc = subprocess.run(
            [plugin],
            input=json.dumps(call.config).encode(),
            env=call.env(command),
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
