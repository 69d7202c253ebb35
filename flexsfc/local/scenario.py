"""Traffic scenarios on a running local runtime: used by `flexsfc demo`, the e2e tests and benchmarks.

Finds the chain's ends (its first and last network function), runs the traffic generator's echo
server in the server pod and its client in the client pod, and maps flows to the replicas that serve
them from the data plane's session table.
"""

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from flexsfc.agent.types import dataplane_name
from flexsfc.local import control
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.state import read_state
from flexsfc.model.types import ChainSpec, CrossConnectionSpec, Plan

PROTO_TCP = 6
PROTO_UDP = 17


@dataclass(frozen=True)
class ChainEnds:
    client_nf: str
    server_nf: str
    server_ip: str
    namespace: str


def chain_ends(plan: Plan, chain: ChainSpec | None = None) -> ChainEnds:
    """The chain's first NF is the client, its last the server; the server's L3 address is the target."""
    chain = chain or plan.chains[0]
    client, server = chain.network_functions[0].name, chain.network_functions[-1].name
    for xc in plan.cross_connections:
        if xc.chain != chain.name:
            continue
        for side in (xc.side_a, xc.side_b):
            if side.nf == server and side.addresses:
                ip = ipaddress.ip_interface(side.addresses[0]).ip
                return ChainEnds(client, server, str(ip), chain.namespace)
    raise ValueError(f"chain {chain.name}: its last network function {server!r} has no L3 address to target")


def xc_between(plan: Plan, nf_a: str, nf_b: str) -> CrossConnectionSpec:
    for xc in plan.cross_connections:
        if {xc.side_a.nf, xc.side_b.nf} == {nf_a, nf_b}:
            return xc
    raise ValueError(f"no cross-connection between {nf_a} and {nf_b}")


def pod_netns(config: RuntimeConfig, nf: str, namespace: str | None = None, wait: float = 5.0) -> str:
    """Network namespace of the first running pod of `nf` (in `namespace` if given; state file).

    Waits up to `wait` seconds: the supervisor writes a pod's Running state just after it counts it
    ready, so a reader right behind `ready` may see the file a step late."""
    deadline = time.monotonic() + wait
    while True:
        state = read_state(config)
        pods = [p for p in state.running_pods(nf, namespace) if p.nf == nf] if state is not None else []
        if pods:
            return pods[0].netns
        if time.monotonic() > deadline:
            where = f" in namespace {namespace}" if namespace else ""
            raise RuntimeError(f"no running pod of {nf}{where}")
        time.sleep(0.05)


def in_pod(netns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]


class TrafficRun:
    """The echo server in the server pod and the generator in the client pod, stopped together."""

    def __init__(
        self, config: RuntimeConfig, ends: ChainEnds, *, port: int = 9000, **client_args: Any
    ) -> None:
        self.config = config
        self.ends = ends
        self.port = port
        self.client_args = client_args
        self._dir = tempfile.mkdtemp(prefix="flexsfc-traffic-")
        self.report_path = os.path.join(self._dir, "client.json")
        self.server: subprocess.Popen[bytes] | None = None
        self.client: subprocess.Popen[bytes] | None = None
        self.started_ns = 0

    def start(self) -> "TrafficRun":
        py = [sys.executable, "-m", "flexsfc.local.traffic"]
        self.server = subprocess.Popen(
            in_pod(
                pod_netns(self.config, self.ends.server_nf, self.ends.namespace),
                [*py, "server", "--port", str(self.port)],
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        time.sleep(0.3)  # let it bind before the first SYN
        args = [
            *py,
            "client",
            "--server",
            self.ends.server_ip,
            "--port",
            str(self.port),
            "--out",
            self.report_path,
        ]
        for key, value in self.client_args.items():
            args += [f"--{key.replace('_', '-')}", str(value)]
        self.started_ns = time.time_ns()
        self.client = subprocess.Popen(
            in_pod(pod_netns(self.config, self.ends.client_nf, self.ends.namespace), args),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        return self

    def open_late_flows(self) -> None:
        """Make the client open its --late-tcp/--late-udp flows now (SIGUSR1)."""
        if self.client is not None and self.client.poll() is None:
            self.client.send_signal(signal.SIGUSR1)

    def stop(self) -> dict[str, Any]:
        """Stop the client (it drains and writes its report), then the server; return the report."""
        try:
            if self.client is not None:
                duration = float(self.client_args.get("duration", 0) or 0)
                if not duration and self.client.poll() is None:
                    # Python installs its handler a moment after start: do not interrupt before that.
                    time.sleep(max(0.0, 1.0 - (time.time_ns() - self.started_ns) / 1e9))
                    self.client.send_signal(signal.SIGINT)
                try:
                    _, err = self.client.communicate(timeout=duration + 20)
                except subprocess.TimeoutExpired:
                    self.client.kill()
                    _, err = self.client.communicate()
                if not os.path.exists(self.report_path):
                    raise RuntimeError(
                        f"traffic client wrote no report: {err.decode(errors='replace')[-500:]}"
                    )
                with open(self.report_path) as f:
                    report: dict[str, Any] = json.load(f)
                return report
            raise RuntimeError("traffic was not started")
        finally:
            self.close()

    def close(self) -> None:
        for proc in (self.client, self.server):
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(OSError):
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)


def flow_owners(
    config: RuntimeConfig, xc: CrossConnectionSpec, nf: str, server_port: int
) -> dict[tuple[int, int], str]:
    """(proto, client-side port) -> pod of `nf` serving that flow on cross-connection `xc`."""
    on_a = xc.side_a.nf == nf
    owners: dict[tuple[int, int], str] = {}
    for entry in control.sessions(config, dataplane_name(xc)):
        if entry.port_lo == server_port:
            port = entry.port_hi
        elif entry.port_hi == server_port:
            port = entry.port_lo
        else:
            continue
        owners[(entry.proto, port)] = entry.pod_a if on_a else entry.pod_b
    return owners


def long_lived_flows(report: dict[str, Any], late: bool | None = None) -> list[tuple[int, int]]:
    """(proto, client port) of the long-lived flows in a traffic report (only early/late ones if set)."""
    flows = [(PROTO_TCP, f["port"]) for f in report["tcp"] if f["port"] and late in (None, f.get("late"))]
    flows += [(PROTO_UDP, f["port"]) for f in report["udp"] if late in (None, f.get("late"))]
    return flows


def lost_between(report: dict[str, Any], start_ns: int, end_ns: int) -> int:
    return sum(1 for f in report["udp"] for t in f["lostSendNs"] if start_ns <= t < end_ns)


def wait_ready(config: RuntimeConfig, timeout: float = 60.0) -> None:
    """Until every Deployment runs its desired replicas (raises the runtime's error if one fails)."""
    deadline = time.monotonic() + timeout
    while True:
        info = control.ready(config)
        if info.error:
            raise control.SupervisorError(info.error)
        if info.ready:
            return
        if time.monotonic() > deadline:
            raise control.SupervisorError(f"not ready after {timeout:.0f}s")
        time.sleep(0.05)


def wait_settled(config: RuntimeConfig, nf: str, count: int, timeout: float = 60.0) -> None:
    """Until `nf` has exactly `count` running replicas and none pending or terminating."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = next(d for d in control.ready(config).deployments if d.nf == nf)
        if dep.terminating == 0 and dep.running == count and dep.pending == 0:
            return
        time.sleep(0.05)
    raise control.SupervisorError(f"{nf} not settled at {count} replicas after {timeout:.0f}s")
