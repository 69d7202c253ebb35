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

Wire format (integers unsigned 32-bit big-endian)::

    request  "FXC1" <n> n x (<len> "CNI_NAME=value") <len> <stdin>
    reply    "FXR1" <exit status> <len> <stdout>

The socket is the node's root-only door into the plugin: mode 0600 (created under a temporary name
and renamed into place, so it is never reachable with other permissions) and peers other than root
(or the agent's own user) are refused by their SO_PEERCRED credentials.
"""

import contextlib
import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# (CNI_* variables, stdin) -> (exit status, stdout)
Handler = Callable[[Mapping[str, str], bytes], tuple[int, bytes]]

REQUEST_MAGIC = b"FXC1"
REPLY_MAGIC = b"FXR1"
MAX_ENV = 64
MAX_ENV_ENTRY = 64 << 10
MAX_STDIN = 1 << 20  # the shim's own limit
MAX_REQUEST = MAX_STDIN + (256 << 10)
IO_TIMEOUT_SECONDS = 30.0
QUEUE_FILE_PREFIX = "del-"
STALE_TMP_SECONDS = 3600.0  # a shim's half-written queue file older than this is removed
_U32 = struct.Struct(">I")


class ProtocolError(ValueError):
    """A request the agent refuses; answered with a CNI error of ``code`` (4: the environment)."""

    def __init__(self, message: str, code: int = 5) -> None:
        super().__init__(message)
        self.code = code


class EmptyConnection(ProtocolError):
    """Closed before the first byte (a liveness probe, another agent checking the socket)."""


# ------------------------------------------------------------------------------------- wire format


def encode_request(environ: Mapping[str, str], stdin: bytes) -> bytes:
    """The request the shim sends (only ``CNI_*`` variables are carried)."""
    entries = [f"{key}={value}".encode() for key, value in environ.items() if key.startswith("CNI_")]
    parts = [REQUEST_MAGIC, _U32.pack(len(entries))]
    for entry in entries:
        parts += [_U32.pack(len(entry)), entry]
    parts += [_U32.pack(len(stdin)), stdin]
    return b"".join(parts)


def decode_request(read_exact: Callable[[int], bytes]) -> tuple[dict[str, str], bytes]:
    """A request from ``read_exact(n)`` (which returns exactly n bytes or raises), every length bounded."""
    if read_exact(4) != REQUEST_MAGIC:
        raise ProtocolError("not a flexsfc-cni request (bad magic)")
    count = _read_u32(read_exact)
    if count > MAX_ENV:
        raise ProtocolError(f"{count} environment entries (at most {MAX_ENV})", 4)
    environ: dict[str, str] = {}
    for _ in range(count):
        size = _read_u32(read_exact)
        if size > MAX_ENV_ENTRY:
            raise ProtocolError(f"environment entry of {size} bytes (at most {MAX_ENV_ENTRY})", 4)
        key, sep, value = read_exact(size).decode("utf-8", "surrogateescape").partition("=")
        if not sep or not key.startswith("CNI_"):
            raise ProtocolError(f"environment entry {key[:40]!r} is not CNI_NAME=value", 4)
        environ[key] = value
    size = _read_u32(read_exact)
    if size > MAX_STDIN:
        raise ProtocolError(f"stdin of {size} bytes (at most {MAX_STDIN})")
    return environ, read_exact(size)


def encode_reply(status: int, stdout: bytes) -> bytes:
    return REPLY_MAGIC + _U32.pack(status) + _U32.pack(len(stdout)) + stdout


def decode_reply(data: bytes) -> tuple[int, bytes]:
    if len(data) < 12 or data[:4] != REPLY_MAGIC:
        raise ProtocolError("not a flexsfc-cni reply")
    status, size = _U32.unpack_from(data, 4)[0], _U32.unpack_from(data, 8)[0]
    if len(data) != 12 + size:
        raise ProtocolError("truncated reply")
    return status, data[12:]


def call(
    socket_path: str, environ: Mapping[str, str], stdin: bytes, timeout: float = 120.0
) -> tuple[int, bytes]:
    """One call as the shim makes it (tests, benchmarks, a Python client)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(encode_request(environ, stdin))
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(1 << 16):
            chunks.append(chunk)
    return decode_reply(b"".join(chunks))


def _refusal(exc: ProtocolError) -> bytes:
    error = {"cniVersion": "1.1.0", "code": exc.code, "msg": "request refused by the flexsfc agent"}
    return (json.dumps({**error, "details": str(exc)}) + "\n").encode()


def _read_u32(read_exact: Callable[[int], bytes]) -> int:
    value: int = _U32.unpack(read_exact(4))[0]
    return value


def _bytes_reader(data: bytes) -> Callable[[int], bytes]:
    offset = 0

    def read_exact(size: int) -> bytes:
        nonlocal offset
        if offset + size > len(data):
            raise ProtocolError("truncated request")
        chunk = data[offset : offset + size]
        offset += size
        return chunk

    return read_exact


def _socket_reader(sock: socket.socket) -> Callable[[int], bytes]:
    budget = MAX_REQUEST

    def read_exact(size: int) -> bytes:
        nonlocal budget
        if size > budget:
            raise ProtocolError(f"request larger than {MAX_REQUEST} bytes")
        budget -= size
        buffer = bytearray(size)
        view = memoryview(buffer)
        got = 0
        while got < size:
            n = sock.recv_into(view[got:], size - got)
            if n == 0 and budget + size == MAX_REQUEST and got == 0:
                raise EmptyConnection("connection closed without a request")
            if n == 0:
                raise ProtocolError("connection closed mid-request")
            got += n
        return bytes(buffer)

    return read_exact


# ------------------------------------------------------------------------------------------ queue


@dataclass
class QueueReport:
    applied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # failed: retried on the next pass
    dropped: list[str] = field(default_factory=list)  # unreadable or not a DEL: removed


def drain_delete_queue(directory: str, handler: Handler) -> QueueReport:
    """Replay every DEL the shim queued in ``directory`` (oldest first); see the module's doc."""
    report = QueueReport()
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return report
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".tmp-"):
            _remove_stale_tmp(path)
            continue
        if not name.startswith(QUEUE_FILE_PREFIX):
            continue
        try:
            environ, stdin = decode_request(_bytes_reader(_read_queue_file(path)))
            if environ.get("CNI_COMMAND") != "DEL":
                raise ProtocolError(f"CNI_COMMAND is {environ.get('CNI_COMMAND')!r}, only DEL is queued")
        except (OSError, ProtocolError) as exc:
            log.error("CNI delete queue: dropping unusable %s: %s", path, exc)
            _unlink(path, directory)
            report.dropped.append(name)
            continue
        try:
            status, stdout = handler(environ, stdin)
        except Exception as exc:  # the handler answers errors itself; a bug must not stop the pass
            log.exception("CNI delete queue: %s raised", name)
            status, stdout = 1, str(exc).encode()
        if status == 0:
            _unlink(path, directory)
            report.applied.append(name)
            log.info(
                "CNI delete queue: applied %s (%s/%s)",
                name,
                environ.get("CNI_CONTAINERID"),
                environ.get("CNI_IFNAME"),
            )
        else:
            report.kept.append(name)
            log.warning(
                "CNI delete queue: %s failed, kept for retry: %s",
                name,
                stdout.decode(errors="replace").strip()[:500],
            )
    return report


def _read_queue_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ProtocolError("not a regular file")
        if info.st_size > MAX_REQUEST:
            raise ProtocolError(f"{info.st_size} bytes (at most {MAX_REQUEST})")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(MAX_REQUEST + 1)
    finally:
        os.close(fd)


def _remove_stale_tmp(path: str) -> None:
    with contextlib.suppress(OSError):
        if time.time() - os.lstat(path).st_mtime > STALE_TMP_SECONDS:
            os.unlink(path)


def _unlink(path: str, directory: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        if not os.path.exists(self.socket_path):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(self.socket_path)
            except OSError:
                return False
        return True

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
                    environ, stdin = decode_request(_socket_reader(conn))
                except EmptyConnection:
                    return
                except ProtocolError as exc:
                    log.warning("bad CNI request on %s: %s", self.socket_path, exc)
                    with contextlib.suppress(OSError):  # answered, so a DEL is not queued for nothing
                        conn.sendall(encode_reply(1, _refusal(exc)))
                    return
                except OSError as exc:
                    log.warning("bad CNI request on %s: %s", self.socket_path, exc)
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
