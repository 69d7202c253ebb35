"""Client side of the supervisor: start it, send it requests, and clean up when it is gone."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from flexsfc.local.config import RuntimeConfig
from flexsfc.local.pod import cleanup_pod_state
from flexsfc.local.runtime import read_state

START_TIMEOUT_SECONDS = 20.0


class SupervisorError(RuntimeError):
    """The supervisor refused or failed a request; the message says why."""


class SupervisorNotRunning(SupervisorError):
    pass


def request(config: RuntimeConfig, op: str, timeout: float = 300.0, **fields: Any) -> Any:
    path = str(config.socket_path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise SupervisorNotRunning(f"no local runtime supervisor at {path}") from exc
    if not data:
        raise SupervisorError(f"supervisor closed the connection during {op!r}; see {config.supervisor_log}")
    reply = json.loads(data)
    if not reply.get("ok"):
        raise SupervisorError(reply.get("error", "unknown error"))
    return reply.get("result")


def is_running(config: RuntimeConfig) -> bool:
    try:
        request(config, "ping", timeout=5)
        return True
    except SupervisorError:
        return False


def start_supervisor(config: RuntimeConfig, verbose: bool = False, metrics_port: int = 0) -> int:
    """Start the supervisor in its own session; return its PID once it answers on its socket."""
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
        if proc.poll() is not None:
            tail = log_tail(config)
            last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
            raise SupervisorError(f"the supervisor failed to start: {last}\n--- supervisor log ---\n{tail}")
        if is_running(config):
            return proc.pid
        time.sleep(0.05)
    proc.kill()
    raise SupervisorError(
        f"supervisor did not answer within {START_TIMEOUT_SECONDS:.0f}s:\n{log_tail(config)}"
    )


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
    """Stop everything: through the supervisor when it runs, else from the state file on disk."""
    state = read_state(config)
    pid = (state or {}).get("supervisorPid")
    try:
        result = request(config, "down")
        if pid:
            wait_pid_gone(int(pid), 30)
        errors = list(result.get("errors", []))
    except SupervisorNotRunning:
        errors = cleanup_from_state(config, state)
    except SupervisorError as exc:
        errors = [str(exc), *cleanup_from_state(config, state)]
    return errors


def cleanup_from_state(config: RuntimeConfig, state: dict[str, Any] | None) -> list[str]:
    """The supervisor died: kill what it started, CNI DEL, remove namespaces, pins and the state."""
    errors: list[str] = []
    pid = (state or {}).get("supervisorPid")
    if pid and _is_supervisor(int(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    for pod in [*(state or {}).get("pods", []), *(state or {}).get("orphans", [])]:
        errors.extend(cleanup_pod_state(pod))
    if os.path.isdir(config.pin_dir) and os.listdir(config.pin_dir):
        try:
            from flexsfc.dataplane.facade import Dataplane

            Dataplane(config.pin_dir).destroy()
        except Exception as exc:  # unusable pins: unlinking them is all that is left to do
            errors.append(f"data plane destroy: {exc}; removed the pins")
    # Host veths went with CNI DEL (and their filters with them): the pins are all that can remain.
    shutil.rmtree(config.pin_dir, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(config.root)
    return errors


def _is_supervisor(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"flexsfc.local.supervisor" in f.read()
    except OSError:
        return False
