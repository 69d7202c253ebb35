"""Compile the eBPF object and the native helpers with clang, again whenever one of their inputs changed.

`python -m flexsfc.dataplane.build` (run by scripts/setup.sh) and the loader both call
:func:`ensure_built`. An output lives beside its source, or in ~/.cache/flexsfc when the package
directory is read-only.

An output is up to date when the stamp file beside it (`<output>.stamp`) holds the digest of its
inputs' contents and of the compiler flags, and no input is newer than it. The inputs of the eBPF
object are the entry file and every header under bpf/, those of a native helper its one C file. The
digest catches what modification times miss (a header replaced by an older copy, a header removed,
different flags); the time rule keeps `touch` meaning "rebuild", as with make.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

SOURCE = Path(__file__).parent / "bpf" / "xconnect.bpf.c"
OBJECT_NAME = "xconnect.bpf.o"
# User-space C, called through ctypes: kept apart from the eBPF sources, which are another target.
NATIVE_DIR = Path(__file__).parent / "native"
# Native helper for the Maglev fill loop (maglev.py falls back to Python without it).
MAGLEV_SOURCE = NATIVE_DIR / "maglev_fill.c"
MAGLEV_LIB_NAME = "maglev_fill.so"
# Native compare-and-swap of port state bytes (ports/states.py); required by the facade.
SLOT_STATE_SOURCE = NATIVE_DIR / "slot_state.c"
SLOT_STATE_LIB_NAME = "slot_state.so"
# Session counts per cross-connection in one GIL-free call (stats.py, the metrics scrape).
SESSION_COUNT_SOURCE = NATIVE_DIR / "session_count.c"
SESSION_COUNT_LIB_NAME = "session_count.so"
NATIVE_FLAGS = ["-O2", "-Wall", "-Werror", "-shared", "-fPIC"]
# -g: BTF, without which libbpf refuses BTF-defined maps. The multiarch include dir holds asm/types.h.
CFLAGS = ["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"]
STAMP_SUFFIX = ".stamp"
# Beside an output a wheel ships (setup.py, build_for_package): the digest of the sources it was built
# from. An installed package uses such an output as long as its sources are unchanged, so it needs
# no compiler at run time (the eBPF object is architecture-independent; the wheel is per platform
# for the native helpers).
PACKAGED_SUFFIX = ".packaged"


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
    return _output_path(MAGLEV_LIB_NAME, beside=MAGLEV_SOURCE)


def slot_state_lib_path() -> Path:
    return _output_path(SLOT_STATE_LIB_NAME, beside=SLOT_STATE_SOURCE)


def stamp_path(output: Path) -> Path:
    """The file recording the digest `output` was built from."""
    return output.with_name(output.name + STAMP_SUFFIX)


def bpf_inputs() -> list[Path]:
    """Everything the eBPF object is built from: the entry file first, then every header in its
    directory tree (all of them, not only those included now: cheaper than asking clang, and a
    header nobody includes costs at most one needless rebuild)."""
    return [SOURCE, *sorted(SOURCE.parent.rglob("*.h"))]


def _digest(inputs: list[Path], flags: list[str]) -> str:
    """Digest of the inputs' contents and relative names (so that a renamed or removed header counts)
    and of the flags. Lengths are hashed before contents, so no two input sets can run together."""
    root = inputs[0].parent
    digest = hashlib.sha256()
    for flag in flags:
        digest.update(flag.encode() + b"\0")
    for path in inputs:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root)}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _up_to_date(target: Path, inputs: list[Path], digest: str) -> bool:
    try:
        built = target.stat().st_mtime_ns
        recorded = stamp_path(target).read_text().strip()
    except FileNotFoundError:
        return False
    return recorded == digest and all(path.stat().st_mtime_ns <= built for path in inputs)


def _replace_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Writes through `write(tmp)` a temporary beside `target`, then renames it over `target`: a
    concurrent reader never sees a half-written file."""
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def packaged_output(inputs: list[Path], name: str) -> Path | None:
    """The output `name` shipped beside inputs[0] by the wheel, if built from exactly these inputs."""
    candidate = inputs[0].with_name(name)
    try:
        recorded = candidate.with_name(name + PACKAGED_SUFFIX).read_text().strip()
    except OSError:
        return None
    return candidate if recorded == _digest(inputs, []) and candidate.is_file() else None


