"""Fixtures for data-plane tests: a Dataplane pinned under the unique `pin_dir`, always destroyed, and
the test pinned to one CPU.

The private `host` namespace and the `pin_dir` fixture are the kernel tests' (tests/kernel/conftest.py).
"""

import os
from collections.abc import Iterator

import pytest

from flexsfc.dataplane.facade import Dataplane
from flexsfc.testing.netlab import Host, dataplane_at


@pytest.fixture
def dataplane(host: Host, pin_dir: str) -> Iterator[Dataplane]:
    with dataplane_at(pin_dir, session_capacity=65536, seed=12345) as dp:
        yield dp


@pytest.fixture
def one_cpu() -> Iterator[None]:
    """The flow cache is per CPU and test runs execute on the caller's: pin to one CPU so that the
    cached entries the test relies on are the ones every run sees."""
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, affinity)
