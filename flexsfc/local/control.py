"""Client side of the supervisor: start it, send it requests, and clean up when it is gone.

A command that finds no supervisor but the state of one that died (`up`, `status`, `scale`, `down`)
starts a new one, which adopts the runtime (`supervisor_for`); only when that fails does `down` fall
back to removing everything from the state file.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal

from flexsfc.local.config import RuntimeConfig
from flexsfc.local.locks import (
    EXIT_CLAIMED,
    EXIT_LOCKED,
    EXIT_NOT_ADOPTED,
    LockBusy,
    acquire,
    claimed_by_other,
    drop_claims,
)
from flexsfc.local.node import serving_cni
from flexsfc.local.pod import cleanup_pod_state, remove_sandbox, signal_group
from flexsfc.local.state import RuntimeState, read_state
from flexsfc.local.status import ApplyResult, Reaction, ReadyStatus, RuntimeStatus, ScaleResult, SessionRecord
from flexsfc.util import jsonline

START_TIMEOUT_SECONDS = 20.0
# How long a command waits for another one that is starting the same runtime (`up` waits for pods).
START_LOCK_TIMEOUT_SECONDS = 300.0

How = Literal["running", "started", "adopted"]


class SupervisorError(RuntimeError):
    """The supervisor refused or failed a request; the message says why."""


class SupervisorNotRunning(SupervisorError):
    pass


class SupervisorConflict(SupervisorError):
    """The new supervisor exited before touching anything: the directory, pins or prefix are taken."""


def request(config: RuntimeConfig, op: str, timeout: float = 300.0, **fields: Any) -> Any:
    path = str(config.socket_path)
    try:
        reply = jsonline.call(path, {"op": op, **fields}, timeout)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise SupervisorNotRunning(f"no local runtime supervisor at {path}") from exc
    if reply is None:
        raise SupervisorError(f"supervisor closed the connection during {op!r}; see {config.supervisor_log}")
    if not reply.get("ok"):
        raise SupervisorError(reply.get("error", "unknown error"))
    return reply.get("result")


def apply(config: RuntimeConfig, path: str, namespace: str | None = None) -> ApplyResult:
    return ApplyResult.from_json(request(config, "apply", path=path, namespace=namespace))


def ready(config: RuntimeConfig) -> ReadyStatus:
    return ReadyStatus.from_json(request(config, "ready"))


def scale(config: RuntimeConfig, name: str, replicas: int, namespace: str | None = None) -> ScaleResult:
    return ScaleResult.from_json(request(config, "scale", name=name, replicas=replicas, namespace=namespace))


def status(config: RuntimeConfig, timeout: float = 300.0) -> RuntimeStatus:
    return RuntimeStatus.from_json(request(config, "status", timeout=timeout))


def sessions(config: RuntimeConfig, xc: str | None = None) -> list[SessionRecord]:
    return [SessionRecord.from_json(s) for s in request(config, "sessions", xc=xc)]


def fail_node(config: RuntimeConfig, node: str) -> dict[str, Any]:
    """Remove a simulated node abruptly (flexsfc.local.runtime.Runtime.fail_node)."""
    result: dict[str, Any] = request(config, "node_fail", node=node)
    return result


def reactions(config: RuntimeConfig) -> list[Reaction]:
    return [Reaction.from_json(r) for r in request(config, "reactions")]


def flows(config: RuntimeConfig, last: int | None = None) -> dict[str, Any]:
    """The supervisor's flow history (flexsfc.agent.flow_history.FlowHistory.to_json)."""
    return dict(request(config, "flows", timeout=30, last=last))


def set_flow_history(config: RuntimeConfig, size: int) -> dict[str, Any]:
    """Keep the last `size` flow events from now on (0: off)."""
    return dict(request(config, "flow_history", timeout=30, size=size))


def is_running(config: RuntimeConfig) -> bool:
    try:
        request(config, "ping", timeout=5)
        return True
    except SupervisorError:
        return False


@contextlib.contextmanager
def supervisor_for(config: RuntimeConfig, *, create: bool, metrics_port: int = 0) -> Iterator[How]:
    """A supervisor answering for `config` during the block: the running one, or one started now.

    A started one adopts the runtime when the state directory holds a dead supervisor's state
    ("adopted"), else starts empty ("started"; only with `create`, else SupervisorNotRunning).
    Deciding and starting happen under the directory's start lock, held for the block, so two
    commands never both start one; a command that finds one running does not wait for the lock.
    """
    if is_running(config):
        yield "running"
        return
    if not create and not config.state_file.exists():
        raise SupervisorNotRunning(f"no local runtime in {config.state_dir}")
    try:
        lock = acquire(config.start_lock, timeout=START_LOCK_TIMEOUT_SECONDS)
    except LockBusy as exc:
        raise SupervisorError(
            f"command {exc.holder.get('pid', '?')} has been starting the runtime in {config.state_dir} "
            f"for over {START_LOCK_TIMEOUT_SECONDS:.0f}s; try again when it is done"
        ) from None
    with lock:
        lock.write({"pid": os.getpid()})
        if is_running(config):  # started by whoever held the lock before us
            yield "running"
            return
        adopting = config.state_file.exists()
        if not create and not adopting:
            raise SupervisorNotRunning(f"no local runtime in {config.state_dir}")
        start_supervisor(config, metrics_port=metrics_port)
        yield "adopted" if adopting else "started"