def _compile(inputs: list[Path], target: Path, flags: list[str], force: bool) -> Path:
    """Compiles inputs[0] (the others are what it includes) into `target` unless up to date (or
    shipped prebuilt for these inputs: :func:`packaged_output`)."""
    source = inputs[0]
    packaged = None if force else packaged_output(inputs, target.name)
    if packaged is not None:
        return packaged
    # Taken before clang reads the files: an edit landing during the build leaves a stamp that no
    # longer matches, so the next call builds again.
    digest = _digest(inputs, flags)
    if not force and _up_to_date(target, inputs, digest):
        return target
    clang = shutil.which("clang")
    if clang is None:
        raise BuildError("clang not found: install it (apt-get install clang) or run scripts/setup.sh")
    target.parent.mkdir(parents=True, exist_ok=True)

    def run_clang(tmp: Path) -> None:
        proc = subprocess.run([clang, *flags, str(source), "-o", str(tmp)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"clang failed on {source}:\n{proc.stderr}")

    _replace_atomically(target, run_clang)
    # The stamp goes second: a build interrupted between the two leaves an old or missing stamp, which
    # only means one more build.
    _replace_atomically(stamp_path(target), lambda tmp: tmp.write_text(digest + "\n"))
    return target


def ensure_built(force: bool = False) -> Path:
    """Path of an eBPF object compiled from the current sources (compiles when missing or stale)."""
    return _compile(bpf_inputs(), object_path(), [*CFLAGS, *_multiarch_include(), "-c"], force)


def ensure_maglev_lib(force: bool = False) -> Path:
    """Path of the native Maglev fill helper (compiles when missing or stale)."""
    return _compile([MAGLEV_SOURCE], maglev_lib_path(), NATIVE_FLAGS, force)


def ensure_slot_state_lib(force: bool = False) -> Path:
    """Path of the native state-byte helper (compiles when missing or stale)."""
    return _compile([SLOT_STATE_SOURCE], slot_state_lib_path(), NATIVE_FLAGS, force)


def ensure_session_count_lib(force: bool = False) -> Path:
    """Path of the native session counter (compiles when missing or stale)."""
    return _compile(
        [SESSION_COUNT_SOURCE],
        _output_path(SESSION_COUNT_LIB_NAME, beside=SESSION_COUNT_SOURCE),
        [*NATIVE_FLAGS, *_multiarch_include()],
        force,
    )


def ensure_program(source: Path, force: bool = False) -> Path:
    """Path of a native executable compiled from the C file `source` (when missing or stale), beside
    it: the benchmarks' own tools."""
    return _compile([source], _output_path(source.stem, beside=source), ["-O2", "-Wall", "-Werror"], force)


def _writer(text: str) -> Callable[[Path], object]:
    return lambda tmp: tmp.write_text(text)


def build_for_package() -> list[Path]:
    """Build every output the package needs at run time beside its sources and mark each as shipped
    (the wheel build calls this on its build tree: setup.py). Needs clang."""
    outputs = [
        (bpf_inputs(), ensure_built(force=True)),
        ([MAGLEV_SOURCE], ensure_maglev_lib(force=True)),
        ([SLOT_STATE_SOURCE], ensure_slot_state_lib(force=True)),
        ([SESSION_COUNT_SOURCE], ensure_session_count_lib(force=True)),
    ]
    for inputs, output in outputs:
        if output.parent != inputs[0].parent:
            raise BuildError(f"{output} is not beside its source {inputs[0]}: is the build tree writable?")
        _replace_atomically(
            output.with_name(output.name + PACKAGED_SUFFIX), _writer(_digest(inputs, []) + "\n")
        )
    return [output for _, output in outputs]


def main() -> int:
    force = "--force" in sys.argv[1:]
    print(f"eBPF object: {ensure_built(force=force)}")
    print(f"Maglev helper: {ensure_maglev_lib(force=force)}")
    print(f"Port state helper: {ensure_slot_state_lib(force=force)}")
    print(f"Session counter: {ensure_session_count_lib(force=force)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
