"""The attachment records flexsfc-cni keeps on the node, and the reader API for the agent.

One JSON file per attachment (``<container id>@<ifname>.json``; '@' cannot occur in a container id,
so names never collide), written to a temporary file, fsync'ed, renamed and the directory fsync'ed: a
reader never sees half a record, and a record that ADD reported is still there after a power loss.
Mutating verbs (ADD, DEL, GC) hold an exclusive ``flock`` on ``<state dir>/.lock`` so GC never removes
an attachment that an ADD is creating. Readers need no lock.

A record that cannot be used (empty, not JSON, not a record, or naming another attachment than its
file name) is skipped, reported (a warning on the ``flexsfc.cni.state`` logger, and in the optional
``bad`` list) and removed: it must never make DEL fail (the pod would stay Terminating) nor stop the
agent's reconcile loop.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flexsfc.cni import errors
from flexsfc.cni.errors import CniError
from flexsfc.model.constants import DEFAULT_CNI_STATE_DIR
from flexsfc.model.records import AttachmentRecord

LOCK_NAME = ".lock"
RECORD_SUFFIX = ".json"
_LOCK_POLL_SECONDS = 0.005

# Host ends carry this interface alias (IFLA_IFALIAS): DEL and GC delete a link only when it carries
# the alias of that very attachment, never because a name matches (see :func:`owner_alias`).
OWNER_ALIAS_PREFIX = "flexsfc-cni:"
_MAX_ALIAS_BYTES = 255  # IFALIASZ (256) with the terminating NUL


# State directories whose lock the calling thread holds (normalised paths): a bad record found under
# the lock can be removed at once; a lock-free reader (the agent) takes the lock briefly to remove one.
# Per thread: the agent serves CNI calls in-process, one thread each, next to its lock-free readers,
# and flock(2) only excludes other open file descriptions, not other threads of the holder.
_local = threading.local()


def _held() -> set[str]:
    held: set[str] | None = getattr(_local, "held", None)
    if held is None:
        held = _local.held = set()
    return held


@dataclass(frozen=True)
class BadRecord:
    """A record file the reader skipped: where, why, and whether it was removed."""

    path: str
    problem: str
    removed: bool


def owner_alias(container_id: str, ifname: str) -> str:
    """The alias ADD gives the host end of (container id, ifname): proof that flexsfc made it for that
    attachment. Container ids have no length limit, so a too long alias becomes a digest."""
    alias = f"{OWNER_ALIAS_PREFIX}{container_id}@{ifname}"
    if len(alias.encode()) > _MAX_ALIAS_BYTES:
        digest = hashlib.sha256(f"{container_id}\0{ifname}".encode()).hexdigest()
        alias = f"{OWNER_ALIAS_PREFIX}sha256:{digest}"
    return alias


def record_path(state_dir: str, container_id: str, ifname: str) -> str:
    return os.path.join(state_dir, f"{container_id}@{ifname}{RECORD_SUFFIX}")


def load_records(
    state_dir: str = DEFAULT_CNI_STATE_DIR,
    *,
    container_id: str = "",
    bad: list[BadRecord] | None = None,
) -> list[AttachmentRecord]:
    """Every attachment recorded in ``state_dir`` (empty when the directory does not exist), or only
    those of one container (pod sandbox). Unusable records are skipped (see the module docstring)
    and appended to ``bad`` when given."""
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return []
    prefix = f"{container_id}@" if container_id else ""
    records = []
    for name in names:
        if name.startswith(".") or not name.endswith(RECORD_SUFFIX) or not name.startswith(prefix):
            continue  # lock file, in-flight temporary files, other containers
        record = _read(os.path.join(state_dir, name), bad)
        if record is not None:
            records.append(record)
    return records


def record_for(
    container_id: str,
    ifname: str,
    state_dir: str = DEFAULT_CNI_STATE_DIR,
    *,
    bad: list[BadRecord] | None = None,
) -> AttachmentRecord | None:
    """The record of one attachment, or None when there is none (or it was unusable)."""
    return _read(record_path(state_dir, container_id, ifname), bad)


def _read(path: str, bad: list[BadRecord] | None) -> AttachmentRecord | None:
    try:
        # O_NOFOLLOW: a record is a regular file we wrote; a symbolic link in its place is not one.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None  # removed by a concurrent DEL between listdir and open
    except OSError as exc:
        # ELOOP: a symbolic link, never ours. Anything else (EACCES, EIO): the file may be fine, so a
        # reader that cannot open it must not remove it.
        _skip(path, f"cannot open: {exc.strerror}", bad, identity=None, remove=exc.errno == errno.ELOOP)
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            identity = _identity(os.fstat(handle.fileno()))
            data = handle.read()
    except OSError as exc:
        _skip(path, f"cannot read: {exc.strerror}", bad, identity=None, remove=False)
        return None
    try:
        return _parse(os.path.basename(path), data)
    except ValueError as exc:
        _skip(path, str(exc), bad, identity=identity, remove=True)
        return None


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


_STR_FIELDS = (
    "container_id",
    "ifname",
    "netns",
    "network",
    "host_ifname",
    "mac",
    "mode",
    "pod_namespace",
    "pod_name",
    "pod_uid",
)


def _parse(file_name: str, data: bytes) -> AttachmentRecord:
    """The record in ``data``; ValueError saying what is wrong when it is not a usable record."""
    if not data.strip():
        raise ValueError("empty file")
    try:
        raw: Any = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"a JSON {type(raw).__name__}, not an object")
    if not isinstance(raw.get("ips", []), list):
        raise ValueError("field 'ips' is not a list")
    try:
        record = AttachmentRecord.from_json_dict(raw)
    except TypeError as exc:  # missing or unexpected fields
        raise ValueError(f"not an attachment record ({exc})") from None
    # Readers use these fields without further checks (link lookups, paths, sorting): check the types.
    for name in _STR_FIELDS:
        if not isinstance(getattr(record, name), str):
            raise ValueError(f"field {name!r} is not a string")
    for name in ("host_ifindex", "mtu"):
        if isinstance(getattr(record, name), bool) or not isinstance(getattr(record, name), int):
            raise ValueError(f"field {name!r} is not an integer")
    if isinstance(record.created_at, bool) or not isinstance(record.created_at, int | float):
        raise ValueError("field 'createdAt' is not a number")
    if not all(isinstance(ip, str) for ip in record.ips) or not isinstance(record.extra, dict):
        raise ValueError("field 'ips' or 'extra' has the wrong type")
    # The file name is the attachment's identity (removal goes by it): the content must agree.
    expected = f"{record.container_id}@{record.ifname}{RECORD_SUFFIX}"
    if file_name != expected:
        raise ValueError(f"names attachment {record.container_id}/{record.ifname}, not its file name")
    return record


def _skip(
    path: str, problem: str, bad: list[BadRecord] | None, *, identity: tuple[int, int] | None, remove: bool
) -> None:
    removed = remove and _discard(path, identity)
    if removed:
        what = "removed"
    elif remove:
        what = "not removed yet (state lock busy or not writable): a later read removes it"
    else:
        what = "left in place (it may be readable by others)"
    import logging  # here: ~10 ms that every plugin call would pay at start-up for a rare event

    logging.getLogger(__name__).warning("skipping unusable attachment record %s: %s; %s", path, problem, what)
    if bad is not None:
        bad.append(BadRecord(path, problem, removed))


def _discard(path: str, identity: tuple[int, int] | None) -> bool:
    """Remove a bad record, under the state lock and only if it is still the file that was read: a
    writer may have renamed a good record over it in the meantime (writers hold the lock)."""
    state_dir = os.path.dirname(path)
    if os.path.normpath(os.path.abspath(state_dir)) in _held():
        return _unlink_if_same(path, identity)
    try:
        fd = os.open(os.path.join(state_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False  # a reader without write access: report only
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # a CNI call is running: the next pass (or that call's own reader) removes it
    try:
        return _unlink_if_same(path, identity)
    finally:
        os.close(fd)


def _unlink_if_same(path: str, identity: tuple[int, int] | None) -> bool:
    try:
        if identity is not None and _identity(os.lstat(path)) != identity:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    _fsync_dir(os.path.dirname(path))
    return True


def write_record(state_dir: str, record: AttachmentRecord) -> None:
    """Atomically and durably create or replace the record (temporary file, fsync, rename, fsync of
    the directory): after a crash the record is either absent or complete, never empty."""
    final = record_path(state_dir, record.container_id, record.ifname)
    temporary = os.path.join(state_dir, f".{os.path.basename(final)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(record.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, final)
        _fsync_dir(state_dir, strict=True)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CniError(errors.STATE_FAILURE, f"cannot write attachment record {final}", str(exc)) from None


def remove_record(state_dir: str, container_id: str, ifname: str) -> None:
    try:
        os.unlink(record_path(state_dir, container_id, ifname))
    except FileNotFoundError:
        return
    _fsync_dir(state_dir)  # best effort: a removal that did not reach the disk only leaves a stale record


def _fsync_dir(directory: str, *, strict: bool = False) -> None:
    """Make a directory's entries (a rename, an unlink) durable."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if strict and exc.errno != errno.EINVAL:  # EINVAL: a file system without directory fsync
            raise


@contextlib.contextmanager
def locked(state_dir: str, timeout_seconds: float) -> Iterator[None]:
    """Hold the state directory's exclusive lock; code 11 (try again later) on timeout."""
    try:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(state_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise CniError(
            errors.STATE_FAILURE,
            f"cannot use state directory {state_dir}",
            f"{exc}; make it writable, or set the node's stateDir (docs/cni.md) to a writable directory",
        ) from None
    key = os.path.normpath(os.path.abspath(state_dir))
    added = False
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if time.monotonic() >= deadline:
                    raise CniError(
                        errors.TRY_AGAIN_LATER,
                        f"state directory {state_dir} is locked by another flexsfc-cni call",
                        f"waited {timeout_seconds:g} s for {LOCK_NAME}; retry",
                    ) from None
                time.sleep(_LOCK_POLL_SECONDS)
        _held().add(key)
        added = True
        yield
    finally:
        if added:  # a call that timed out never held it: not its claim to drop
            _held().discard(key)
        os.close(fd)  # closing the descriptor releases the lock
