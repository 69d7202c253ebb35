"""The loader's build step (on a scratch copy of bpf/): clang runs when the object is missing, when an
input (the entry file or any header) is newer than it, or when the inputs' contents or the flags differ
from those recorded in its stamp, and only then."""

import os
import shutil
import time
from pathlib import Path

import pytest

from flexsfc.dataplane import build

pytestmark = pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")


@pytest.fixture
def scratch_source(tmp_path, monkeypatch) -> Path:
    tree = tmp_path / "bpf"
    shutil.copytree(build.SOURCE.parent, tree, ignore=shutil.ignore_patterns("*.o", "*.stamp", ".*"))
    source = tree / build.SOURCE.name
    monkeypatch.setattr(build, "SOURCE", source)
    return source


def _header(source: Path) -> Path:
    return source.parent / "lib" / "consts.h"


def _push_mtime(path: Path, seconds: float) -> None:
    at = time.time() + seconds
    os.utime(path, (at, at))


def test_object_is_rebuilt_only_when_the_source_is_newer(scratch_source) -> None:
    obj = build.ensure_built()
    assert obj.parent == scratch_source.parent and obj.stat().st_size > 0
    built_at = obj.stat().st_mtime_ns
    assert build.ensure_built().stat().st_mtime_ns == built_at  # up to date: no clang run
    later = time.time() + 5
    os.utime(scratch_source, (later, later))
    assert build.ensure_built().stat().st_mtime_ns != built_at


def test_a_touched_header_triggers_a_rebuild(scratch_source) -> None:
    built_at = build.ensure_built().stat().st_mtime_ns
    _push_mtime(_header(scratch_source), 5)
    assert build.ensure_built().stat().st_mtime_ns != built_at


def test_an_edited_header_triggers_a_rebuild_even_with_an_older_mtime(scratch_source) -> None:
    """What the stamp adds to make's rule: a header whose mtime went back (restored from a copy, `cp -p`)
    still counts, and the new object holds what the new header says."""
    obj = build.ensure_built()
    header = _header(scratch_source)
    header.write_text(header.read_text().replace("MAX_NEIGHBOURS = 8192,", "MAX_NEIGHBOURS = 4096,"))
    _push_mtime(header, -3600)
    before = obj.read_bytes()
    build.ensure_built()
    assert obj.read_bytes() != before
    assert build.ensure_built().read_bytes() == obj.read_bytes()  # and now up to date again


def test_an_added_or_removed_header_triggers_a_rebuild(scratch_source) -> None:
    obj = build.ensure_built()
    spare = scratch_source.parent / "lib" / "spare.h"
    spare.write_text("/* nobody includes this yet */\n")
    _push_mtime(spare, -3600)
    built_at = obj.stat().st_mtime_ns
    assert build.ensure_built().stat().st_mtime_ns != built_at
    built_at = obj.stat().st_mtime_ns
    spare.unlink()
    assert build.ensure_built().stat().st_mtime_ns != built_at


def test_changed_flags_trigger_a_rebuild(scratch_source, monkeypatch) -> None:
    built_at = build.ensure_built().stat().st_mtime_ns
    monkeypatch.setattr(build, "CFLAGS", [*build.CFLAGS, "-DXC_UNUSED_FLAG"])
    assert build.ensure_built().stat().st_mtime_ns != built_at


def test_a_missing_stamp_triggers_a_rebuild(scratch_source) -> None:
    obj = build.ensure_built()
    built_at = obj.stat().st_mtime_ns
    build.stamp_path(obj).unlink()
    assert build.ensure_built().stat().st_mtime_ns != built_at
    assert build.stamp_path(obj).exists()


def test_compile_errors_are_reported_with_the_source(scratch_source) -> None:
    scratch_source.write_text("this is not C\n")
    with pytest.raises(build.BuildError, match="clang failed on"):
        build.ensure_built(force=True)
    assert not build.object_path().exists()
    assert not build.stamp_path(build.object_path()).exists()
    assert [p.name for p in scratch_source.parent.iterdir() if p.name.startswith(".")] == []  # no temp left
