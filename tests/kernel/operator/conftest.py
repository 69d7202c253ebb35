"""Fixtures of the operator's kernel tests: the Kubernetes API emulator (tests/unit/operator), the
"node" network namespace and a real Dataplane pinned under a unique directory, destroyed from inside
the node namespace."""

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "operator"))  # the shared emulator
from kube_emulator import kube_api_fixture, kube_fixture  # noqa: F401  (the `kube`, `kube_api` fixtures)

from flexsfc.dataplane.facade import Dataplane
from flexsfc.model.constants import DEFAULT_PIN_DIR
from flexsfc.util.netns import in_netns


@pytest.fixture
def node_ns(netns_factory: Any) -> str:
    return netns_factory("node")


@pytest.fixture
def dataplane(node_ns: str) -> Iterator[Dataplane]:
    dp = Dataplane(os.path.join(DEFAULT_PIN_DIR, f"test-operator-{uuid.uuid4().hex[:8]}"))
    try:
        yield dp
    finally:
        with in_netns(node_ns):
            dp.destroy()
