"""Waiting for the tools' processes without ever hanging a benchmark on one."""

import subprocess


def communicate_or_kill(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str] | None:
    """The output of `proc` once it exits; None when it had to be killed after `timeout` seconds."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None
