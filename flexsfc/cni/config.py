"""The two inputs of every invocation: the environment (CNI_*) and the network configuration (stdin).

Both are validated up front so a verb never starts changing the system with bad input; errors name
the variable or the field and say how to fix it.
"""

import json
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flexsfc.cni import errors
from flexsfc.cni.errors import CniError
from flexsfc.model.constants import DEFAULT_CNI_STATE_DIR, DEFAULT_PIN_DIR, MAX_IFNAME_LEN

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = "1.1.0"
VERBS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# The spec's rule for container ids and network names: alphanumerics plus a few separators, not
# starting with one (so neither can be '.', '..' or hold a '/').
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME = _CONTAINER_ID
DEFAULT_LOCK_TIMEOUT_SECONDS = 10.0
# A tenant's NAD chooses how long its own call waits for the lock: finite and bounded, so a call can
# never wait forever (NaN and Infinity are valid JSON for Python's decoder).
MAX_LOCK_TIMEOUT_SECONDS = 30.0

# Node-level configuration. The network configuration comes from a NetworkAttachmentDefinition, which
# any tenant allowed to create one writes; the plugin runs as root on the node. Every setting that
# names a path on the node (where records are written and removed, which pinned data plane DEL
# writes to, which credentials annotate pods) therefore comes from the node only: this file (written
# by the node's install) and these environment variables (set by whatever runs the plugin on the node:
# the container runtime or Multus, the local runtime, the tests). A variable overrides the file's key.
DEFAULT_NODE_CONFIG = "/etc/flexsfc/cni.conf"
ENV_NODE_CONFIG = "FLEXSFC_CNI_CONF"
ENV_STATE_DIR = "FLEXSFC_CNI_STATE_DIR"
ENV_PIN_DIR = "FLEXSFC_CNI_PIN_DIR"
ENV_KUBECONFIG = "FLEXSFC_CNI_KUBECONFIG"  # set and empty: no annotation, whatever the file says
# Where the node agent listens for the shim, and where the shim queues a DEL the agent could not take.
ENV_SOCKET = "FLEXSFC_CNI_SOCKET"
DEFAULT_SOCKET = "/run/flexsfc/cni.sock"
ENV_DELETE_QUEUE = "FLEXSFC_CNI_DELETE_QUEUE"
DEFAULT_DELETE_QUEUE = "/var/lib/flexsfc/cni-del-queue"
NODE_LEVEL_FIELDS = {
    "stateDir": ENV_STATE_DIR,
    "pinDir": ENV_PIN_DIR,
    "kubeconfig": ENV_KUBECONFIG,
    "socket": ENV_SOCKET,
    "deleteQueue": ENV_DELETE_QUEUE,
}


# The static IPAM plugin's configuration keys: the only ones a network configuration may pass on.
IPAM_KEYS = frozenset({"type", "addresses", "routes", "dns"})


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
    # Every CNI_* variable of the call, as given: what the IPAM delegate is run with (flexsfc.cni.ipam).
    # Explicit, never the process's environment: the node agent serves many calls at once.
    variables: Mapping[str, str] = field(default_factory=dict)

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
        if not _CONTAINER_ID.fullmatch(container_id):  # fullmatch: "$" would let a trailing "\n" in
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
        variables={key: value for key, value in environ.items() if key.startswith("CNI_")},
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
class NodeConf:
    """The settings only the node may choose (see :data:`NODE_LEVEL_FIELDS`)."""

    state_dir: str = DEFAULT_CNI_STATE_DIR
    pin_dir: str = DEFAULT_PIN_DIR  # the node's pinned data plane, told on DEL that ports are leaving
    kubeconfig: str | None = None
    socket: str = DEFAULT_SOCKET  # the node agent's CNI socket (the shim's peer)
    delete_queue: str = DEFAULT_DELETE_QUEUE  # DELs the shim queued while the agent was down


def node_environment(
    state_dir: str | None = None, pin_dir: str | None = None, kubeconfig: str | None = ""
) -> dict[str, str]:
    """The environment that gives a plugin process these node-level settings (for whoever runs it on
    the node: the local runtime, tests, benchmarks). ``None`` leaves a setting to the node file or
    default; the default ``kubeconfig=""`` turns annotation off whatever the node file says."""
    values = {ENV_STATE_DIR: state_dir, ENV_PIN_DIR: pin_dir, ENV_KUBECONFIG: kubeconfig}
    return {key: value for key, value in values.items() if value is not None}


