"""Helpers of the operator's kernel tests: the node is a network namespace the test creates, and the
agent's data-plane calls run in it through a thin proxy over the real facade."""

from typing import Any

from flexsfc.dataplane.facade import Dataplane
from flexsfc.util.netns import in_netns


class InNetnsDataplane:
    """The real Dataplane, each call made from inside the node's network namespace."""

    def __init__(self, inner: Dataplane, netns: str) -> None:
        self._inner, self._netns = inner, netns

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with in_netns(self._netns):
                return attr(*args, **kwargs)

        return call
