"""Serialise every call into a data plane, so status readers and the reconciler can share one."""

import threading
from typing import Any

from flexsfc.dataplane.api import DataplaneAPI


class LockedDataplane:
    """A DataplaneAPI proxy holding one lock around each call (the facade is not thread-safe)."""

    def __init__(self, inner: DataplaneAPI) -> None:
        self._inner = inner
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked
