"""The two inputs of every invocation: the environment (CNI_*) and the network configuration (stdin).

Both are validated up front so a verb never starts changing the system with bad input; errors name
the variable or the field and say how to fix it.
"""

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flexsfc.cni import errors
from flexsfc.cni.errors import CniError
from flexsfc.model.constants import DEFAULT_CNI_STATE_DIR, DEFAULT_PIN_DIR, MAX_IFNAME_LEN

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"
VERBS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# The spec's rule for container ids: alphanumerics plus a few separators, not starting with one.
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
DEFAULT_LOCK_TIMEOUT_SECONDS = 10.0


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@dataclass(frozen=True)
class Environment:
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    cni_path: tuple[str, ...] = ()
    args: Mapping[str, str] = field(default_factory=dict)

    @property
    def pod_namespace(self) -> str:
        return self.args.get("K8S_POD_NAMESPACE", "")

    @property
    def pod_name(self) -> str:
        return self.args.get("K8S_POD_NAME", "")

    @property
    def pod_uid(self) -> str:
        return self.args.get("K8S_POD_UID", "")


def read_command(environ: Mapping[str, str]) -> str:
    command = environ.get("CNI_COMMAND", "")
    if command not in VERBS:
        raise CniError(
            errors.INVALID_ENVIRONMENT,
            "CNI_COMMAND is missing or unknown",
            f"got {command!r}; set CNI_COMMAND to one of {', '.join(VERBS)}",
        )
    return command


def read_environment(command: str, environ: Mapping[str, str]) -> Environment:
    """The CNI_* variables the verb needs, validated (code 4 names the variable)."""
    needs_attachment = command in ("ADD", "DEL", "CHECK")
    container_id = environ.get("CNI_CONTAINERID", "")
    ifname = environ.get("CNI_IFNAME", "")
    netns = environ.get("CNI_NETNS", "")
    if needs_attachment:
        if not _CONTAINER_ID.match(container_id):
            raise _bad_env("CNI_CONTAINERID", container_id, "letters, digits, '_', '.', '-'")
        _check_ifname(ifname)
        # DEL may come without a netns (it may already be gone); ADD and CHECK need one.
        if command != "DEL" and not netns:
            raise _bad_env("CNI_NETNS", netns, "the path of the pod's network namespace")
    cni_path = tuple(p for p in environ.get("CNI_PATH", "").split(os.pathsep) if p)
    return Environment(
        command=command,
        container_id=container_id,
        netns=netns,
        ifname=ifname,
        cni_path=cni_path,
        args=_parse_cni_args(environ.get("CNI_ARGS", "")),
    )


def _check_ifname(ifname: str) -> None:
    if (
        not ifname
        or len(ifname) > MAX_IFNAME_LEN
        or ifname in (".", "..")
        or any(c in ifname for c in "/: \t\n")
    ):
        raise _bad_env(
            "CNI_IFNAME", ifname, f"1 to {MAX_IFNAME_LEN} characters without '/', ':' or whitespace"
        )


def _bad_env(name: str, value: str, expected: str) -> CniError:
    return CniError(errors.INVALID_ENVIRONMENT, f"{name} is invalid", f"got {value!r}; expected {expected}")


