"""LockedDataplane: every call of the data-plane contract goes through it, one at a time."""

import inspect
import threading
import time
from typing import Any

from flexsfc.agent.locked import LockedDataplane
from flexsfc.dataplane.api import DataplaneAPI, DataplaneReader, DataplaneWriter


def _contract(protocol: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(protocol, inspect.isfunction) if not name.startswith("_")}


class Recorder:
    """Answers every call of the contract after a short pause, counting how many run at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.running = self.most = 0
        self._count = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> str:
            with self._count:
                self.running += 1
                self.most = max(self.most, self.running)
            time.sleep(0.002)
            with self._count:
                self.running -= 1
                self.calls.append((name, args, kwargs))
            return name

        return call


def test_the_whole_contract_is_spelled_out() -> None:
    contract = _contract(DataplaneAPI)
    assert contract == _contract(DataplaneReader) | _contract(DataplaneWriter) | {"close", "destroy"}
    assert contract <= set(vars(LockedDataplane))  # defined there, not found through __getattr__
    assert not hasattr(LockedDataplane, "__getattr__")


def test_calls_pass_through_with_their_arguments_one_at_a_time() -> None:
    inner = Recorder()
    locked = LockedDataplane(inner)  # type: ignore[arg-type]
    assert locked.ensure_xc("x", maglev_table_size=251) == "ensure_xc"  # type: ignore[comparison-overlap]
    assert inner.calls == [("ensure_xc", ("x",), {"maglev_table_size": 251})]

    threads = [
        threading.Thread(target=fn)
        # (session counts walk outside the lock on purpose: tests/unit/agent/test_locked_scrape.py)
        for fn in (locked.port_stats, locked.list_xcs, locked.event_stats, locked.drop_stats) * 4
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(inner.calls) == 1 + len(threads)
    assert inner.most == 1
