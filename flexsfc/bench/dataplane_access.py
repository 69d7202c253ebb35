"""How the benchmarks reach the data plane: the public facade, with a private pin directory.

Every benchmark data plane pins under /sys/fs/bpf/flexsfc/bench-<unique> and is destroyed after use,
so benchmarks never touch a running agent's state.
"""

import contextlib
import importlib
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

from flexsfc.model.constants import DEFAULT_PIN_DIR


def dataplane_unavailable() -> str | None:
    """None when flexsfc.dataplane.facade can be used here, else why not."""
    try:
        importlib.import_module("flexsfc.dataplane.facade")
    except ImportError as exc:
        return f"flexsfc.dataplane.facade is not available ({exc})"
    return None


def open_dataplane(pin_dir: str, *, peer: bool = True) -> Any:
    """A Dataplane pinned at `pin_dir`, forwarding with bpf_redirect_peer (peer) or bpf_redirect."""
    from flexsfc.dataplane.api import RedirectMode
    from flexsfc.dataplane.facade import Dataplane

    mode = RedirectMode.PEER if peer else RedirectMode.REDIRECT
    return Dataplane(pin_dir=pin_dir, redirect_mode=mode)


@contextlib.contextmanager
def private_dataplane(label: str, **kwargs: Any) -> Iterator[Any]:
    """A Dataplane pinned under /sys/fs/bpf/flexsfc/bench-<label>-<unique>, destroyed on exit.

    The pin directory goes too, even when loading failed half-way (the facade creates it first).
    """
    from flexsfc.dataplane.facade import Dataplane

    pin_dir = os.path.join(DEFAULT_PIN_DIR, f"bench-{label}-{uuid.uuid4().hex[:8]}")
    dp = None
    try:
        dp = Dataplane(pin_dir, **kwargs)
        yield dp
    finally:
        if dp is not None:
            dp.destroy()
        shutil.rmtree(pin_dir, ignore_errors=True)
