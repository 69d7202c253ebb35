"""The section registry: every `flexsfc bench --only` name is a module of flexsfc.bench.sections with
a run(ctx) entry point, and the commands the docs give still start."""

import importlib
import subprocess
import sys

import pytest

from flexsfc.bench import harness


@pytest.mark.parametrize("name", harness.SECTION_NAMES)
def test_every_section_is_a_module_with_a_run_entry_point(name: str) -> None:
    module = importlib.import_module(f"flexsfc.bench.sections.{name}")
    assert callable(module.run)


@pytest.mark.parametrize(
    "module", ["flexsfc.bench.cni_latency", "flexsfc.bench.reaction", "flexsfc.bench.dataplane_micro"]
)
def test_documented_module_commands_still_start(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"python -m {module}" in done.stdout
