"""An autoscaling episode on the local runtime: load up -> the NF scales out, load down -> it scales in.

For `flexsfc demo` and the end-to-end test. The chain's client pod sends paced UDP (flows rotate
their source port, so new flows reach new replicas while established ones stay put) to a sink port
of the server, and keeps one TCP echo session open through the whole episode; the result tells
whether it survived and whether the data plane kept it on the same replica. The NF is scaled only
by the HPA algorithm (flexsfc.autoscale.local) on its replicas' rx packet rates.

The runtime is reached through :class:`RuntimeAccess`: an in-process Runtime or the supervisor of
`flexsfc up` / `flexsfc demo` (the same status, scale and sessions requests either way).
"""

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flexsfc.autoscale.local import LocalAutoscaler, StatusTarget, Tick, local_spec
from flexsfc.model.types import Plan
from flexsfc.util.netns import in_netns


class UdpLoad(threading.Thread):
    """Paced UDP from a network namespace; every flow (source port) lasts `flow_packets` packets."""

    def __init__(self, netns: str, dst: tuple[str, int], pps: float, flow_packets: int = 20) -> None:
        super().__init__(name="udp-load", daemon=True)
        self.netns, self.dst, self.pps, self.flow_packets = netns, dst, pps, flow_packets
        self.stop_event = threading.Event()
        self.sent = 0
        self.send_errors = 0

    def run(self) -> None:
        with in_netns(self.netns):  # this thread's sockets live in the client pod
            sock: socket.socket | None = None
            flow_left, budget, last = 0, 0.0, time.monotonic()
            payload = b"flexsfc-load" * 5
            try:
                while not self.stop_event.wait(0.005):
                    now = time.monotonic()
                    # A stalled thread catches up at most 100 ms worth of packets, not a burst.
                    budget, last = min(budget + (now - last) * self.pps, self.pps * 0.1 + 1), now
                    while budget >= 1:
                        if sock is None or flow_left == 0:  # sock is None only before the first flow
                            if sock is not None:
                                sock.close()
                            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                            flow_left = self.flow_packets
                        try:
                            sock.sendto(payload, self.dst)
                            self.sent += 1
                        except OSError:  # e.g. no route while the chain changes: keep the pace
                            self.send_errors += 1
                        flow_left, budget = flow_left - 1, budget - 1
            finally:
                if sock is not None:
                    sock.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


class EchoSession(threading.Thread):
    """One TCP connection to an echo server, exchanging a numbered line every `interval` seconds."""

    def __init__(self, netns: str, dst: tuple[str, int], interval: float = 0.05) -> None:
        super().__init__(name="echo-session", daemon=True)
        self.netns, self.dst, self.interval = netns, dst, interval
        self.stop_event = threading.Event()
        self.connected = threading.Event()
        self.exchanges = 0
        self.local_port = 0
        self.error: str | None = None

    def _connect(self, timeout: float) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            with in_netns(self.netns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(1.0)
            try:
                sock.connect(self.dst)
                return sock
            except OSError:
                sock.close()
                if time.monotonic() > deadline or self.stop_event.is_set():
                    raise
                time.sleep(0.2)

    def run(self) -> None:
        try:
            sock = self._connect(timeout=15.0)
        except OSError as exc:
            self.error = f"connect to {self.dst}: {exc}"
            return
        self.local_port = sock.getsockname()[1]
        self.connected.set()
        try:
            sock.settimeout(3.0)
            reader = sock.makefile("rb")
            while not self.stop_event.wait(self.interval):
                line = f"exchange {self.exchanges}\n".encode()
                sock.sendall(line)
                if reader.readline() != line:
                    raise ConnectionError(f"echo mismatch at exchange {self.exchanges}")
                self.exchanges += 1
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc} after {self.exchanges} exchanges"
        finally:
            sock.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=5)


