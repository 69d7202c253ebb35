"""What every benchmark section shares: the run context, the description of the machine and the code,
the envelope of a section's result and its JSON I/O."""

import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class BenchContext:
    """Settings shared by every section of one `flexsfc bench` run."""

    out_dir: Path
    quick: bool = False
    command: str = ""  # the exact command line that produced the results
    seed: int = 1
    log: Callable[[str], None] = field(default=print, repr=False)  # for progress lines
    traffic_rounds: int | None = None  # overrides the traffic section's paired rounds
    traffic_chains: tuple[int, ...] = ()  # only these chain lengths in the traffic section
    udp_senders: int | None = None  # fixed 64 B UDP sender count (default: calibrated)
    baseline: str | None = None  # git revision whose data plane the multinode section compares with

    def pick(self, quick: T, full: T) -> T:
        """The quick-mode value or the full-mode value of a parameter."""
        return quick if self.quick else full


def command_line() -> str:
    """The command line of this process, shell-quoted, as a user would retype it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith("/flexsfc"):
        argv[0] = "flexsfc"
    return shlex.join(argv)


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: kernel, CPU model, core count, tool versions."""
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "uname": " ".join(platform.uname()),
        "kernel": platform.release(),
        "cpu_model": cpu_model,
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "iperf3": _first_line(["iperf3", "--version"]),
        "sockperf": _first_line(["sockperf", "--version"]),
        "loadavg": os.getloadavg(),
        # On, every eBPF program run pays two clock reads: compared figures are only valid with 0.
        "bpf_stats_enabled": _read_first_line("/proc/sys/kernel/bpf_stats_enabled"),
        # On (kubeadm wants it so), bridged IPv4 packets also take br_netfilter's pass: the bridge
        # variant's figures include it.
        "bridge_nf_call_iptables": _read_first_line("/proc/sys/net/bridge/bridge-nf-call-iptables"),
    }


def _read_first_line(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def source_info() -> dict[str, Any]:
    """Which code produced the numbers: the git commit of the checkout and whether it had changes."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!docs/results",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "modified": None}
    return {"commit": commit, "modified": bool(status.strip())}


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unavailable"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_envelope(ctx: BenchContext, started: float) -> dict[str, Any]:
    """How a run was made (command, machine, source) and when it finished; `started` is monotonic."""
    return {
        "command": ctx.command,
        "quick": ctx.quick,
        "finished": now_iso(),
        "duration_s": round(time.monotonic() - started, 2),
        "machine": machine_info(),
        "source": source_info(),
    }


def section_result(ctx: BenchContext, section: str, data: dict[str, Any], started: float) -> dict[str, Any]:
    """The envelope every section's JSON carries, so a result file says how to reproduce it."""
    return {"section": section, **run_envelope(ctx, started), "data": data}


def _finite(value: Any) -> Any:
    """NaN and infinities become null: the files stay standard JSON for every reader."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    text = json.dumps(_finite(payload), indent=2, sort_keys=False, default=str, allow_nan=False)
    tmp.write_text(text + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


class SectionSkipped(Exception):
    """Raised by a section that cannot run here (missing component, not root...); the message says why."""
