"""`flexsfc agent-health`: the node agent's probe, run by the kubelet as an exec probe in its container.

Exec probes need nothing listening beyond the node's loopback: `--url` asks Kopf's liveness endpoint
(bound to 127.0.0.1 by the DaemonSet), `--socket` sends the CNI socket a VERSION call, the cheapest
call that goes through the agent's server and handler threads, exactly as the node shim connects.
Exit 0 when every check passed, 1 otherwise (one line per failure on stderr).
"""

import urllib.error
import urllib.request

import click

# A CNI VERSION request: no side effects, answered by the agent's in-process plugin.
_VERSION_CALL = ({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.1.0"}')


def check_url(url: str, timeout: float) -> str | None:
    """None when `url` answers 200, else what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url}: HTTP {status}"


def check_socket(path: str, timeout: float) -> str | None:
    """None when the agent's CNI socket answers a VERSION call, else what went wrong."""
    from flexsfc.agent.cni_server import ProtocolError, call

    environ, stdin = _VERSION_CALL
    try:
        status, stdout = call(path, environ, stdin, timeout=timeout)
    except (OSError, ProtocolError) as exc:
        return f"CNI socket {path}: {exc}"
    if status != 0:
        return f"CNI socket {path}: VERSION answered exit {status}: {stdout[:200]!r}"
    return None


@click.command("agent-health")
@click.option("--url", "urls", multiple=True, help="An HTTP endpoint that must answer 200 (repeatable).")
@click.option(
    "--socket", "sockets", multiple=True, help="A CNI socket that must answer VERSION (repeatable)."
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per check.")
def agent_health(urls: tuple[str, ...], sockets: tuple[str, ...], timeout: float) -> None:
    """Probe the node agent: Kopf's liveness endpoint and/or the CNI socket (for exec probes)."""
    if not urls and not sockets:
        raise click.UsageError("give at least one --url or --socket")
    problems = [p for p in (check_url(u, timeout) for u in urls) if p]
    problems += [p for p in (check_socket(s, timeout) for s in sockets) if p]
    for problem in problems:
        click.echo(f"unhealthy: {problem}", err=True)
    if problems:
        raise SystemExit(1)
