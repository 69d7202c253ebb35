"""Compile the eBPF object with clang, only when the source is newer than the object.

`python -m flexsfc.dataplane.build` (run by scripts/setup.sh) and the loader both call
:func:`ensure_built`. The object lives beside the source, or in ~/.cache/flexsfc when the package
directory is read-only.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SOURCE = Path(__file__).parent / "bpf" / "xconnect.bpf.c"
OBJECT_NAME = "xconnect.bpf.o"
# Native helper for the Maglev fill loop (maglev.py falls back to Python without it).
MAGLEV_SOURCE = Path(__file__).parent / "bpf" / "maglev_fill.c"
MAGLEV_LIB_NAME = "maglev_fill.so"
# Native compare-and-swap of port state bytes (slot_state.py); required by the facade.
SLOT_STATE_SOURCE = Path(__file__).parent / "bpf" / "slot_state.c"
SLOT_STATE_LIB_NAME = "slot_state.so"
NATIVE_FLAGS = ["-O2", "-Wall", "-Werror", "-shared", "-fPIC"]
# -g: BTF, without which libbpf refuses BTF-defined maps. The multiarch include dir holds asm/types.h.
CFLAGS = ["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"]


class BuildError(RuntimeError):
    pass


def _multiarch_include() -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    path = Path("/usr/include") / multiarch
    return [f"-I{path}"] if path.is_dir() else []


def _output_path(name: str, beside: Path | None = None) -> Path:
    beside = beside or SOURCE  # looked up at call time: tests point SOURCE at a scratch copy
    if os.access(beside.parent, os.W_OK):
        return beside.with_name(name)
    return Path.home() / ".cache" / "flexsfc" / name


def object_path() -> Path:
    return _output_path(OBJECT_NAME)


def maglev_lib_path() -> Path:
    return _output_path(MAGLEV_LIB_NAME)


def slot_state_lib_path() -> Path:
    return _output_path(SLOT_STATE_LIB_NAME)


def _compile(source: Path, target: Path, flags: list[str], force: bool) -> Path:
    if not force and target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    clang = shutil.which("clang")
    if clang is None:
        raise BuildError("clang not found: install it (apt-get install clang) or run scripts/setup.sh")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    proc = subprocess.run([clang, *flags, str(source), "-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise BuildError(f"clang failed on {source}:\n{proc.stderr}")
    os.replace(tmp, target)  # atomic: a concurrent loader never sees a half-written file
    return target


def ensure_built(force: bool = False) -> Path:
    """Path of an eBPF object compiled from the current source (compiles when missing or stale)."""
    return _compile(SOURCE, object_path(), [*CFLAGS, *_multiarch_include(), "-c"], force)


def ensure_maglev_lib(force: bool = False) -> Path:
    """Path of the native Maglev fill helper (compiles when missing or stale)."""
    return _compile(MAGLEV_SOURCE, maglev_lib_path(), NATIVE_FLAGS, force)


def ensure_slot_state_lib(force: bool = False) -> Path:
    """Path of the native state-byte helper (compiles when missing or stale)."""
    return _compile(SLOT_STATE_SOURCE, slot_state_lib_path(), NATIVE_FLAGS, force)


def ensure_program(source: Path, force: bool = False) -> Path:
    """Path of a native executable compiled from the C file `source` (when missing or stale), beside
    it: the benchmarks' own tools."""
    return _compile(source, _output_path(source.stem, beside=source), ["-O2", "-Wall", "-Werror"], force)


def main() -> int:
    force = "--force" in sys.argv[1:]
    print(f"eBPF object: {ensure_built(force=force)}")
    print(f"Maglev helper: {ensure_maglev_lib(force=force)}")
    print(f"Port state helper: {ensure_slot_state_lib(force=force)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
