"""End-to-end fixtures: a local runtime with its own state dir, pin dir and namespace prefix."""

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_local import LocalRuntime, leftovers

from flexsfc.local import control
from flexsfc.local.config import RuntimeConfig


@pytest.fixture
def local_runtime(tmp_path: Path) -> Iterator[LocalRuntime]:
    tag = uuid.uuid4().hex[:6]
    config = RuntimeConfig(
        state_dir=str(tmp_path / "runtime"),
        pin_dir=f"/sys/fs/bpf/flexsfc/e2e-{tag}",
        netns_prefix=f"fxe{tag[:4]}",
    )
    runtime = LocalRuntime(config)
    try:
        yield runtime
    finally:
        state = runtime.state()
        try:
            control.down(config)
        finally:
            if leftovers(config, state):
                control.cleanup_from_state(config, state)
            for name in leftovers(config, {}):
                if name.startswith("netns "):
                    subprocess.run(["ip", "netns", "del", name.split()[1]], capture_output=True)
            shutil.rmtree(config.pin_dir, ignore_errors=True)
