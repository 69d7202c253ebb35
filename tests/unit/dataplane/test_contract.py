"""flexsfc/dataplane/maps.py against the compiled eBPF object, as Cilium's alignchecker does it: the
structs, maps and constants of bpf/lib/{consts,structs,maps}.h as the object's BTF describes them, not
as a hand-kept table says. No root needed: the object is only built and read, never loaded.

The BTF is read straight from the ELF file (the format is small and stable), so the check needs clang
and nothing else: no bpftool, which non-root users often do not have on their PATH.
"""

import ctypes
import enum
import inspect
import re
import shutil
import struct
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from flexsfc.dataplane import build, maps

# BTF kinds (include/uapi/linux/btf.h) and the size of what follows each type's 12-byte header.
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_QUALIFIERS = {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}


@dataclass
class BtfType:
    kind: int
    name: str
    size_or_type: int  # a size (INT, STRUCT, UNION, ENUM, DATASEC, FLOAT) or the id of another type
    # STRUCT/UNION: (name, type id, bit offset, bitfield size or 0); ENUM: (name, value);
    # ARRAY: one (element id, length); DATASEC: (var id, offset, size); FUNC_PROTO: (name, type id).
    items: list[tuple] = field(default_factory=list)


class Btf:
    """The types of an object file's .BTF section, by id (0 is void)."""

    def __init__(self, raw: bytes) -> None:
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from(
            "<HBBIIIII", raw
        )
        assert magic == 0xEB9F, "not little-endian BTF"
        strings = raw[hdr_len + str_off :]
        self.types: list[BtfType] = [BtfType(0, "", 0)]
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len

        def name(offset: int) -> str:
            return strings[offset : strings.index(b"\0", offset)].decode()

        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", raw, pos)
            pos += 12
            kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            t = BtfType(kind, name(name_off), size_or_type)
            if kind in (INT, VAR, DECL_TAG):
                pos += 4
            elif kind == ARRAY:
                t.items.append(struct.unpack_from("<III", raw, pos)[::2])  # (element, length)
                pos += 12
            elif kind in (STRUCT, UNION):
                for _ in range(vlen):
                    m_name, m_type, m_offset = struct.unpack_from("<III", raw, pos)
                    # With kind_flag set, the offset's top byte is the member's bitfield size.
                    bits, bitfield = (m_offset & 0xFFFFFF, m_offset >> 24) if kind_flag else (m_offset, 0)
                    t.items.append((name(m_name), m_type, bits, bitfield))
                    pos += 12
            elif kind == ENUM:
                for _ in range(vlen):  # kind_flag: signed values
                    e_name, value = struct.unpack_from("<Ii" if kind_flag else "<II", raw, pos)
                    t.items.append((name(e_name), value))
                    pos += 8
            elif kind == ENUM64:
                for _ in range(vlen):
                    e_name, lo, hi = struct.unpack_from("<III", raw, pos)
                    t.items.append((name(e_name), hi << 32 | lo))
                    pos += 12
            elif kind == FUNC_PROTO:
                for _ in range(vlen):
                    p_name, p_type = struct.unpack_from("<II", raw, pos)
                    t.items.append((name(p_name), p_type))
                    pos += 8
            elif kind == DATASEC:
                for _ in range(vlen):
                    t.items.append(struct.unpack_from("<III", raw, pos))
                    pos += 12
            self.types.append(t)

    @classmethod
    def of_object(cls, path: Path) -> "Btf":
        return cls(_elf_section(path.read_bytes(), ".BTF"))

    def resolve(self, type_id: int) -> BtfType:
        """The type itself, through typedefs and qualifiers."""
        t = self.types[type_id]
        while t.kind in _QUALIFIERS:
            t = self.types[t.size_or_type]
        return t

    def sizeof(self, type_id: int) -> int:
        t = self.resolve(type_id)
        if t.kind == ARRAY:
            element, length = t.items[0]
            return length * self.sizeof(element)
        return 8 if t.kind == PTR else t.size_or_type

    def named(self, kind: int, name: str) -> BtfType:
        found = [t for t in self.types if t.kind == kind and t.name == name]
        assert len(found) == 1, f"{len(found)} BTF types of kind {kind} named {name!r}"
        return found[0]

    def enumerators(self, prefix: str) -> dict[str, int]:
        """Every enumerator of the enums whose name starts with `prefix`."""
        return {
            name: value
            for t in self.types
            if t.kind in (ENUM, ENUM64) and t.name.startswith(prefix)
            for name, value in t.items
        }

    def map_definitions(self) -> dict[str, dict[str, int]]:
        """The BTF-defined maps: name -> {field: type id of `key`/`value`, or the number of `type`,
        `max_entries`, `map_flags`}, decoded as bpf_helpers.h's __type and __uint encode them."""
        section = self.named(DATASEC, ".maps")
        result = {}
        for var_id, _offset, _size in section.items:
            var = self.types[var_id]
            definition: dict[str, int] = {}
            for f_name, f_type, *_ in self.resolve(var.size_or_type).items:
                target = self.types[f_type].size_or_type  # every field is a pointer
                if f_name in ("key", "value"):
                    definition[f_name] = target  # __type(key, T): T *key
                else:
                    definition[f_name] = self.types[target].items[0][1]  # __uint(n, v): int (*n)[v]
            result[var.name] = definition
        return result


def _elf_section(elf: bytes, wanted: str) -> bytes:
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and elf[5] == 1, "not a little-endian ELF64 file"
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def header(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + index * shentsize
        )
        return name, offset, size

    _, names_at, _ = header(shstrndx)
    for index in range(shnum):
        name, offset, size = header(index)
        if elf[names_at + name : elf.index(b"\0", names_at + name)].decode() == wanted:
            return elf[offset : offset + size]
    raise AssertionError(f"no {wanted} section: built without -g?")


