"""Delegation to the IPAM plugin named by ``ipam.type`` (for flexsfc: Debian's ``static``).

The plugin is run exactly as a runtime runs us: same CNI_* environment, the whole network
configuration on stdin. The CNI_* variables are the call's own (:attr:`Environment.variables`, passed
down explicitly), never the process's: the node agent serves many calls at once in one process, so
its environment holds no call's variables; the rest of the delegate's environment (``PATH``, ...) is
the serving process's. It is looked up on the call's ``CNI_PATH``, unless the process that serves
the call names its own plugin directories in ``FLEXSFC_IPAM_PATH``: the node agent does (its image's
``/usr/lib/cni``, Debian's containernetworking-plugins), so a served call never runs a plugin from the
node's CNI directory and the install writes nothing there but ``flexsfc-cni`` (docs/kubernetes.md).

Plugins that do not speak the configuration's cniVersion (``static`` stops at 1.0.0) are retried at
the newest version both sides support; 1.0.0 and 1.1.0 results are identical in what IPAM returns
(ips, routes, dns).
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flexsfc.cni import errors
from flexsfc.cni.config import SUPPORTED_VERSIONS, Environment, NetConf, version_tuple
from flexsfc.cni.errors import CniError


@dataclass(frozen=True)
class IpamResult:
    ips: tuple[dict[str, Any], ...] = ()  # {"address": CIDR, "gateway"?: IP}
    routes: tuple[dict[str, Any], ...] = ()  # {"dst": CIDR, "gw"?: IP, ...}
    dns: dict[str, Any] = field(default_factory=dict)


# The serving process's own IPAM plugin directories (os.pathsep-separated); when set, they replace the
# call's CNI_PATH for the lookup and for the delegate's own CNI_PATH.
ENV_IPAM_PATH = "FLEXSFC_IPAM_PATH"


def plugin_path(cni_path: tuple[str, ...], environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Where IPAM plugins are looked up: ``FLEXSFC_IPAM_PATH`` of this process when set, else CNI_PATH."""
    own = (os.environ if environ is None else environ).get(ENV_IPAM_PATH, "")
    directories = tuple(p for p in own.split(os.pathsep) if p)
    return directories or cni_path


def find_plugin(plugin_type: str, cni_path: tuple[str, ...]) -> str:
    for directory in cni_path:
        candidate = os.path.join(directory, plugin_type)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(
        errors.IPAM_FAILURE,
        f"IPAM plugin {plugin_type!r} (field 'ipam.type') not found",
        f"searched {os.pathsep.join(cni_path) or '(empty)'} (CNI_PATH, or {ENV_IPAM_PATH} of the agent); "
        "install it there or fix the path",
    )


def run(
    command: str,
    netconf: NetConf,
    env: Environment,
    overrides: Mapping[str, str] | None = None,
) -> IpamResult | None:
    """Run the IPAM plugin for ``command``; its result for ADD, None otherwise.

    ``overrides`` replaces CNI_* variables (GC releases other containers' attachments).
    """
    assert netconf.ipam is not None
    plugin_type = netconf.ipam["type"]
    search = plugin_path(env.cni_path)
    binary = find_plugin(plugin_type, search)
    environ = delegate_environment(env, command, search, overrides)
    document = dict(netconf.raw)
    try:
        return _run_once(binary, plugin_type, command, document, environ)
    except CniError as exc:
        if exc.code != errors.INCOMPATIBLE_VERSION:
            raise
        document["cniVersion"] = _best_common_version(binary, plugin_type, netconf.cni_version, environ)
        if isinstance(document.get("prevResult"), dict):
            # CHECK: the delegate parses prevResult at the version it was given.
            document["prevResult"] = dict(document["prevResult"], cniVersion=document["cniVersion"])
        return _run_once(binary, plugin_type, command, document, environ)


def delegate_environment(
    env: Environment,
    command: str,
    search: tuple[str, ...],
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The IPAM delegate's environment: the serving process's own variables except CNI_*, then the
    call's CNI_* (``env.variables``), its ``CNI_COMMAND`` and ``CNI_PATH``, then ``overrides``."""
    environ = {key: value for key, value in os.environ.copy().items() if not key.startswith("CNI_")}
    environ.update(env.variables)
    environ.update({"CNI_COMMAND": command, "CNI_PATH": os.pathsep.join(search)})
    environ.update(overrides or {})
    return environ


def _run_once(
    binary: str, plugin_type: str, command: str, document: dict[str, Any], environ: dict[str, str]
) -> IpamResult | None:
    output = _exec(binary, plugin_type, document, environ)
    if command != "ADD":
        return None
    try:
        result = json.loads(output)
        return IpamResult(
            ips=tuple(result.get("ips") or ()),
            routes=tuple(result.get("routes") or ()),
            dns=dict(result.get("dns") or {}),
        )
    except (ValueError, AttributeError, TypeError) as exc:
        raise CniError(
            errors.IPAM_FAILURE, f"IPAM plugin {plugin_type!r} returned an unreadable result", str(exc)
        ) from None


def _exec(binary: str, plugin_type: str, document: dict[str, Any], environ: dict[str, str]) -> bytes:
    import subprocess  # ~5 ms of start-up that L2 attachments never need

    try:
        done = subprocess.run(
            [binary], input=json.dumps(document).encode(), env=environ, capture_output=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CniError(errors.IPAM_FAILURE, f"IPAM plugin {plugin_type!r} could not run", str(exc)) from None
    if done.returncode == 0:
        return done.stdout
    raise _plugin_error(plugin_type, done.stdout, done.stderr)


def _plugin_error(plugin_type: str, stdout: bytes, stderr: bytes) -> CniError:
    """The delegate's own error, code included, so the runtime sees what really failed."""
    try:
        reported = json.loads(stdout)
        code = int(reported["code"])
        message = f"IPAM plugin {plugin_type!r}: {reported.get('msg', '')}"
        return CniError(code, message, str(reported.get("details", "")))
    except (ValueError, KeyError, TypeError):
        detail = (stderr or stdout).decode(errors="replace").strip()[:500]
        return CniError(errors.IPAM_FAILURE, f"IPAM plugin {plugin_type!r} failed", detail)


def _best_common_version(binary: str, plugin_type: str, wanted: str, environ: dict[str, str]) -> str:
    probe = dict(environ, CNI_COMMAND="VERSION")
    output = _exec(binary, plugin_type, {"cniVersion": wanted}, probe)
    try:
        theirs = set(json.loads(output)["supportedVersions"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CniError(
            errors.IPAM_FAILURE, f"IPAM plugin {plugin_type!r}: unreadable VERSION", str(exc)
        ) from None
    common = [v for v in SUPPORTED_VERSIONS if v in theirs and version_tuple(v) <= version_tuple(wanted)]
    if not common:
        raise CniError(
            errors.INCOMPATIBLE_VERSION,
            f"IPAM plugin {plugin_type!r} supports no CNI version up to {wanted}",
            f"it supports {sorted(theirs)}",
        )
    return max(common, key=version_tuple)
