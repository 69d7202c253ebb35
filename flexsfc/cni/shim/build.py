"""Compile the node shim (``flexsfc-cni.c``) into a static executable, again whenever it changed.

`python -m flexsfc.cni.shim.build` (run by scripts/setup.sh after the eBPF build) and the tests call
:func:`ensure_built`. The executable is linked statically (no program interpreter, no shared
libraries: it runs on any Linux node, whatever its libc, and in an empty chroot): with ``musl-gcc``
(Debian's musl-tools; ~40 kB) when installed, else ``gcc`` or ``clang`` with ``-static`` against
glibc (~700 kB). It lives beside the source, or in ~/.cache/flexsfc when the package directory is
read-only; like flexsfc/dataplane/build.py, a stamp file beside it holds the digest of the source,
the compiler and the flags, and the source being newer than the executable also means "rebuild".
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).parent / "flexsfc-cni.c"
EXECUTABLE_NAME = "flexsfc-cni"
FLAGS = ["-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror", "-fstack-protector-strong"]
# Preferred first: musl makes a ~40 kB executable, a static glibc one is ~700 kB (and glibc warns
# about name-service functions, which the shim does not use).
COMPILERS = ("musl-gcc", "gcc", "clang")
STAMP_SUFFIX = ".stamp"


class BuildError(RuntimeError):
    pass


def executable_path(source: Path | None = None) -> Path:
    source = source or SOURCE
    if os.access(source.parent, os.W_OK):
        return source.with_name(EXECUTABLE_NAME)
    return Path.home() / ".cache" / "flexsfc" / EXECUTABLE_NAME


def find_compiler() -> str:
    for name in COMPILERS:
        found = shutil.which(name)
        if found is not None:
            return found
    raise BuildError("no C compiler found: install musl-tools (apt-get install musl-tools) or gcc")


def _digest(source: Path, compiler: str) -> str:
    digest = hashlib.sha256()
    for part in (compiler, *FLAGS):
        digest.update(part.encode() + b"\0")
    digest.update(source.read_bytes())
    return digest.hexdigest()


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + STAMP_SUFFIX)


def _up_to_date(target: Path, source: Path, digest: str) -> bool:
    try:
        built = target.stat().st_mtime_ns
        recorded = _stamp(target).read_text().strip()
    except FileNotFoundError:
        return False
    return recorded == digest and source.stat().st_mtime_ns <= built


def _write_atomically(target: Path, data: str) -> None:
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.write_text(data)
    os.replace(tmp, target)


def ensure_built(force: bool = False, source: Path | None = None) -> Path:
    """Path of the shim compiled from the current source (compiles when missing or stale)."""
    source = source or SOURCE
    target = executable_path(source)
    compiler = find_compiler()
    digest = _digest(source, compiler)  # before compiling: an edit meanwhile leaves a stale stamp
    if not force and _up_to_date(target, source, digest):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        proc = subprocess.run(
            [compiler, *FLAGS, str(source), "-o", str(tmp)], capture_output=True, text=True, timeout=120
        )
        if proc.returncode != 0:
            raise BuildError(f"{compiler} failed on {source}:\n{proc.stderr}")
        os.replace(tmp, target)  # a concurrent caller never runs a half-written executable
    finally:
        tmp.unlink(missing_ok=True)
    _write_atomically(_stamp(target), digest + "\n")
    return target


def main() -> int:
    path = ensure_built(force="--force" in sys.argv[1:])
    print(f"CNI node shim: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
