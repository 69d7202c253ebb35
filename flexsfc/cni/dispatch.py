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

One thing of the plugin reads the process environment: the IPAM delegation
(:func:`flexsfc.cni.ipam.run` starts the IPAM plugin with ``os.environ`` plus ``CNI_COMMAND`` and
``CNI_PATH``, so ``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME`` and ``CNI_ARGS`` come from the
process). A served call with IPAM (L3) therefore runs under :data:`_ENVIRON_LOCK` with the process's
``CNI_*`` variables set to its own, restored afterwards. That costs no concurrency the plugin had:
ADD, DEL and GC already hold the state directory's exclusive lock around IPAM. L2 calls, STATUS and
VERSION never take it. (Passing the call's environment to ``ipam.run`` explicitly would remove the
lock; that is a change to ipam.py, left to the CNI's owner.)
"""

import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from flexsfc.cni import errors
from flexsfc.cni.config import (
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    NetConf,
    NodeConf,
    decode_json,
    parse_netconf,
    read_command,
    read_environment,
    read_node_config,
)
from flexsfc.cni.errors import CniError

log = logging.getLogger(__name__)


_ENVIRON_LOCK = threading.Lock()


def handle(environ: Mapping[str, str], stdin: bytes, node: NodeConf | None = None) -> tuple[int, bytes]:
    """Run one CNI call; its exit status (0 or 1) and what it prints on stdout.

    ``environ`` holds the call's variables; ``node`` the node-level settings (None: read them from
    ``environ`` and the node file, as the plugin executable does). With ``node`` given the call is a
    served one: only its ``CNI_*`` variables count (see the module's note on IPAM).
    """
    served = node is not None
    if served:
        environ = {key: value for key, value in environ.items() if key.startswith("CNI_")}
    try:
        output = _run(environ, stdin, node, served)
    except CniError as exc:
        return 1, _dump(exc.to_json_dict(_error_version(stdin)))
    except Exception as exc:  # a bug or an unexpected OS failure: still answer in the spec's format
        log.exception("flexsfc-cni: %s failed", environ.get("CNI_COMMAND", "call"))
        error = CniError(errors.IO_FAILURE, f"internal error: {type(exc).__name__}", str(exc))
        return 1, _dump(error.to_json_dict(_error_version(stdin)))
    return 0, b"" if output is None else _dump(output)


def _run(
    environ: Mapping[str, str], stdin: bytes, node: NodeConf | None, served: bool
) -> dict[str, Any] | None:
    command = read_command(environ)
    if command == "VERSION":
        return version_report(stdin)
    env = read_environment(command, environ)
    document = decode_json(stdin)
    node = node if node is not None else read_node_config(environ)
    conf = parse_netconf(document, need_plugin_fields=command in ("ADD", "CHECK"), node=node)
    from flexsfc.cni import commands  # netlink and IPAM code: only once the input is valid

    with _call_environment(environ, conf) if served and conf.ipam else _nothing():
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


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _call_environment(environ: Mapping[str, str], conf: NetConf) -> Iterator[None]:
    """The process's CNI_* variables are this call's while the block runs (for the IPAM plugin)."""
    if not _ENVIRON_LOCK.acquire(timeout=conf.lock_timeout_seconds):
        raise CniError(
            errors.TRY_AGAIN_LATER,
            f"another CNI call with IPAM held the agent for more than {conf.lock_timeout_seconds:g} s",
            "retry; raise lockTimeoutSeconds if calls are slow",
        )
    saved = {key: value for key, value in os.environ.items() if key.startswith("CNI_")}
    try:
        for key in saved:
            del os.environ[key]
        os.environ.update(environ)
        yield
    finally:
        for key in [key for key in os.environ if key.startswith("CNI_")]:
            del os.environ[key]
        os.environ.update(saved)
        _ENVIRON_LOCK.release()


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
