"""Packaging: extras keep a plain install lean, the CLI names a missing extra, and a wheel carries the
prebuilt eBPF object, native helpers and shim, which an installed copy uses without any compiler."""

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from flexsfc import cli

REPO = Path(__file__).parents[3]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {
        r.split("[")[0].split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip().lower()
        for r in requirements
    }


def test_core_dependencies_are_lean_and_extras_cover_the_rest() -> None:
    project = PYPROJECT["project"]
    core = _names(project["dependencies"])
    extras = project["optional-dependencies"]
    assert "numpy" in core  # the data plane's port slots and Maglev tables
    assert not core & {"kopf", "kubernetes", "matplotlib", "jsonschema"}
    assert {"kopf", "kubernetes"} <= _names(extras["kube"])
    assert "matplotlib" in _names(extras["bench"])
    # The README's set-up installs `.[dev]`: everything.
    assert "flexsfc[kube,bench]" in extras["dev"] or "flexsfc[bench,kube]" in extras["dev"]
    # Every module the CLI maps to an extra is really in that extra.
    for module, extra in cli.EXTRAS.items():
        assert module in _names(extras[extra]), (module, extra)


def test_py_typed_is_shipped() -> None:
    assert (REPO / "flexsfc" / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["flexsfc"]


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command()
    def needs_kopf() -> None:
        raise ModuleNotFoundError("No module named 'kopf'", name="kopf")

    @click.command()
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'nonexistent_thing'", name="nonexistent_thing")

    module = type(sys)("flexsfc_test_extras_commands")
    module.needs_kopf, module.broken = needs_kopf, broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "needs-kopf", f"{module.__name__}:needs_kopf")
    monkeypatch.setitem(cli.COMMANDS, "broken", f"{module.__name__}:broken")
    result = CliRunner().invoke(cli.main, ["needs-kopf"])
    assert result.exit_code == 1
    assert (
        "flexsfc[kube]" in result.output
        and "needs-kopf" in result.output
        and "Traceback" not in result.output
    )
    # A module of no extra is a bug, not a missing extra: it is not dressed up.
    result = CliRunner().invoke(cli.main, ["broken"])
    assert isinstance(result.exception, ModuleNotFoundError)


def test_a_command_module_that_fails_to_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = cli.importlib.import_module

    def fake_import(name: str) -> object:
        if name == "flexsfc.cli.operator":
            raise ModuleNotFoundError("No module named 'kopf'", name="kopf")
        return real_import(name)

    monkeypatch.setattr(cli.importlib, "import_module", fake_import)
    result = CliRunner().invoke(cli.main, ["operator", "agent"])
    assert result.exit_code == 1 and "pip install 'flexsfc[kube]'" in result.output
    listing = CliRunner().invoke(cli.main, ["--help"])
    assert listing.exit_code == 0 and "operator" in listing.output


@pytest.mark.slow
@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("clang", "gcc")), reason="the wheel build compiles (clang, gcc)"
)
def test_wheel_carries_prebuilt_objects_usable_without_a_compiler(tmp_path: Path) -> None:
    # Built from a clean copy of what the wheel is made of (not the work tree: no stale build/ and
    # no local compiled outputs can slip in).
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "flexsfc",
        source / "flexsfc",
        ignore=shutil.ignore_patterns(
            "__pycache__", "*.so", "*.o", "*.stamp", "*.packaged", "flexsfc-cni", "pingpong"
        ),
    )
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "-w", str(wheels), "--no-deps", "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("flexsfc-*.whl")
    assert wheel.name.endswith("-py3-none-linux_x86_64.whl") or "-py3-none-linux_" in wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    for member in (
        "flexsfc/dataplane/bpf/xconnect.bpf.o",
        "flexsfc/dataplane/bpf/xconnect.bpf.o.packaged",
        "flexsfc/dataplane/native/slot_state.so",
        "flexsfc/cni/shim/flexsfc-cni",
        "flexsfc/py.typed",
    ):
        assert member in names, member
    # A fresh environment with only that wheel, and a PATH with no compiler at all.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "-q",
            "--no-deps",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    probe = (
        "import shutil\n"
        "assert not any(shutil.which(c) for c in ('clang', 'gcc', 'cc', 'musl-gcc'))\n"
        "from flexsfc.dataplane import build\n"
        "for path in (build.ensure_built(), build.ensure_slot_state_lib(), build.ensure_maglev_lib(),\n"
        "             build.ensure_session_count_lib()):\n"
        "    assert 'site-packages' in str(path) and path.is_file(), path\n"
        "print(build.ensure_built())\n"
    )
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        env={"PATH": str(empty_bin), "HOME": str(tmp_path / "home")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("xconnect.bpf.o")
    assert not (tmp_path / "home").exists()  # nothing compiled into ~/.cache either
    assert os.path.getsize(done.stdout.strip()) > 0
