"""One CNI call as a function: (CNI_* environment, stdin) -> (exit status, stdout), for the node agent.

The node agent serves the calls the node shim (``flexsfc/cni/shim/flexsfc-cni.c``) passes it over
its unix socket, in-process, with the plugin's own verbs (:mod:`flexsfc.cni.commands`) and locking.
:func:`handle` does what :mod:`flexsfc.cni.main` does for one process, without touching the process's
stdin, stdout or exit: validation, the verb, the spec's JSON error (code 5 for a bug, traceback on the
logger). Nothing here imports pyroute2 before a verb needs it, and nothing registers pyroute2 as a
bare package (:mod:`flexsfc.cni.main` does; a long-running agent imports pyroute2 whole).

Node-level settings (state and pin directories, kubeconfig) never come from the call: the server
passes its own :class:`~flexsfc.cni.config.NodeConf`. The only environment a call brings is its
``CNI_*`` variables.

Nothing of a call goes through the process environment: its ``CNI_*`` variables travel in
:class:`~flexsfc.cni.config.Environment` (``variables``) down to the IPAM delegation
(:func:`flexsfc.cni.ipam.run` builds the delegate's environment from them), so served calls run
concurrently (the state directory's lock serialises what must be: ADD, DEL and GC) and never leak
into processes other threads of the agent start.
"""

import json
import logging
from collections.abc import Mapping
from typing import Any

from flexsfc.cni import errors
from flexsfc.cni.config import (
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    NodeConf,
    decode_json,
    parse_netconf,
    read_command,
    read_environment,
    read_node_config,
)
from flexsfc.cni.errors import CniError

log = logging.getLogger(__name__)


def handle(environ: Mapping[str, str], stdin: bytes, node: NodeConf | None = None) -> tuple[int, bytes]:
    """Run one CNI call; its exit status (0 or 1) and what it prints on stdout.

    ``environ`` holds the call's variables; ``node`` the node-level settings (None: read them from
    ``environ`` and the node file, as the plugin executable does). With ``node`` given the call is a
    served one: only its ``CNI_*`` variables count.
    """
    served = node is not None
    if served:
        environ = {key: value for key, value in environ.items() if key.startswith("CNI_")}
    try:
        output = _run(environ, stdin, node)
    except CniError as exc:
        return 1, _dump(exc.to_json_dict(_error_version(stdin)))
    except Exception as exc:  # a bug or an unexpected OS failure: still answer in the spec's format
        log.exception("flexsfc-cni: %s failed", environ.get("CNI_COMMAND", "call"))
        error = CniError(errors.IO_FAILURE, f"internal error: {type(exc).__name__}", str(exc))
        return 1, _dump(error.to_json_dict(_error_version(stdin)))
    return 0, b"" if output is None else _dump(output)


def _run(environ: Mapping[str, str], stdin: bytes, node: NodeConf | None) -> dict[str, Any] | None:
    command = read_command(environ)
    if command == "VERSION":
        return version_report(stdin)
    env = read_environment(command, environ)
    document = decode_json(stdin)
    node = node if node is not None else read_node_config(environ)
    conf = parse_netconf(document, need_plugin_fields=command in ("ADD", "CHECK"), node=node)
    from flexsfc.cni import commands  # netlink and IPAM code: only once the input is valid

    if command == "ADD":
        return commands.add(env, conf)
    if command == "DEL":
        commands.delete(env, conf)
    elif command == "CHECK":
        commands.check(env, conf)
    elif command == "STATUS":
        commands.status(env, conf)
    else:
        commands.gc(env, conf)
    return None


def version_report(stdin: bytes) -> dict[str, Any]:
    """VERSION answers whatever it is sent (runtimes may send an empty or partial document)."""
    try:
        requested = decode_json(stdin).get("cniVersion") if stdin.strip() else None
    except CniError:
        requested = None
    return {
        "cniVersion": requested if isinstance(requested, str) and requested else LATEST_VERSION,
        "supportedVersions": list(SUPPORTED_VERSIONS),
    }


def _error_version(stdin: bytes) -> str:
    try:
        version = json.loads(stdin).get("cniVersion")
    except (ValueError, AttributeError):
        return LATEST_VERSION
    return version if isinstance(version, str) and version else LATEST_VERSION


def _dump(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode()
