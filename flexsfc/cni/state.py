"""The attachment records flexsfc-cni keeps on the node, and the reader API for the agent.

One JSON file per attachment (``<container id>@<ifname>.json``; '@' cannot occur in a container id,
so names never collide), written to a temporary file and renamed so a reader never sees half a
record. Mutating verbs (ADD, DEL, GC) hold an exclusive ``flock`` on ``<state dir>/.lock`` so GC never
removes an attachment that an ADD is creating. Readers need no lock.
"""

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator

from flexsfc.cni import errors
from flexsfc.cni.errors import CniError
from flexsfc.model.constants import DEFAULT_CNI_STATE_DIR
from flexsfc.model.records import AttachmentRecord

LOCK_NAME = ".lock"
RECORD_SUFFIX = ".json"
_LOCK_POLL_SECONDS = 0.005


def record_path(state_dir: str, container_id: str, ifname: str) -> str:
    return os.path.join(state_dir, f"{container_id}@{ifname}{RECORD_SUFFIX}")


def load_records(state_dir: str = DEFAULT_CNI_STATE_DIR, *, container_id: str = "") -> list[AttachmentRecord]:
    """Every attachment recorded in ``state_dir`` (empty when the directory does not exist), or only
    those of one container (pod sandbox)."""
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return []
    prefix = f"{container_id}@" if container_id else ""
    records = []
    for name in names:
        if name.startswith(".") or not name.endswith(RECORD_SUFFIX) or not name.startswith(prefix):
            continue  # lock file, in-flight temporary files, other containers
        record = _read(os.path.join(state_dir, name))
        if record is not None:
            records.append(record)
    return records


def record_for(
    container_id: str, ifname: str, state_dir: str = DEFAULT_CNI_STATE_DIR
) -> AttachmentRecord | None:
    """The record of one attachment, or None when there is none."""
    return _read(record_path(state_dir, container_id, ifname))


def _read(path: str) -> AttachmentRecord | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return AttachmentRecord.from_json_dict(json.load(handle))
    except FileNotFoundError:
        return None  # removed by a concurrent DEL between listdir and open
    except (OSError, ValueError, TypeError) as exc:
        raise CniError(errors.STATE_FAILURE, f"unreadable attachment record {path}", str(exc)) from None


def write_record(state_dir: str, record: AttachmentRecord) -> None:
    """Atomically create or replace the record (temporary file + rename)."""
    final = record_path(state_dir, record.container_id, record.ifname)
    temporary = os.path.join(state_dir, f".{os.path.basename(final)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(record.to_json())
        os.rename(temporary, final)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise CniError(errors.STATE_FAILURE, f"cannot write attachment record {final}", str(exc)) from None


def remove_record(state_dir: str, container_id: str, ifname: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record_path(state_dir, container_id, ifname))


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
            f"{exc}; set 'stateDir' to a writable directory",
        ) from None
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
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