@dataclass(frozen=True)
class RuntimeAccess:
    """What an episode needs from a local runtime (shapes of `Runtime.status()` / `Runtime.sessions()`)."""

    plan: Plan
    status: Callable[[], dict[str, Any]]
    scale: Callable[[str, int], Any]
    sessions: Callable[[str], list[dict[str, Any]]]

    @classmethod
    def in_process(cls, runtime: Any) -> "RuntimeAccess":
        # The runtime answers typed records; an episode reads the supervisor's JSON documents.
        status, sessions = runtime.status, runtime.sessions
        return cls(
            runtime.plan,
            lambda: status().to_json(),
            runtime.scale,
            lambda xc: [s.to_json() for s in sessions(xc)],
        )

    @classmethod
    def supervisor(cls, config: Any, plan: Plan) -> "RuntimeAccess":
        """Through the control socket of a runtime started by `flexsfc up` (config: RuntimeConfig)."""
        from flexsfc.local.control import request

        return cls(
            plan,
            lambda: request(config, "status", timeout=30),
            lambda name, replicas: request(config, "scale", name=name, replicas=replicas),
            lambda xc: request(config, "sessions", xc=xc, timeout=30),
        )

    def pods(
        self, nf: str, phases: tuple[str, ...] = ("pending", "running", "terminating")
    ) -> list[dict[str, Any]]:
        """Pods of a network function (or Deployment) in the given phases."""
        return [
            p
            for p in self.status().get("pods", [])
            if nf in (p["nf"], p.get("deployment")) and p["phase"] in phases
        ]


