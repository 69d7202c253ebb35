"""The last N flow events, kept by the node agent (and the local runtime's supervisor) on request.

The ring buffer of the data plane keeps nothing once read, and the program writes it only while a
reader holds a lease (flexsfc.dataplane.events). A :class:`FlowHistory` is such a reader for as long
as it lives: a thread polls the stream and keeps the newest `size` decoded events in a bounded deque.
So history is opt-in (`flexsfc agent --local --flow-history N`, `flexsfc up --flow-history N`): while
it is kept the stream is on, with the cost docs/observability.md measures (nothing on session hits, a
record per new flow, move and drop), and the reader's Python thread decodes every event.

:class:`FlowHistoryServer` serves it on a unix socket (the agent's `flows.sock` next to its CNI
socket): one JSON request per connection, one JSON reply, as the local runtime's control socket. The
reply carries the events as their fields (:func:`record_to_wire`) and what the data plane's records
name their ports, so `flexsfc flows --agent-socket PATH --last N` needs no access to the pins.
"""

import contextlib
import json
import logging
import os
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flexsfc.dataplane import maps
from flexsfc.dataplane.api import DataplaneReader
from flexsfc.dataplane.events import EventStream, Flow, FlowEventRecord
from flexsfc.model.types import Side
from flexsfc.util import jsonline

log = logging.getLogger("flexsfc.agent.flow_history")

SOCKET_NAME = "flows.sock"  # next to the agent's CNI socket
# Also how soon the history yields to a reader that attached: records of that first moment may be
# the history's.
POLL_SECONDS = 0.05
MAX_GAPS = 32
NAMES_REFRESH_SECONDS = 1.0
IO_TIMEOUT_SECONDS = 10.0

# What the data plane's records say about its ports: {"xcs": {id: name}, "ports": {ifindex: port}}.
PortNames = dict[str, Any]
NamesSource = Callable[[], PortNames]


# ---- the wire form of a record ------------------------------------------------------------------------


def record_to_wire(record: FlowEventRecord) -> dict[str, Any]:
    flow = record.flow
    return {
        "time": record.time,
        "kind": int(record.kind),
        "reason": record.reason,
        "xc": record.xc_id,
        "side": record.side,
        "movedSide": record.moved_side,
        "ifindex": record.ifindex,
        "oldIfindex": record.old_ifindex,
        "ifindexA": record.ifindex_a,
        "ifindexB": record.ifindex_b,
        "flow": None
        if flow is None
        else {
            "family": flow.family,
            "proto": flow.proto,
            "src": flow.src,
            "sport": flow.sport,
            "dst": flow.dst,
            "dport": flow.dport,
        },
        "pktLen": record.pkt_len,
        "packet": record.packet.hex(),
    }


def record_from_wire(data: dict[str, Any]) -> FlowEventRecord:
    flow = data.get("flow")
    return FlowEventRecord(
        time=float(data["time"]),
        kind=maps.FlowEventKind(int(data["kind"])),
        reason=data.get("reason"),
        xc_id=int(data["xc"]),
        side=int(data["side"]),
        moved_side=int(data["movedSide"]),
        ifindex=int(data["ifindex"]),
        old_ifindex=int(data["oldIfindex"]),
        ifindex_a=int(data["ifindexA"]),
        ifindex_b=int(data["ifindexB"]),
        flow=None
        if flow is None
        else Flow(
            int(flow["family"]),
            int(flow["proto"]),
            str(flow["src"]),
            int(flow["sport"]),
            str(flow["dst"]),
            int(flow["dport"]),
        ),
        pkt_len=int(data.get("pktLen", 0)),
        packet=bytes.fromhex(data.get("packet", "")),
    )


def dataplane_names(dp: DataplaneReader) -> PortNames:
    """The cross-connections of `dp` and the replica identity (the pod UID on a cluster) of each port."""
    xcs = dp.list_xcs()
    ports: dict[str, dict[str, Any]] = {}
    for name in xcs:
        for side in (Side.A, Side.B):
            for replica in dp.replicas(name, side):
                ports[str(replica.ifindex)] = {"identity": replica.identity, "xc": name, "side": side.value}
    return {"xcs": {str(xc_id): name for name, xc_id in xcs.items()}, "ports": ports}


class PinnedNames:
    """:func:`dataplane_names` of the data plane at `pin_dir`, read through a reader of its own,
    refreshed on every call: the writer's (the agent's) objects are never used from the history's
    threads, and what another process wrote is seen too."""

    def __init__(self, pin_dir: str) -> None:
        self.pin_dir = pin_dir
        self._dp: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> PortNames:
        from flexsfc.dataplane.facade import Dataplane

        with self._lock:
            if self._dp is None:
                self._dp = Dataplane(self.pin_dir)  # pins exist (the history's stream opened them)
            else:
                self._dp.refresh()
            return dataplane_names(self._dp)

    def close(self) -> None:
        with self._lock:
            if self._dp is not None:
                self._dp.close()
                self._dp = None