def _parse_cni_args(raw: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in filter(None, raw.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(
                errors.INVALID_ENVIRONMENT,
                "CNI_ARGS is invalid",
                f"item {item!r} is not KEY=VALUE; CNI_ARGS is 'K1=V1;K2=V2'",
            )
        parsed[key] = value
    return parsed


@dataclass(frozen=True)
class NetConf:
    """The flexsfc-cni network configuration (a NetworkAttachmentDefinition's spec.config)."""

    raw: dict[str, Any]  # the whole document, passed on to the IPAM plugin
    cni_version: str
    name: str
    mac_generation_string: str
    mtu: int | None
    ipam: dict[str, Any] | None
    state_dir: str
    pin_dir: str  # the node's pinned data plane, told on DEL that the pod's ports are leaving
    kubeconfig: str | None
    lock_timeout_seconds: float
    prev_result: dict[str, Any] | None

    @property
    def mode(self) -> str:
        return "L3" if self.ipam else "L2"


def decode_json(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CniError(
            errors.DECODE_FAILURE, "network configuration on stdin is not valid JSON", str(exc)
        ) from None
    if not isinstance(document, dict):
        raise CniError(
            errors.DECODE_FAILURE,
            "network configuration on stdin is not a JSON object",
            f"got {type(document).__name__}",
        )
    return document


def read_version(document: dict[str, Any]) -> str:
    version = document.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise _bad_field("cniVersion", "is required; set it to one of " + ", ".join(SUPPORTED_VERSIONS))
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            errors.INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, flexsfc-cni supports {', '.join(SUPPORTED_VERSIONS)}",
        )
    return version


def parse_netconf(document: dict[str, Any], *, need_plugin_fields: bool = True) -> NetConf:
    """Validate the configuration; code 7 (invalid config) names the field and the fix.

    ``need_plugin_fields`` (``macGenerationString``) is False for DEL, GC and STATUS: removing an
    attachment must work whatever the configuration has become, and GC/STATUS act on the network.
    """
    version = read_version(document)
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise _bad_field("name", "is required: the network name (a non-empty string)")
    mac_string = document.get("macGenerationString")
    if need_plugin_fields and (not isinstance(mac_string, str) or not mac_string):
        raise _bad_field(
            "macGenerationString",
            "is required: a non-empty string shared by all replicas of the NF (e.g. the NF name)",
        )
    mtu = document.get("mtu")
    if mtu is not None and (isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535):
        raise _bad_field("mtu", f"must be an integer from 68 to 65535, got {mtu!r}")
    ipam = document.get("ipam")
    if ipam is not None and not isinstance(ipam, dict):
        raise _bad_field("ipam", 'must be an object with a \'type\' (e.g. {"type": "static", ...})')
    if ipam == {}:
        ipam = None  # an empty ipam object means no IPAM, as for the reference plugins
    if ipam is not None:
        ipam_type = ipam.get("type")
        if not isinstance(ipam_type, str) or not ipam_type or "/" in ipam_type:
            raise _bad_field("ipam.type", 'must name an IPAM plugin found on CNI_PATH, e.g. "static"')
    state_dir = document.get("stateDir", DEFAULT_CNI_STATE_DIR)
    if not isinstance(state_dir, str) or not state_dir.startswith("/"):
        raise _bad_field("stateDir", f"must be an absolute directory path, got {state_dir!r}")
    pin_dir = document.get("pinDir", DEFAULT_PIN_DIR)
    if not isinstance(pin_dir, str) or not pin_dir.startswith("/"):
        raise _bad_field("pinDir", f"must be an absolute bpffs directory path, got {pin_dir!r}")
    kubeconfig = document.get("kubeconfig")
    if kubeconfig is not None and (not isinstance(kubeconfig, str) or not kubeconfig):
        raise _bad_field("kubeconfig", "must be the path of a kubeconfig file")
    lock_timeout = document.get("lockTimeoutSeconds", DEFAULT_LOCK_TIMEOUT_SECONDS)
    if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float) or lock_timeout <= 0:
        raise _bad_field("lockTimeoutSeconds", f"must be a positive number, got {lock_timeout!r}")
    prev_result = document.get("prevResult")
    if prev_result is not None and not isinstance(prev_result, dict):
        raise _bad_field("prevResult", "must be a CNI result object")
    return NetConf(
        raw=document,
        cni_version=version,
        name=name,
        mac_generation_string=mac_string or "",
        mtu=mtu,
        ipam=ipam,
        state_dir=state_dir,
        pin_dir=pin_dir,
        kubeconfig=kubeconfig,
        lock_timeout_seconds=float(lock_timeout),
        prev_result=prev_result,
    )


def _bad_field(name: str, problem: str) -> CniError:
    return CniError(errors.INVALID_CONFIG, f"invalid network configuration: field {name!r} {problem}")
