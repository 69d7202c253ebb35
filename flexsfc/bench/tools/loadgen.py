"""Traffic tools run inside the pods: iperf3 (TCP, 64 B UDP) and sockperf (UDP ping-pong latency).

Servers are started once per topology and killed by PID; every client run returns parsed numbers.

The endpoints are left to the scheduler. (Pinning clients to CPU 0 and servers to CPU 1 was tried:
with two 64 B senders it spread the rounds of one variant further, not less; with one sender, 20
paired rounds came out as wide pinned as unpinned.) A second latency figure runs both ends of the
ping-pong on CPU 0: without the cross-CPU wake-up it shows what the path itself costs. No pinning
on a single-CPU machine.
"""

import contextlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from flexsfc.bench.tools.process import communicate_or_kill
from flexsfc.bench.topologies.pods import SERVER_IP

TCP_PORT = 5201
UDP_BASE_PORT = 5210
SOCKPERF_PORT = 11111
SOCKPERF_SAME_CPU_PORT = 11112
SAME_CPU = 0  # both ends of the same-CPU latency test
UDP_PAYLOAD = 64  # bytes of UDP payload (the "64 B packets" of the evaluation)
CLIENT_SLACK_S = 10  # beyond the test duration before a client run counts as hung

_PERCENTILE = re.compile(r"percentile\s+(\d+\.\d+)\s*=\s*([\d.]+)")
_AVG = re.compile(r"avg-latency=([\d.]+)")


class ToolError(RuntimeError):
    pass


def _pinned(cpu: int, argv: list[str]) -> list[str]:
    if (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


class HasServerPod(Protocol):
    @property
    def server(self) -> str: ...  # the server pod's netns name


class HasClientPod(Protocol):
    @property
    def client(self) -> str: ...  # the client pod's netns name


@dataclass
class Servers:
    """iperf3 and sockperf servers in a topology's server pod."""

    topo: HasServerPod
    udp_senders: int
    latency: bool = True  # the sockperf servers too
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> "Servers":
        try:
            self._spawn(["iperf3", "-s", "-p", str(TCP_PORT)])
            for i in range(self.udp_senders):
                self._spawn(["iperf3", "-s", "-p", str(UDP_BASE_PORT + i)])
            if self.latency:
                self._spawn(["sockperf", "sr", "-i", SERVER_IP, "-p", str(SOCKPERF_PORT)])
                same_cpu = ["sockperf", "sr", "-i", SERVER_IP, "-p", str(SOCKPERF_SAME_CPU_PORT)]
                self._spawn(_pinned(SAME_CPU, same_cpu))
            time.sleep(0.3)  # let them bind before the first client connects
            for proc in self.procs:
                if proc.poll() is not None:
                    raise ToolError(f"server {proc.args!r} exited with {proc.returncode}")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, argv: list[str]) -> None:
        self.procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", self.topo.server, *argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.procs.clear()


def _client(topo: HasClientPod, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", topo.client, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(proc: subprocess.Popen[str], seconds: float) -> str:
    output = communicate_or_kill(proc, seconds + CLIENT_SLACK_S)
    if output is None:
        raise ToolError(f"{proc.args!r} did not finish within {seconds + CLIENT_SLACK_S} s")
    out, err = output
    if proc.returncode != 0:
        raise ToolError(f"{proc.args!r} failed ({proc.returncode}): {(err or out).strip()[-400:]}")
    return out


@dataclass(frozen=True)
class Throughput:
    rate: float  # Gbit/s (TCP) or packets/s (UDP), received
    cpu_seconds_per_second: float  # CPU used by iperf3 client(s) and server(s) per wall-clock second
    offered: float | None = None  # UDP: packets/s the senders put on the wire

    @property
    def loss(self) -> float | None:
        """Share of the offered UDP packets that did not arrive (a receiver that cannot keep up)."""
        if not self.offered:
            return None
        return max(0.0, 1.0 - self.rate / self.offered)

    @property
    def per_cpu(self) -> float | None:
        """Rate per CPU-second spent by the endpoints: what a busy neighbour steals cancels out."""
        return self.rate / self.cpu_seconds_per_second if self.cpu_seconds_per_second > 0 else None


def _cpu(report: dict[str, Any]) -> float:
    cpu = report["end"].get("cpu_utilization_percent", {})
    return (cpu.get("host_total", 0.0) + cpu.get("remote_total", 0.0)) / 100


def tcp_gbps(topo: HasClientPod, seconds: float) -> Throughput:
    """iperf3 TCP with default parameters (one stream): received goodput in Gbit/s."""
    argv = ["iperf3", "-c", SERVER_IP, "-p", str(TCP_PORT), "-t", str(seconds), "-J"]
    report = json.loads(_collect(_client(topo, argv), seconds))
    return Throughput(report["end"]["sum_received"]["bits_per_second"] / 1e9, _cpu(report))


def udp_pps(topo: HasClientPod, seconds: float, senders: int) -> Throughput:
    """64 B UDP from `senders` parallel unthrottled iperf3 clients: packets per second received (and
    offered: the senders' rate)."""
    argv = ["iperf3", "-u", "-l", str(UDP_PAYLOAD), "-b", "0", "-t", str(seconds), "-J", "-c", SERVER_IP]
    procs = [_client(topo, [*argv, "-p", str(UDP_BASE_PORT + i)]) for i in range(senders)]
    total = offered = cpu = 0.0
    errors: list[str] = []
    for proc in procs:
        try:
            report = json.loads(_collect(proc, seconds))
            received, sent = report["end"]["sum_received"], report["end"]["sum_sent"]
            total += (received["packets"] - received["lost_packets"]) / received["seconds"]
            offered += sent["packets"] / sent["seconds"]
        except (ToolError, KeyError, ZeroDivisionError, json.JSONDecodeError) as exc:
            errors.append(str(exc))
            continue
        cpu += _cpu(report)
    if errors:
        raise ToolError("; ".join(errors))
    return Throughput(total, cpu, offered)


def latency_us(topo: HasClientPod, seconds: float, *, same_cpu: bool = False) -> dict[str, float]:
    """sockperf UDP ping-pong with 64 B messages: one-way latency (half the round trip) in µs; with
    `same_cpu`, against the server that shares the client's CPU."""
    port = SOCKPERF_SAME_CPU_PORT if same_cpu else SOCKPERF_PORT
    argv = ["sockperf", "pp", "-i", SERVER_IP, "-p", str(port), "-m", "64", "-t", str(seconds)]
    if same_cpu:
        argv = _pinned(SAME_CPU, argv)
    out = _collect(_client(topo, argv), seconds)
    percentiles = {float(p): float(v) for p, v in _PERCENTILE.findall(out)}
    avg = _AVG.search(out)
    if 50.0 not in percentiles or avg is None:
        raise ToolError(f"sockperf output without percentiles: {out[-400:]}")
    return {"p50": percentiles[50.0], "p99": percentiles.get(99.0, 0.0), "avg": float(avg.group(1))}
