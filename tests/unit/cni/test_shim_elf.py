"""The node shim is a static executable: no program interpreter, no dynamic section, well under 1 MB.

The ELF headers are read with struct (ELF64 and ELF32, either byte order): PT_INTERP (a program
interpreter, i.e. a dynamic loader) and PT_DYNAMIC (shared libraries to load) must both be absent
from the program headers, and no section may be of type SHT_DYNAMIC.
"""

import shutil
import struct
from pathlib import Path

import pytest

from flexsfc.cni.shim import build

PT_DYNAMIC = 2
PT_INTERP = 3
SHT_DYNAMIC = 6
ET_EXEC = 2
MAX_SIZE = 1 << 20


def _shim() -> Path:
    if not any(shutil.which(name) for name in build.COMPILERS):
        pytest.skip("no C compiler (scripts/setup.sh installs musl-tools)")
    return build.ensure_built()


def _headers(data: bytes) -> tuple[int, list[int], list[int]]:
    """(e_type, program header types, section header types)."""
    assert data[:4] == b"\x7fELF", "not an ELF file"
    wide = data[4] == 2  # EI_CLASS: 1 = 32-bit, 2 = 64-bit
    order = "<" if data[5] == 1 else ">"  # EI_DATA
    if wide:
        e_type, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = struct.unpack_from(
            order + "HHIQQQIHHHHHH", data, 16
        )
    else:
        e_type, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = struct.unpack_from(
            order + "HHIIIIIHHHHHH", data, 16
        )
    program = [struct.unpack_from(order + "I", data, phoff + i * phentsize)[0] for i in range(phnum)]
    sections = [struct.unpack_from(order + "I", data, shoff + i * shentsize + 4)[0] for i in range(shnum)]
    return e_type, program, sections


def test_shim_is_static_and_small() -> None:
    path = _shim()
    data = path.read_bytes()
    e_type, program, sections = _headers(data)
    assert e_type == ET_EXEC, f"{path}: e_type {e_type}, expected a (non-PIE) executable"
    assert PT_INTERP not in program, f"{path} has a program interpreter"
    assert PT_DYNAMIC not in program, f"{path} has a dynamic segment"
    assert SHT_DYNAMIC not in sections, f"{path} has a .dynamic section"
    assert program, "no program headers at all"
    assert len(data) < MAX_SIZE, f"{path} is {len(data)} bytes"


def test_header_reader_sees_a_dynamic_executable() -> None:
    """The check is not vacuous: the Python interpreter running this test is dynamically linked."""
    import sys

    _, program, _ = _headers(Path(sys.executable).resolve().read_bytes())
    assert PT_INTERP in program and PT_DYNAMIC in program


def test_rebuilt_only_when_the_source_changes(tmp_path: Path) -> None:
    if not any(shutil.which(name) for name in build.COMPILERS):
        pytest.skip("no C compiler")
    source = tmp_path / "flexsfc-cni.c"
    source.write_bytes(build.SOURCE.read_bytes())
    first = build.ensure_built(source=source)
    built = first.stat().st_mtime_ns
    assert build.ensure_built(source=source).stat().st_mtime_ns == built  # up to date: untouched
    source.write_bytes(build.SOURCE.read_bytes() + b"\n/* changed */\n")
    assert build.ensure_built(source=source).stat().st_mtime_ns != built


def test_shim_constants_match_the_python_side() -> None:
    """VERSION is answered by the shim alone; its defaults are the agent's (flexsfc.cni.dispatch)."""
    import json
    import re

    from flexsfc.agent import cni_server
    from flexsfc.cni import config

    source = build.SOURCE.read_text()

    def define(name: str) -> str:
        match = re.search(rf"^#define {name} (.+?)(?:\s*/\*.*)?$", source, re.MULTILINE)
        assert match, name
        return match.group(1).strip()

    supported = json.loads(json.loads(define("SUPPORTED")))  # a C string holding a JSON list
    assert supported == list(config.SUPPORTED_VERSIONS)
    assert define("DEFAULT_SOCKET") == f'"{config.DEFAULT_SOCKET}"'
    assert define("DEFAULT_QUEUE") == f'"{config.DEFAULT_DELETE_QUEUE}"'
    assert define("DEFAULT_NODE_CONF") == f'"{config.DEFAULT_NODE_CONFIG}"'
    assert define("MAX_STDIN") == f"(1u << {cni_server.MAX_STDIN.bit_length() - 1})"
    assert define("MAX_ENV") == str(cni_server.MAX_ENV)
    assert define("MAX_ENV_ENTRY") == f"({cni_server.MAX_ENV_ENTRY >> 10}u << 10)"
