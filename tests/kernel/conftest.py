"""Fixtures of the kernel tests: a private "host" network namespace holding the host-side veths, and a
pin directory under /sys/fs/bpf/flexsfc nothing else uses, both always removed.

The test body runs with its thread switched into the host namespace (TC attach and test_run resolve
ifindexes there), so nothing touches the machine's real host namespace. The namespaces, veths and
data planes come from flexsfc.testing.netlab, which the benchmarks build theirs with too. Each
directory's `dataplane` fixture pins its Dataplane in `pin_dir`.
"""

from collections.abc import Iterator

import pytest

from flexsfc.testing.netlab import Host, remove_pin_dir, unique_pin_dir
from flexsfc.util.netns import in_netns


@pytest.fixture
def host(netns_factory) -> Iterator[Host]:  # type: ignore[no-untyped-def]
    name = netns_factory("dphost")
    with in_netns(name):
        yield Host(name)


@pytest.fixture
def pin_dir() -> Iterator[str]:
    path = unique_pin_dir("test")
    try:
        yield path
    finally:
        remove_pin_dir(path)
