"""Fixtures of the operator tests: the Kubernetes API emulator (KMock-based; NOT kube-apiserver)."""

import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # kube_emulator, shared with tests/kernel/operator

from kube_emulator import EmulatorThread, kube_fixture  # noqa: F401  (registers the `kube` fixture)


@pytest.fixture
def kube_api(kube: EmulatorThread) -> Iterator[kubernetes.client.ApiClient]:
    configuration = kubernetes.client.Configuration()
    configuration.host = kube.url
    client = kubernetes.client.ApiClient(configuration)
    try:
        yield client
    finally:
        client.close()
