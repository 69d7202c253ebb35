"""The node agent's CNI socket: serves the calls of the node shim, and replays its DEL queue.

On a node, ``flexsfc-cni`` is a small static executable (``flexsfc/cni/shim/flexsfc-cni.c``) that
passes each CNI call (its ``CNI_*`` variables and stdin) to the node agent over a unix socket and
prints the answer. This module is the agent's side: a unix-socket server, one thread per connection,
that hands each call to a *handler* and sends back its exit status and stdout. The handler is the CNI
plugin's logic in-process (``flexsfc.cni.dispatch.handle`` with the node's settings); the entry point
wires it in (the agent and the CNI plugin are sibling layers: neither imports the other).

When the agent is down, the shim queues a DEL as a file in the queue directory (the request exactly
as it would have sent it) and tells the kubelet it succeeded. :meth:`CniServer.start` replays that
queue before it listens, once more right after (a DEL queued in between), and then every
``queue_interval`` seconds: each file is run through the handler and removed when the DEL succeeded;
a failed one is logged and kept for the next pass; an unreadable one is logged and removed.

The wire format is flexsfc.agent.cni_wire, the queue's replay flexsfc.agent.cni_queue.

The socket is the node's root-only door into the plugin: mode 0600 (created under a temporary name
and renamed into place, so it is never reachable with other permissions) and peers other than root
(or the agent's own user) are refused by their SO_PEERCRED credentials.
"""

import contextlib
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable

from flexsfc.agent.cni_queue import QueueReport, drain_delete_queue
from flexsfc.agent.cni_wire import (
    IO_TIMEOUT_SECONDS,
    MAX_ENV,
    MAX_ENV_ENTRY,
    MAX_REQUEST,
    MAX_STDIN,
    QUEUE_FILE_PREFIX,
    REPLY_MAGIC,
    REQUEST_MAGIC,
    STALE_TMP_SECONDS,
    EmptyConnection,
    Handler,
    ProtocolError,
    call,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    refusal,
    socket_reader,
)
from flexsfc.agent.cni_wire import bytes_reader as _bytes_reader
from flexsfc.util import jsonline

log = logging.getLogger("flexsfc.agent.cni_server")  # one logger for the CNI socket (`flexsfc agent -v`)

__all__ = [
    "IO_TIMEOUT_SECONDS",
    "MAX_ENV",
    "MAX_ENV_ENTRY",
    "MAX_REQUEST",
    "MAX_STDIN",
    "QUEUE_FILE_PREFIX",
    "REPLY_MAGIC",
    "REQUEST_MAGIC",
    "STALE_TMP_SECONDS",
    "CniServer",
    "EmptyConnection",
    "Handler",
    "ProtocolError",
    "QueueReport",
    "_bytes_reader",
    "call",
    "decode_reply",
    "decode_request",
    "drain_delete_queue",
    "encode_reply",
    "encode_request",
]

# ----------------------------------------------------------------------------------------- server