def read_node_config(environ: Mapping[str, str]) -> NodeConf:
    """Node file (``$FLEXSFC_CNI_CONF``, else /etc/flexsfc/cni.conf when it exists), then variables."""
    explicit = environ.get(ENV_NODE_CONFIG)
    path = explicit or DEFAULT_NODE_CONFIG
    document: dict[str, Any] = {}
    try:
        with open(path, "rb") as handle:
            document = json.loads(handle.read() or b"{}")
    except FileNotFoundError:
        if explicit:  # a named file that is missing is a broken install, not "use the defaults"
            raise _bad_node(path, f"does not exist (named by {ENV_NODE_CONFIG})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad_node(path, f"cannot be read as JSON: {exc}") from None
    if not isinstance(document, dict):
        raise _bad_node(path, "must be a JSON object")
    unknown = sorted(set(document) - set(NODE_LEVEL_FIELDS))
    if unknown:
        raise _bad_node(path, f"has unknown keys {unknown}; it may set {sorted(NODE_LEVEL_FIELDS)}")
    values: dict[str, Any] = {}
    for key, variable in NODE_LEVEL_FIELDS.items():
        # An empty variable is unset, except FLEXSFC_CNI_KUBECONFIG: empty turns annotation off.
        from_environment = bool(environ.get(variable)) or (key == "kubeconfig" and variable in environ)
        where = f"{variable} (environment)" if from_environment else f"{key!r} in {path}"
        value = environ[variable] if from_environment else document.get(key)
        if value is None or (key == "kubeconfig" and value == ""):
            continue
        if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
            raise _bad_node(where, f"must be an absolute path, got {value!r}")
        values[key] = os.path.normpath(value)
    return NodeConf(
        state_dir=values.get("stateDir", DEFAULT_CNI_STATE_DIR),
        pin_dir=values.get("pinDir", DEFAULT_PIN_DIR),
        kubeconfig=values.get("kubeconfig"),
        socket=values.get("socket", DEFAULT_SOCKET),
        delete_queue=values.get("deleteQueue", DEFAULT_DELETE_QUEUE),
    )


def _bad_node(where: str, problem: str) -> CniError:
    return CniError(
        errors.INVALID_CONFIG,
        f"invalid node configuration: {where} {problem}",
        f"fix the node's flexsfc-cni configuration ({DEFAULT_NODE_CONFIG}, {ENV_NODE_CONFIG} or "
        f"{', '.join(NODE_LEVEL_FIELDS.values())}); see docs/cni.md",
    )


@dataclass(frozen=True)
class NetConf:
    """The flexsfc-cni network configuration (a NetworkAttachmentDefinition's spec.config)."""

    raw: dict[str, Any]  # the whole document, passed on to the IPAM plugin
    cni_version: str
    name: str
    mac_generation_string: str
    mtu: int | None
    ipam: dict[str, Any] | None
    state_dir: str  # node-level (NodeConf), never from the network configuration
    pin_dir: str  # node-level: the pinned data plane, told on DEL that the pod's ports are leaving
    kubeconfig: str | None  # node-level
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


def parse_netconf(
    document: dict[str, Any], *, need_plugin_fields: bool = True, node: NodeConf | None = None
) -> NetConf:
    """Validate the configuration; code 7 (invalid config) names the field and the fix.

    ``need_plugin_fields`` (``macGenerationString``) is False for DEL, GC and STATUS: removing an
    attachment must work whatever the configuration has become, and GC/STATUS act on the network.
    For the same reason a node-level field in the network configuration is an error for ADD and CHECK
    (``need_plugin_fields``) but only ignored, with a warning, by DEL, GC and STATUS: a pod whose NAD
    still carries one (written before these fields became node-level) must still be deleted.
    """
    node = node or NodeConf()
    version = read_version(document)
    _refuse_node_level_fields(document, fatal=need_plugin_fields)
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise _bad_field("name", "is required: the network name (a non-empty string)")
    if not _NETWORK_NAME.fullmatch(name):
        # The spec's rule (libcni enforces it too); IPAM plugins such as host-local use it in paths.
        raise _bad_field(
            "name",
            f"must start with a letter or digit and hold only letters, digits, '_', '.', '-': {name!r}",
        )
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
        # A file name on CNI_PATH, nothing else: no directory part, no '.'/'..', no NUL.
        if (
            not isinstance(ipam_type, str)
            or ipam_type in ("", ".", "..")
            or any(c in ipam_type for c in "/\0")
        ):
            raise _bad_field("ipam.type", 'must name an IPAM plugin found on CNI_PATH, e.g. "static"')
        # The IPAM plugin runs as root in the agent's mounts: keys such as host-local's dataDir would
        # let a NAD's author make or write paths on the node. Only the static plugin's keys pass.
        unknown = sorted(set(ipam) - IPAM_KEYS)
        if unknown:
            raise _bad_field(
                "ipam", f"has keys {unknown}; only {sorted(IPAM_KEYS)} are accepted (the static plugin's)"
            )
    lock_timeout = document.get("lockTimeoutSeconds", DEFAULT_LOCK_TIMEOUT_SECONDS)
    if (
        isinstance(lock_timeout, bool)
        or not isinstance(lock_timeout, int | float)
        or not math.isfinite(lock_timeout)
        or not 0 < lock_timeout <= MAX_LOCK_TIMEOUT_SECONDS
    ):
        raise _bad_field(
            "lockTimeoutSeconds",
            f"must be a number of seconds above 0 and at most {MAX_LOCK_TIMEOUT_SECONDS:g}, "
            f"got {lock_timeout!r}",
        )
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
        state_dir=node.state_dir,
        pin_dir=node.pin_dir,
        kubeconfig=node.kubeconfig,
        lock_timeout_seconds=float(lock_timeout),
        prev_result=prev_result,
    )


def _refuse_node_level_fields(document: dict[str, Any], *, fatal: bool) -> None:
    for key, variable in NODE_LEVEL_FIELDS.items():
        if key not in document:
            continue
        if not fatal:
            print(
                f"flexsfc-cni: ignoring field {key!r} of the network configuration: it is node-level "
                f"({DEFAULT_NODE_CONFIG} or {variable})",
                file=sys.stderr,
            )
            continue
        raise CniError(
            errors.INVALID_CONFIG,
            f"invalid network configuration: field {key!r} is node-level and may not be set in the "
            "network configuration (NetworkAttachmentDefinition)",
            f"remove {key!r} from the NetworkAttachmentDefinition; the node sets it in "
            f"{DEFAULT_NODE_CONFIG} (or {variable} in the plugin's environment), see docs/cni.md",
        )


def _bad_field(name: str, problem: str) -> CniError:
    return CniError(errors.INVALID_CONFIG, f"invalid network configuration: field {name!r} {problem}")
