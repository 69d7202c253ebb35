"""Fixtures of the operator tests: the Kubernetes API emulator (KMock-based; NOT kube-apiserver)."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # kube_emulator, shared with tests/kernel/operator

from kube_emulator import (  # noqa: F401  (registers the `kube` and `kube_api` fixtures)
    EmulatorThread,
    kube_api_fixture,
    kube_fixture,
)

from flexsfc.operator import controller_handlers
from flexsfc.operator.kube import KubeTarget
from flexsfc.operator.runner import running_in_thread


@pytest.fixture
def controller(kube: EmulatorThread) -> Iterator[None]:
    """The real Kopf chain controller against the emulator, running while the test does."""
    registry, _ = controller_handlers.build_registry(KubeTarget(kube.url))
    settings = controller_handlers.kopf.OperatorSettings()
    controller_handlers.configure(settings, peering=None, priority=0)
    with running_in_thread(registry, settings):
        yield
