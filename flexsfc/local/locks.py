"""Locks of the local runtime: one supervisor per state directory, one runtime per data plane.

All are `flock`s, so a lock dies with the process that held it (a SIGKILLed supervisor leaves no
stale lock behind) and the file only carries who held it last, for messages.

- `<state dir>/supervisor.lock`: held by the supervisor for its whole life. A second supervisor for
  the same directory exits before it touches the control socket, the data plane or any pod.
- `<state dir>/start.lock`: held by `flexsfc up` (and `status`, `scale`, `down` when they start a
  supervisor to adopt a runtime) while it decides whether to start one: two commands never both do.
- `<claims dir>/pin-<digest>.lock`, `<claims dir>/netns-<prefix>.lock`: the pin directory and the
  namespace prefix a supervisor uses, held for its life and naming its state directory. A runtime
  whose supervisor died keeps its claims (the files name its state directory, whose state file still
  exists): another state directory cannot take them until that runtime is adopted or brought down.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flexsfc.local.config import RuntimeConfig
from flexsfc.model.constants import DEFAULT_LOCAL_STATE_DIR

CLAIMS_DIR = os.path.join(DEFAULT_LOCAL_STATE_DIR, "claims")

# Exit statuses of a supervisor that left before touching anything (the client tells them apart).
EXIT_LOCKED = 75  # another supervisor holds the state directory
EXIT_CLAIMED = 76  # another runtime uses the pin directory or the namespace prefix
EXIT_NOT_ADOPTED = 77  # the state left by a dead supervisor cannot be adopted (it stays for `down`)
_POLL_SECONDS = 0.05


class LockBusy(RuntimeError):
    """Another live process holds the lock; `holder` is what it wrote into the file."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path = path
        self.holder = holder


class ClaimError(RuntimeError):
    """The pin directory or namespace prefix belongs to another runtime."""


@dataclass
class Lock:
    path: Path
    fd: int

    def write(self, info: dict[str, Any]) -> None:
        data = json.dumps(info).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self, *, unlink: bool = False) -> None:
        """Unlink (while still holding it, so no one locks the old file meanwhile) and close."""
        if self.fd < 0:
            return
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def acquire(path: Path, *, timeout: float = 0.0) -> Lock:
    """Lock `path` (created if missing); wait up to `timeout` seconds, then raise LockBusy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                raise LockBusy(path, read_holder(path)) from None
            time.sleep(_POLL_SECONDS)
            continue
        # Whoever held it may have unlinked the file before we locked it (release(unlink=True), or
        # `down` removing the state directory): a lock on an unlinked file protects nothing.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return Lock(path, fd)
        os.close(fd)


def claim_paths(config: RuntimeConfig, claims_dir: str = CLAIMS_DIR) -> dict[str, Path]:
    """What a runtime claims -> the lock file of that claim."""
    pin = hashlib.sha256(os.path.normpath(config.pin_dir).encode()).hexdigest()[:16]
    return {
        f"pin directory {config.pin_dir}": Path(claims_dir) / f"pin-{pin}.lock",
        f"namespace prefix {config.netns_prefix!r}": Path(claims_dir) / f"netns-{config.netns_prefix}.lock",
    }


def claim(config: RuntimeConfig, claims_dir: str = CLAIMS_DIR) -> list[Lock]:
    """Claim the runtime's pin directory and namespace prefix for this process (see module doc)."""
    mine = os.path.realpath(config.state_dir)
    held: list[Lock] = []
    try:
        for what, path in claim_paths(config, claims_dir).items():
            try:
                lock = acquire(path)
            except LockBusy as exc:
                other = exc.holder.get("stateDir", "?")
                raise ClaimError(
                    f"the {what} is in use by the runtime in {other} (supervisor pid "
                    f"{exc.holder.get('pid', '?')}); give this runtime its own (the defaults follow "
                    "--state-dir)"
                ) from None
            held.append(lock)
            other = str(read_holder(path).get("stateDir") or "")
            if other and other != mine and (Path(other) / "state.json").exists():
                raise ClaimError(
                    f"the {what} belongs to the runtime in {other}, whose supervisor is gone but whose "
                    f"pods may remain: `flexsfc up|status --state-dir {other}` adopts them, "
                    f"`flexsfc down --state-dir {other}` removes them"
                )
            lock.write({"stateDir": mine, "pid": os.getpid()})
        return held
    except BaseException:
        for lock in held:
            # Rewritten for this process already or free: no other runtime's record is lost.
            lock.release(unlink=read_holder(lock.path).get("pid") == os.getpid())
        raise


def drop_claims(config: RuntimeConfig, claims_dir: str = CLAIMS_DIR) -> None:
    """Remove this runtime's claim files once it is gone (its supervisor died and `down` cleaned up)."""
    mine = os.path.realpath(config.state_dir)
    for path in claim_paths(config, claims_dir).values():
        if not path.exists():
            continue
        try:
            lock = acquire(path)
        except LockBusy:
            continue  # a live supervisor holds it: not this dead runtime's any more
        lock.release(unlink=read_holder(path).get("stateDir") == mine)


def claimed_by_other(config: RuntimeConfig, claims_dir: str = CLAIMS_DIR) -> str:
    """The state directory of a live runtime holding this config's pin directory claim, else ""."""
    path = next(iter(claim_paths(config, claims_dir).values()))
    if not path.exists():
        return ""
    try:
        lock = acquire(path)
    except LockBusy as exc:
        other = str(exc.holder.get("stateDir") or "")
        return "" if other == os.path.realpath(config.state_dir) else other or "?"
    lock.release()
    return ""
