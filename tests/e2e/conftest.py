"""End-to-end fixtures: a local runtime with its own state dir, pin dir and namespace prefix."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_local import LocalRuntime, private_runtime


@pytest.fixture
def local_runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    with private_runtime(tmp_path) as runtime:
        yield runtime
