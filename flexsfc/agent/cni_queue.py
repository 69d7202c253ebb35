"""The shim's DEL queue, replayed: each file a request the shim could not send while the agent was
down, run through the handler and removed once the DEL succeeded. A failed one is kept for the next
pass, up to GIVE_UP_SECONDS after it was queued: then it is set aside as `abandoned-<name>` (kept for
the operator to read, never retried, logged once), so one DEL that can never succeed does not fail
and log on every pass forever. An unreadable one is removed."""

import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field

from flexsfc.agent.cni_wire import (
    MAX_REQUEST,
    QUEUE_FILE_PREFIX,
    STALE_TMP_SECONDS,
    Handler,
    ProtocolError,
    bytes_reader,
    decode_request,
)

# A DEL failing this long after it was queued will not succeed by being retried (its pod's state is
# gone or broken): the node agent sets it aside. A day covers any agent outage worth waiting for.
GIVE_UP_SECONDS = 24 * 3600.0
ABANDONED_PREFIX = "abandoned-"

log = logging.getLogger("flexsfc.agent.cni_server")  # one logger for the CNI socket (`flexsfc agent -v`)


@dataclass
class QueueReport:
    applied: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # failed: retried on the next pass
    abandoned: list[str] = field(default_factory=list)  # failed for GIVE_UP_SECONDS: set aside
    dropped: list[str] = field(default_factory=list)  # unreadable or not a DEL: removed


def drain_delete_queue(
    directory: str, handler: Handler, *, give_up_seconds: float = GIVE_UP_SECONDS
) -> QueueReport:
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
            environ, stdin = decode_request(bytes_reader(_read_queue_file(path)))
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
        elif _age(path) > give_up_seconds:
            _set_aside(path, os.path.join(directory, ABANDONED_PREFIX + name))
            report.abandoned.append(name)
            log.error(
                "CNI delete queue: %s (%s/%s) fails after %.0f h: set aside as %s%s, not retried: %s",
                name,
                environ.get("CNI_CONTAINERID"),
                environ.get("CNI_IFNAME"),
                give_up_seconds / 3600,
                ABANDONED_PREFIX,
                name,
                stdout.decode(errors="replace").strip()[:500],
            )
        else:
            report.kept.append(name)
            log.warning(
                "CNI delete queue: %s failed, kept for retry: %s",
                name,
                stdout.decode(errors="replace").strip()[:500],
            )
    return report


def _age(path: str) -> float:
    """Seconds since the shim queued the file (its mtime; 0 when it cannot be read)."""
    try:
        return time.time() - os.lstat(path).st_mtime
    except OSError:
        return 0.0


def _set_aside(path: str, aside: str) -> None:
    try:
        os.rename(path, aside)
    except OSError as exc:
        log.error("CNI delete queue: cannot set %s aside: %s", path, exc)


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
    except OSError as exc:  # e.g. a directory someone made there: skipped, never the pass's end
        log.error("CNI delete queue: cannot remove %s: %s", path, exc)
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
