"""Fixtures of the CNI plugin tests (helpers live in cni_harness, imported by the test modules)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from cni_harness import CniRunner


@pytest.fixture
def cni(tmp_path: Path) -> Iterator[CniRunner]:
    runner = CniRunner(tmp_path / "cni-state")
    try:
        yield runner
    finally:
        runner.cleanup()