@dataclass
class EpisodeResult:
    nf: str
    target_pps: float
    ticks: list[Tick] = field(default_factory=list)
    moves: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds from start, from, to)
    scale_out_seconds: float | None = None  # load raised -> decision to scale out
    scale_in_seconds: float | None = None  # load lowered -> last drained replica gone
    session_exchanges: int = 0
    session_error: str | None = None
    session_replica: str = ""  # the replica of `nf` serving the TCP echo session
    session_kept_replica: bool | None = None  # the data plane never moved it (None: not found)
    drained: list[str] = field(default_factory=list)  # replicas seen terminating (draining)
    load: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, offered pps)

    def summary(self) -> list[tuple[str, str]]:
        """(what, value) rows for a report table."""
        rows = [
            (
                f"{self.nf} replicas (decisions)",
                " -> ".join([str(self.moves[0][1])] + [str(m[2]) for m in self.moves])
                if self.moves
                else "no change",
            ),
            ("load up -> scale-out decided", _seconds(self.scale_out_seconds)),
            ("load down -> drained replicas gone", _seconds(self.scale_in_seconds)),
            ("replicas drained before removal", str(len(self.drained))),
            ("TCP session through the chain", "kept" if self.session_error is None else self.session_error),
            ("TCP exchanges during the episode", str(self.session_exchanges)),
        ]
        if self.session_kept_replica is not None:
            rows.append(("TCP session stayed on its replica", "yes" if self.session_kept_replica else "NO"))
        return rows

    @property
    def ok(self) -> bool:
        return (
            bool(self.moves)
            and self.moves[0][2] > self.moves[0][1]
            and self.moves[-1][2] < self.moves[-1][1]
            and self.session_error is None
            and self.session_kept_replica is not False
        )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _wait(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _session_owner(access: RuntimeAccess, xc: str, echo_port: int) -> str:
    """Pod on side B of `xc` serving the TCP echo session ("" if no session entry matches)."""
    for entry in access.sessions(xc):
        if entry["proto"] == socket.IPPROTO_TCP and echo_port in (entry["portLo"], entry["portHi"]):
            return str(entry["podB"])
    return ""


def run_autoscale_episode(
    access: RuntimeAccess,
    nf: str,
    *,
    echo_port: int = 7,
    sink_port: int = 9,
    target_pps: float = 400,
    high_pps: float = 1100,
    low_pps: float = 100,
    max_replicas: int = 3,
    scale_down_window: float = 3.0,
    period: float = 0.5,
    hold_seconds: float = 0.0,
    timeout: float = 60.0,
    on_tick: Callable[[Tick], None] | None = None,
) -> EpisodeResult:
    """Drive one scale-out / scale-in episode of `nf` on a ready local runtime.

    The chain's first NF is the client, its last the server (an L3 address, a TCP echo service on
    `echo_port`). The default rates suit ~1 kpps of Python-generated load: one replica receiving
    high_pps asks for ceil(high/target) replicas (capped at max_replicas), low_pps asks for one.
    Raises TimeoutError when a phase does not happen within `timeout` seconds; the NF ends at one
    replica when the episode completes.
    """
    from flexsfc.local.scenario import chain_ends

    ends = chain_ends(access.plan)
    target = StatusTarget(nf, access.status, access.scale)
    nf = next(d.nf for d in access.plan.deployments if d.name == target.name)  # the NF label
    upstream = [xc.name for xc in access.plan.cross_connections if xc.side_b.nf == nf]
    if not upstream:
        raise LookupError(f"{nf!r} is not on side B of any cross-connection (not a middle or last NF)")
    clients = access.pods(ends.client_nf, ("running",))
    if not clients:
        raise LookupError(f"no running {ends.client_nf!r} pod to send traffic from")
    client_netns = clients[0]["netns"]
    result = EpisodeResult(nf, target_pps)
    session = EchoSession(client_netns, (ends.server_ip, echo_port))
    load = UdpLoad(client_netns, (ends.server_ip, sink_port), high_pps)
    start = time.monotonic()

    def tick(t: Tick) -> None:
        if t.scaled:
            result.moves.append((time.monotonic() - start, t.decision.current, t.desired))
        if on_tick is not None:
            on_tick(t)

    def count_running() -> int:
        return len(access.pods(nf, ("running",)))

    def drained_and_gone() -> bool:
        pods = access.pods(nf)
        result.drained += [
            p["name"] for p in pods if p["phase"] == "terminating" and p["name"] not in result.drained
        ]
        return len(pods) == 1

    spec = local_spec(target_pps, 1, max_replicas, scale_down_window=scale_down_window)
    scaler = LocalAutoscaler(target, spec, period=period, on_tick=tick)
    if target.read().desired != 1:  # the episode starts from one replica, as the load does
        access.scale(target.name, 1)
        _wait(lambda: len(access.pods(nf)) == 1, timeout, f"{nf} to come down to one replica", 0.1)
    session.start()
    try:
        if not session.connected.wait(20):
            raise ConnectionError(
                f"TCP echo to {ends.server_ip}:{echo_port} never connected: {session.error}"
            )
        result.session_replica = _session_owner(access, upstream[0], echo_port)
        load.start()
        raised = time.monotonic()
        result.load.append((raised, high_pps))
        scaler.start()
        out = scaler.wait_for(lambda t: t.desired > 1 and t.scaled, timeout=timeout)
        result.scale_out_seconds = time.monotonic() - raised
        _wait(lambda: count_running() >= out.desired, timeout, f"{out.desired} running {nf} replicas", 0.1)
        # Let new flows spread: every counted replica carries traffic in one period.
        scaler.wait_for(lambda t: len(t.pps) >= out.desired and all(t.pps.values()), timeout=timeout)
        time.sleep(hold_seconds)  # the demo shows the spread for a while
        load.pps = low_pps
        lowered = time.monotonic()
        result.load.append((lowered, low_pps))
        scaler.wait_for(lambda t: t.desired == 1, timeout=timeout)
        _wait(drained_and_gone, timeout, f"drained {nf} replicas to go", 0.1)
        result.scale_in_seconds = time.monotonic() - lowered
        if result.session_replica:
            result.session_kept_replica = (
                _session_owner(access, upstream[0], echo_port) == result.session_replica
            )
    finally:
        scaler.stop()
        load.stop()
        result.load.append((time.monotonic(), 0.0))
        session.stop()
        result.ticks = list(scaler.history)
        result.session_exchanges = session.exchanges
        result.session_error = session.error
    return result


def run_demo_episode(
    config: Any, plan: Plan, nf: str, say: Callable[[str], None], **kwargs: Any
) -> EpisodeResult:
    """The episode for `flexsfc demo`: through the demo's supervisor, one line per autoscaler tick."""
    from flexsfc.autoscale.local import format_tick

    target = float(kwargs.get("target_pps", 400))
    say(
        f"autoscaling {nf} on traffic: HPA algorithm, target {target:.0f} pps per replica; "
        "raising the load, then lowering it"
    )
    kwargs.setdefault("hold_seconds", 2.0)
    return run_autoscale_episode(
        RuntimeAccess.supervisor(config, plan),
        nf,
        on_tick=lambda tick: say(format_tick(tick, target)),
        **kwargs,
    )


def render_episode(console: Any, result: EpisodeResult) -> None:
    """A rich table of the episode's outcome (console: rich.console.Console)."""
    from rich.table import Table

    table = Table(title=f"Autoscaling {result.nf} on traffic", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for what, value in result.summary():
        table.add_row(what, value)
    console.print(table)