class CniServer:
    """Unix-socket server of CNI calls; :meth:`start` returns once it listens (threads do the rest)."""

    def __init__(
        self,
        socket_path: str,
        handler: Handler,
        *,
        delete_queue: str | None = None,
        queue_interval: float = 30.0,
        max_connections: int = 64,
        io_timeout: float = IO_TIMEOUT_SECONDS,
    ) -> None:
        self.socket_path = socket_path
        self.handler = handler
        self.delete_queue = delete_queue
        self.queue_interval = queue_interval
        self.io_timeout = io_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._in_flight = 0
        self._idle = threading.Condition()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._queue_lock = threading.Lock()
        self._allowed_uids = {0, os.geteuid()}
        self._inode: int | None = None  # of the socket we bound: stop() removes only that one
        self.replayed = 0  # queued DELs applied so far (the local runtime's status shows it)

    # -- lifecycle

    def start(self) -> None:
        self.drain_queue()  # before listening: no ADD overtakes a DEL queued while the agent was down
        self._listener = self._listen()
        self._spawn(self._accept_loop, "cni-accept")
        self.drain_queue()  # what a shim queued between the first pass and the listen
        if self.delete_queue and self.queue_interval > 0:
            self._spawn(self._queue_loop, "cni-queue")

    def stop(self, stop_timeout: float = 60.0) -> None:
        """Stop listening, remove the socket, wait (bounded) for the calls being served."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                if self._is_ours():
                    os.unlink(self.socket_path)
        for thread in self._threads:
            thread.join(timeout=5)
        # Let calls already running finish: a call cut short by the process's exit could leave an
        # attachment half made (its veth without a record, or the reverse) until GC.
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=stop_timeout)

    def __enter__(self) -> "CniServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drain_queue(self) -> QueueReport:
        if not self.delete_queue:
            return QueueReport()
        with self._queue_lock:
            report = drain_delete_queue(self.delete_queue, self.handler)
            self.replayed += len(report.applied)
            return report

    # -- internals

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _listen(self) -> socket.socket:
        directory = os.path.dirname(self.socket_path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if self._someone_listens():
            raise RuntimeError(f"another process already serves CNI calls on {self.socket_path}")
        # Bound under a temporary name, made 0600, then renamed over the path (also over a stale
        # socket): the socket is never reachable at its path with other permissions.
        tmp = os.path.join(directory, f".{os.path.basename(self.socket_path)}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(tmp)
            os.chmod(tmp, 0o600)
            listener.listen(128)
            os.rename(tmp, self.socket_path)
        except BaseException:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._inode = os.stat(self.socket_path).st_ino
        log.info("serving CNI calls on %s", self.socket_path)
        return listener

    def _is_ours(self) -> bool:
        try:
            return os.stat(self.socket_path).st_ino == self._inode
        except FileNotFoundError:
            return False

    def _someone_listens(self) -> bool:
        return os.path.exists(self.socket_path) and jsonline.answers(self.socket_path)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accepting a CNI connection failed")
                time.sleep(0.1)
                continue
            self._slots.acquire()
            with self._idle:
                self._in_flight += 1
            try:
                threading.Thread(target=self._serve, args=(conn,), name="cni-call", daemon=True).start()
            except BaseException:
                self._done()
                conn.close()
                raise

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                uid = self._peer_uid(conn)
                if uid not in self._allowed_uids:
                    log.warning("refusing a CNI call from uid %s on %s", uid, self.socket_path)
                    return
                conn.settimeout(self.io_timeout)
                try:
                    environ, stdin = decode_request(socket_reader(conn))
                except EmptyConnection:
                    return
                except ProtocolError as exc:
                    log.warning("bad CNI request on %s: %s", self.socket_path, exc)
                    with contextlib.suppress(OSError):  # answered, so a DEL is not queued for nothing
                        conn.sendall(encode_reply(1, refusal(exc)))
                    return
                except OSError as exc:
                    log.warning("bad CNI request on %s: %s", self.socket_path, exc)
                    return
                if _peer_gone(conn):
                    # The shim gave up (its reply timeout) while this call waited for a slot: running
                    # it now would make an attachment nobody owns (the runtime may have sent DEL since).
                    log.warning(
                        "CNI %s %s/%s: the caller hung up before it was served; not run",
                        environ.get("CNI_COMMAND"),
                        environ.get("CNI_CONTAINERID"),
                        environ.get("CNI_IFNAME"),
                    )
                    return
                started = time.monotonic()
                status, stdout = self.handler(environ, stdin)
                log.debug(
                    "CNI %s %s/%s: exit %d in %.1f ms",
                    environ.get("CNI_COMMAND"),
                    environ.get("CNI_CONTAINERID"),
                    environ.get("CNI_IFNAME"),
                    status,
                    (time.monotonic() - started) * 1000,
                )
                with contextlib.suppress(OSError):  # the shim gave up (timeout): nothing to tell
                    conn.sendall(encode_reply(status, stdout))
        except Exception:
            log.exception("serving a CNI call failed")
        finally:
            self._done()

    def _done(self) -> None:
        self._slots.release()
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()

    @staticmethod
    def _peer_uid(conn: socket.socket) -> int:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)

    def _queue_loop(self) -> None:
        while not self._stopping.wait(self.queue_interval):
            try:
                self.drain_queue()
            except Exception:
                log.exception("replaying the CNI delete queue failed")


def _peer_gone(conn: socket.socket) -> bool:
    """Whether the peer closed its end. The shim only shuts down its writing half after the request,
    so a hang-up (both halves) means it exited: POLLHUP, which a half-close does not raise."""
    poller = select.poll()
    poller.register(conn, select.POLLHUP)
    return any(events & select.POLLHUP for _, events in poller.poll(0))
