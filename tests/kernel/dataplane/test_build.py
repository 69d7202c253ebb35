"""The loader's build step: clang runs only when the source is newer than the object (temp copies)."""

import os
import shutil
import time

import pytest

from flexsfc.dataplane import build


@pytest.fixture
def scratch_source(tmp_path, monkeypatch):
    source = tmp_path / "xconnect.bpf.c"
    shutil.copy(build.SOURCE, source)
    monkeypatch.setattr(build, "SOURCE", source)
    return source


@pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")
def test_object_is_rebuilt_only_when_the_source_is_newer(scratch_source) -> None:
    obj = build.ensure_built()
    assert obj.parent == scratch_source.parent and obj.stat().st_size > 0
    built_at = obj.stat().st_mtime_ns
    assert build.ensure_built().stat().st_mtime_ns == built_at  # up to date: no clang run
    later = time.time() + 5
    os.utime(scratch_source, (later, later))
    assert build.ensure_built().stat().st_mtime_ns != built_at


@pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")
def test_compile_errors_are_reported_with_the_source(scratch_source) -> None:
    scratch_source.write_text("this is not C\n")
    with pytest.raises(build.BuildError, match="clang failed on"):
        build.ensure_built(force=True)
    assert not build.object_path().exists()
