"""Run code inside a network namespace from the current thread.

libbpf's tc calls and raw sockets act in the calling thread's network namespace, so we switch the
thread with setns(2) rather than `ip netns exec` (which also remounts /sys and hides bpffs).
"""

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name_or_path: str) -> str:
    return name_or_path if name_or_path.startswith("/") else os.path.join(NETNS_RUN_DIR, name_or_path)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(name_or_path: str) -> Iterator[None]:
    """Switch this thread into a network namespace for the duration of the block."""
    target = os.open(netns_path(name_or_path), os.O_RDONLY)  # first: a missing netns leaks nothing
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    except BaseException:
        os.close(target)
        raise
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(target)
        os.close(original)
