"""Entry point of the ``flexsfc-cni`` executable: CNI_* environment + configuration on stdin in,
result or the spec's error JSON on stdout out (exit status 1 on error).

Only the standard library and flexsfc's small model modules are imported before the verb is known;
pyroute2 and the kubernetes client load on demand (start-up time is part of every pod's creation).
"""

import json
import os
import sys
import traceback
from typing import Any

from flexsfc.cni.lightimport import register_bare_package

# Before any pyroute2 import: load only the submodules we use (see lightimport).
register_bare_package("pyroute2")

from flexsfc.cni import errors  # noqa: E402
from flexsfc.cni.config import (  # noqa: E402
    LATEST_VERSION,
    SUPPORTED_VERSIONS,
    decode_json,
    parse_netconf,
    read_command,
    read_environment,
)
from flexsfc.cni.errors import CniError  # noqa: E402


def run(environ: dict[str, str], stdin: bytes) -> dict[str, Any] | None:
    """Execute one CNI call; the JSON document to print, if any."""
    command = read_command(environ)
    if command == "VERSION":
        return version_report(stdin)
    env = read_environment(command, environ)
    document = decode_json(stdin)
    conf = parse_netconf(document, need_plugin_fields=command in ("ADD", "CHECK"))
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


def main() -> None:
    stdin = sys.stdin.buffer.read()
    try:
        output = run(dict(os.environ), stdin)
    except CniError as exc:
        _emit(exc.to_json_dict(_error_version(stdin)))
        sys.exit(1)
    except Exception as exc:  # a bug or an unexpected OS failure: still answer in the spec's format
        traceback.print_exc(file=sys.stderr)
        _emit(
            CniError(errors.IO_FAILURE, f"internal error: {type(exc).__name__}", str(exc)).to_json_dict(
                _error_version(stdin)
            )
        )
        sys.exit(1)
    if output is not None:
        _emit(output)


def _emit(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
