"""Shared fixtures: real network namespaces that are always removed, root gating."""

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, eBPF)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


class NetnsFactory:
    """Creates uniquely named network namespaces (loopback up) and deletes them all at teardown."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.created: list[str] = []

    def __call__(self, label: str = "ns") -> str:
        name = f"{self.prefix}-{label}-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.created.append(name)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        return name

    def cleanup(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        self.created.clear()


@pytest.fixture
def netns_factory(request: pytest.FixtureRequest) -> Iterator[NetnsFactory]:
    factory = NetnsFactory("fxt")
    try:
        yield factory
    finally:
        factory.cleanup()