def _ifindexes(record: FlowEventRecord) -> Iterable[int]:
    return (i for i in (record.ifindex, record.ifindex_a, record.ifindex_b, record.old_ifindex) if i)


# ---- the history ------------------------------------------------------------------------------------


class FlowHistory:
    """The newest `size` events of the data plane at `pin_dir`, from now until :meth:`close`.

    `names`, when given, is read whenever an event names a port not seen before (at most once per
    NAMES_REFRESH_SECONDS), so the history still names a replica after it was removed: the move of a
    flow off a removed replica is reported once the replica is gone from the data plane's records."""

    def __init__(
        self,
        pin_dir: str,
        size: int,
        *,
        names: NamesSource | None = None,
        drop_budget: int | None = None,
        keep: Iterable[FlowEventRecord] = (),
    ) -> None:
        if size < 1:
            raise ValueError(f"flow history size {size}: must be >= 1")
        self.pin_dir = pin_dir
        self.size = size
        self.since = time.time()
        self.recorded = 0  # events seen since `since`, kept or not
        self.error: str | None = None  # why the reader stopped, when it did
        # While another reader is attached the history yields the ring to it (see _run): when it
        # began, and the last MAX_GAPS such gaps (start, end), wall clock.
        self.paused_since: float | None = None
        self._gaps: deque[tuple[float, float]] = deque(maxlen=MAX_GAPS)
        self._events: deque[FlowEventRecord] = deque(keep, maxlen=size)  # `keep`: a resized one's
        self._names_source = names
        self._names: PortNames = {"xcs": {}, "ports": {}}
        self._names_at = 0.0
        self._lock = threading.Lock()
        self._names_lock = threading.Lock()
        self._stop = threading.Event()
        # Opened here, not in the thread: a data plane without the stream fails the caller's start.
        self._stream = EventStream(pin_dir, drop_budget=drop_budget)
        self._refresh_names(force=True)
        self._thread = threading.Thread(target=self._run, name="flow-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._stream.readers > 1:
                    # Another reader (`flexsfc flows` on the pins) is attached. The ring has one
                    # consumer position: polling now would take its records away. Yield to it, keep
                    # the stream on, and tell the history's readers about the gap.
                    if self.paused_since is None:
                        self.paused_since = time.time()
                        log.info("flow history: another reader attached, yielding the stream to it")
                    self._stream.hold()
                    self._stop.wait(POLL_SECONDS)
                    continue
                self._resume()
                batch = self._stream.poll(POLL_SECONDS)
                if not batch:
                    continue
                known = self._names["ports"]
                if any(str(i) not in known for r in batch for i in _ifindexes(r)):
                    self._refresh_names()
                with self._lock:
                    self._events.extend(batch)
                    self.recorded += len(batch)
        except Exception as exc:  # the agent keeps serving CNI; the reply says the history stopped
            log.exception("the flow history stopped reading %s", self.pin_dir)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._resume()
            self._stream.close()  # the lease goes: the stream is off unless another reader holds it

    def _resume(self) -> None:
        if self.paused_since is not None:
            with self._lock:
                self._gaps.append((self.paused_since, time.time()))
            self.paused_since = None

    def _refresh_names(self, force: bool = False) -> None:
        if self._names_source is None:
            return
        with self._names_lock:  # the reader thread and a request may both ask
            if not force and time.monotonic() - self._names_at < NAMES_REFRESH_SECONDS:
                return
            self._names_at = time.monotonic()
            try:
                fresh = self._names_source()
            except Exception:
                log.debug("reading the port names failed", exc_info=True)
                return
            with self._lock:
                ports_used = {str(i) for r in self._events for i in _ifindexes(r)}
                xcs_used = {str(r.xc_id) for r in self._events}
                # Names of ports gone from the data plane stay while a kept event refers to them.
                ports = {k: v for k, v in self._names["ports"].items() if k in ports_used}
                xcs = {k: v for k, v in self._names["xcs"].items() if k in xcs_used}
                ports.update(fresh.get("ports", {}))
                xcs.update(fresh.get("xcs", {}))
                self._names = {"xcs": xcs, "ports": ports}

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def last(self, count: int | None = None) -> list[FlowEventRecord]:
        """The newest `count` events kept (all of them when None), oldest first."""
        with self._lock:
            events = list(self._events)
        return events if count is None else events[max(len(events) - count, 0) :]

    def to_json(self, count: int | None = None, *, with_names: bool = True) -> dict[str, Any]:
        """The reply of the history sockets: the newest `count` events and what the history knows."""
        with self._lock:
            kept = list(self._events)
            gaps = list(self._gaps)
        events = kept if count is None else kept[max(len(kept) - count, 0) :]
        if events:  # the gaps within what the reply covers (or after it)
            gaps = [gap for gap in gaps if gap[1] >= events[0].time]
        out: dict[str, Any] = {
            "size": self.size,
            "kept": len(kept),
            "recorded": self.recorded,
            "since": self.since,
            "running": self.running,
            "error": self.error,
            "gaps": [list(gap) for gap in gaps],
            "pausedSince": self.paused_since,
            "events": [record_to_wire(r) for r in events],
        }
        if with_names and self._names_source is not None:
            self._refresh_names(force=True)
            with self._lock:
                out["names"] = {"xcs": dict(self._names["xcs"]), "ports": dict(self._names["ports"])}
        return out

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        close_names = getattr(self._names_source, "close", None)
        if close_names is not None:
            close_names()

    def __enter__(self) -> "FlowHistory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class HistoryReply:
    """A history as a client reads it back (the socket's reply, or the local runtime's `flows` op)."""

    size: int
    recorded: int
    since: float
    events: list[FlowEventRecord]
    running: bool = True
    error: str | None = None
    names: PortNames = field(default_factory=dict)
    gaps: list[tuple[float, float]] = field(default_factory=list)  # yielded to another reader
    paused_since: float | None = None  # yielding now, since then

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "HistoryReply":
        return cls(
            size=int(data["size"]),
            recorded=int(data["recorded"]),
            since=float(data["since"]),
            events=[record_from_wire(e) for e in data.get("events", [])],
            running=bool(data.get("running", True)),
            error=data.get("error"),
            names=data.get("names") or {},
            gaps=[(float(a), float(b)) for a, b in data.get("gaps", [])],
            paused_since=data.get("pausedSince"),
        )


# ---- the socket -------------------------------------------------------------------------------------


class HistoryUnavailable(RuntimeError):
    """Nothing serves a flow history at the path (no agent, or history off)."""


def default_socket(cni_socket: str) -> str:
    return os.path.join(os.path.dirname(cni_socket) or ".", SOCKET_NAME)


class _Handler(socketserver.StreamRequestHandler):
    server: "FlowHistoryServer"
    timeout = IO_TIMEOUT_SECONDS

    def handle(self) -> None:
        try:
            request = json.loads(self.rfile.readline(1 << 16) or b"{}")
            reply: dict[str, Any] = {"ok": True, "result": self.server.dispatch(request)}
        except (ValueError, TypeError, KeyError) as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("flow history request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class FlowHistoryServer(socketserver.ThreadingUnixStreamServer):
    """Serves `history` on the unix socket `path` (mode 0600: the flows of the node are root's)."""

    daemon_threads = True

    def __init__(self, path: str, history: FlowHistory) -> None:
        self.history = history
        self.path = path
        self._inode: int | None = None
        self._thread: threading.Thread | None = None
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        if os.path.exists(path):
            if jsonline.answers(path):  # never take the socket of a live process
                raise RuntimeError(f"another process serves {path}")
            os.unlink(path)
        super().__init__(path, _Handler)

    def server_bind(self) -> None:
        # Bound under a temporary name, made 0600 and renamed into place, as the CNI socket: the
        # path is never reachable with other permissions.
        tmp = os.path.join(
            os.path.dirname(self.path) or ".", f".{os.path.basename(self.path)}.{os.getpid()}.tmp"
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        self.socket.bind(tmp)
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.path)
        self._inode = os.stat(self.path).st_ino
        self.server_address = self.path

    def dispatch(self, request: dict[str, Any]) -> Any:
        op = request.get("op", "flows")
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "flows":
            last = request.get("last")
            return self.history.to_json(None if last is None else max(int(last), 0))
        raise ValueError(f"unknown request op {op!r}")

    def start(self) -> "FlowHistoryServer":
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.2}, name="flow-history-socket", daemon=True
        )
        self._thread.start()
        log.info("serving the flow history (%d events) on %s", self.history.size, self.path)
        return self

    def stop(self) -> None:
        """Stops serving and closes the history (its reader lets go of the stream)."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self._inode:  # only the socket this server bound
                os.unlink(self.path)
        self.history.close()


def serve(path: str, pin_dir: str, size: int, names: NamesSource | None = None) -> FlowHistoryServer:
    """A history of `size` events of the data plane at `pin_dir`, served on `path`; stop() ends both.
    Ports are named by `names`, by default what the pinned records say (:class:`PinnedNames`)."""
    history = FlowHistory(pin_dir, size, names=names if names is not None else PinnedNames(pin_dir))
    try:
        return FlowHistoryServer(path, history).start()
    except BaseException:
        history.close()
        raise


def fetch(path: str, last: int | None = None, timeout: float = IO_TIMEOUT_SECONDS) -> HistoryReply:
    """The history served at `path` (its newest `last` events; all when None)."""
    try:
        reply = jsonline.call(path, {"op": "flows", "last": last}, timeout)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise HistoryUnavailable(f"no flow history served at {path}") from exc
    if reply is None:
        raise HistoryUnavailable(f"{path} closed the connection without a reply")
    if not reply.get("ok"):
        raise HistoryUnavailable(f"{path}: {reply.get('error', 'unknown error')}")
    return HistoryReply.from_json(reply["result"])