def start_supervisor(config: RuntimeConfig, verbose: bool = False, metrics_port: int = 0) -> int:
    """Start the supervisor in its own session; return its PID once it answers on its socket.

    When another supervisor holds the state directory (it is starting, or adopting), wait for that
    one to answer instead. Raises SupervisorConflict when the new one touched nothing and left.
    """
    config.root.mkdir(parents=True, exist_ok=True)
    config.save()
    argv = [
        sys.executable,
        "-m",
        "flexsfc.local.supervisor",
        "--state-dir",
        config.state_dir,
        "--pin-dir",
        config.pin_dir,
        "--netns-prefix",
        config.netns_prefix,
    ]
    if config.nodes > 1:
        argv += ["--nodes", str(config.nodes)]
    if verbose:
        argv.append("--verbose")
    if metrics_port:
        argv += ["--metrics-port", str(metrics_port)]
    with open(config.supervisor_log, "ab") as logf:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        code = proc.poll()
        if code == EXIT_LOCKED:
            while time.monotonic() < deadline:
                with contextlib.suppress(SupervisorError):
                    return int(request(config, "ping", timeout=5)["pid"])
                time.sleep(0.05)
            raise SupervisorConflict(f"{_last_line(config)}, but it does not answer on {config.socket_path}")
        if code in (EXIT_CLAIMED, EXIT_NOT_ADOPTED):
            raise SupervisorConflict(_last_line(config))
        if code is not None:
            tail = log_tail(config)
            raise SupervisorError(
                f"the supervisor failed to start: {_last_line(config)}\n--- supervisor log ---\n{tail}"
            )
        if is_running(config):
            return proc.pid
        time.sleep(0.05)
    proc.kill()
    raise SupervisorError(
        f"supervisor did not answer within {START_TIMEOUT_SECONDS:.0f}s:\n{log_tail(config)}"
    )


def _last_line(config: RuntimeConfig) -> str:
    tail = log_tail(config).strip()
    line = tail.splitlines()[-1] if tail else "no output"
    # Drop the logging prefix ("12:00:00.000 ERROR flexsfc.local.supervisor: "): the message is the news.
    return line.split(": ", 1)[1] if " flexsfc.local.supervisor: " in line else line


def log_tail(config: RuntimeConfig, lines: int = 20) -> str:
    try:
        return "\n".join(config.supervisor_log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no supervisor log)"


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when this process started it (demo, tests)
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # exited; only its parent can reap it
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.05)
    return False


def down(config: RuntimeConfig) -> list[str]:
    """Stop everything through the supervisor: the running one, or a new one that adopts what a dead
    one left (graceful: drained, preStop hooks). Only when that fails, remove it all from the state
    file on disk."""
    try:
        with supervisor_for(config, create=False):
            state = read_state(config)
            result = request(config, "down")
        if state is not None and state.supervisor_pid:
            wait_pid_gone(state.supervisor_pid, 30)
        errors = list(result.get("errors", []))
    except SupervisorNotRunning:
        errors = cleanup_from_state(config, read_state(config))
    except SupervisorConflict as exc:
        errors = [str(exc)] if is_running(config) else cleanup_from_state(config, read_state(config))
    except SupervisorError as exc:
        errors = [str(exc), *cleanup_from_state(config, read_state(config))]
    return errors


def cleanup_from_state(config: RuntimeConfig, state: RuntimeState | None) -> list[str]:
    """The supervisor died: kill what it started, CNI DEL, remove namespaces, pins and the state."""
    errors: list[str] = []
    pid = state.supervisor_pid if state is not None else 0
    if pid and _is_supervisor(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pods = [*state.pods, *state.orphans] if state is not None else []
    if pods and config.nodes > 1:
        # The pods' host veths and records live in their node's namespace and directory, which
        # cleanup_nodes removes: only their processes and namespaces are left to remove here.
        for pod in pods:
            for info in pod.processes:
                signal_group(info, signal.SIGKILL)
            remove_sandbox(pod.netns)
    elif pods:
        if pid:
            wait_pid_gone(pid, 10)  # its CNI socket must be dead before this process serves it
        with serving_cni(config, errors):
            for pod in pods:
                errors.extend(cleanup_pod_state(pod, str(config.cni_node_file)))
    if config.nodes > 1:
        from flexsfc.local.nodes import cleanup_nodes

        errors.extend(cleanup_nodes(config))  # agents by PID, node and fabric namespaces, their pins
    other = claimed_by_other(config)
    if other:
        # A live runtime holds these pins (they were never this one's, or are no longer): leave them.
        errors.append(f"pin directory {config.pin_dir} is in use by the runtime in {other}; left it alone")
    elif os.path.isdir(config.pin_dir) and os.listdir(config.pin_dir):
        try:
            from flexsfc.dataplane.pins import destroy_pinned

            destroy_pinned(config.pin_dir)
        except Exception as exc:  # unusable pins: unlinking them is all that is left to do
            errors.append(f"data plane destroy: {exc}; removed the pins")
    # Host veths went with CNI DEL (and their filters with them): the pins are all that can remain.
    if not other:
        shutil.rmtree(config.pin_dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(config.root)
    drop_claims(config)
    return errors


def _is_supervisor(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"flexsfc.local.supervisor" in f.read()
    except OSError:
        return False