@cache
def _btf_of(path: Path, mtime_ns: int) -> Btf:
    return Btf.of_object(path)


def btf_of_built_object() -> Btf:
    """The BTF of the object the loader would load (built first when stale); skips without clang."""
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed: the contract is checked against the object it compiles")
    path = build.ensure_built()
    return _btf_of(path, path.stat().st_mtime_ns)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _mirrored_structs() -> list[type[ctypes.Structure]]:
    return [
        cls
        for _, cls in inspect.getmembers(maps, inspect.isclass)
        if issubclass(cls, ctypes.Structure) and cls.__module__ == maps.__name__
    ]


def _differences(btf: Btf, mirror: type, type_id: int, where: str) -> list[str]:
    """How the ctypes type `mirror` differs from BTF type `type_id`: sizes everywhere, and for structs
    the field names in order and each field's offset, recursively. A byte array may mirror a word
    array of the same size (addresses are handled as bytes in Python)."""
    t = btf.resolve(type_id)
    size, expected = ctypes.sizeof(mirror), btf.sizeof(type_id)
    if size != expected:
        return [f"{where}: {size} bytes, the program's {t.name or 'type'} has {expected}"]
    if issubclass(mirror, ctypes.Structure):
        if t.kind != STRUCT:
            return [f"{where}: a struct, the program's is BTF kind {t.kind}"]
        names = [name for name, *_ in mirror._fields_]
        c_names = [name for name, *_ in t.items]
        if names != c_names:
            return [f"{where}: fields {names}, the program's struct {t.name} has {c_names}"]
        problems = []
        for (name, member_type, bits, bitfield), (_, member_mirror, *_) in zip(
            t.items, mirror._fields_, strict=True
        ):
            offset = getattr(mirror, name).offset
            if bits != offset * 8 or bitfield:
                problems.append(f"{where}.{name}: at byte {offset}, the program's at bit {bits}")
                continue
            problems += _differences(btf, member_mirror, member_type, f"{where}.{name}")
        return problems
    if issubclass(mirror, ctypes.Array) and issubclass(mirror._type_, ctypes.Structure):
        element, length = t.items[0] if t.kind == ARRAY else (0, 0)
        if length != mirror._length_:
            return [f"{where}: {mirror._length_} elements, the program's has {length}"]
        return _differences(btf, mirror._type_, element, f"{where}[]")
    return []


def test_every_ctypes_struct_is_the_programs_struct_of_that_name() -> None:
    btf = btf_of_built_object()
    mirrored = _mirrored_structs()
    assert len(mirrored) >= 13  # the lookup found the mirrors at all
    problems = []
    for mirror in mirrored:
        name = _snake(mirror.__name__)
        candidates = [i for i, t in enumerate(btf.types) if t.kind == STRUCT and t.name == name]
        if len(candidates) != 1:
            problems.append(f"maps.{mirror.__name__}: {len(candidates)} structs named {name} in the object")
            continue
        problems += _differences(btf, mirror, candidates[0], f"maps.{mirror.__name__}")
    assert problems == []


def test_every_map_is_mirrored_with_its_key_value_and_capacity() -> None:
    btf = btf_of_built_object()
    defined = btf.map_definitions()
    assert sorted(defined) == sorted(maps.MAP_NAMES)
    problems = []
    for name in maps.RING_BUFFERS:  # no key or value: a size in bytes, and the type
        assert defined[name]["type"] == 27 and "key" not in defined[name], name  # BPF_MAP_TYPE_RINGBUF
    for name, (key, value) in maps.MAP_LAYOUTS.items():
        problems += _differences(btf, key, defined[name]["key"], f"MAP_LAYOUTS[{name!r}] key")
        problems += _differences(btf, value, defined[name]["value"], f"MAP_LAYOUTS[{name!r}] value")
    # One CPU: the [cpu][entry] arrays are then loaded with exactly the object's max_entries.
    for name, capacity in maps.map_capacities(1).items():
        if defined[name]["max_entries"] != capacity:
            problems.append(f"{name}: capacity {capacity}, the object's {defined[name]['max_entries']}")
    assert problems == []
    assert sorted([*maps.MAP_LAYOUTS, *maps.RING_BUFFERS]) == sorted(maps.MAP_NAMES)


def test_the_program_has_the_mirrored_name() -> None:
    btf = btf_of_built_object()
    assert btf.named(FUNC, maps.PROGRAM_NAME).size_or_type  # a function with a prototype


def test_every_shared_constant_is_the_programs() -> None:
    """Both ways: every int constant of maps.py (and the sides, drop reasons and events) is an
    enumerator of the program's xc_* enums with the same value, and every such enumerator is in
    maps.py. The *_MAX enumerators, the sizes of the drops and events maps, are the enums' lengths."""

    def members(prefix: str, cls: type[enum.IntEnum]) -> dict[str, int]:
        return {f"{prefix}_{m.name}": m.value for m in cls} | {f"{prefix}_MAX": len(cls)}

    mirrored = {name: value for name, value in vars(maps).items() if name.isupper() and type(value) is int}
    mirrored |= {f"SIDE_{side}": index for side, index in maps.SIDE_INDEX.items()}
    mirrored |= members("DROP", maps.DropReason) | members("EV", maps.Event)
    mirrored |= {f"FLOW_EV_{m.name}": m.value for m in maps.FlowEventKind}
    mirrored |= {f"MOVE_{m.name}": m.value for m in maps.MoveReason}
    assert mirrored == btf_of_built_object().enumerators("xc_")
