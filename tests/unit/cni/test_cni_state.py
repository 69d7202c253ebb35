"""The record files: durable when written; an unusable one is skipped, reported and removed by every
reader (the plugin's DEL and GC, the agent's reconcile pass), never raised."""

import fcntl
import json
import logging
import os
import threading
from pathlib import Path

import pytest
from cni_records import l2_record

from flexsfc.cni import state
from flexsfc.cni.errors import CniError


def _good_json(container_id: str, ifname: str = "eth1") -> str:
    return l2_record(container_id, ifname).to_json()


BAD_CONTENTS = {
    "empty": "",
    "blank": " \n",
    "garbage": "\x00\x17not json at all",
    "truncated": _good_json("truncated")[:40],
    "a list": "[1, 2]",
    "not a record": '{"hello": "world"}',
    "wrong type": _good_json("wrong type").replace('"hostIfindex": 42', '"hostIfindex": "42"'),
    "ips a string": _good_json("ips a string").replace('"ips": []', '"ips": "10.0.0.1/24"'),
    "another attachment": _good_json("someone-else"),
}


def _write_bad(state_dir: Path) -> dict[str, Path]:
    paths = {}
    for index, (label, content) in enumerate(BAD_CONTENTS.items()):
        path = state_dir / f"bad{index}@eth1.json"
        path.write_text(content)
        paths[label] = path
    return paths


def test_reader_skips_reports_and_removes_unusable_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = l2_record("good")
    state.write_record(str(tmp_path), good)
    paths = _write_bad(tmp_path)
    bad: list[state.BadRecord] = []
    with caplog.at_level(logging.WARNING, logger="flexsfc.cni.state"):
        assert state.load_records(str(tmp_path), bad=bad) == [good]
    assert sorted(b.path for b in bad) == sorted(str(p) for p in paths.values())
    assert all(b.removed for b in bad) and not any(p.exists() for p in paths.values())
    assert "empty file" in {b.path: b.problem for b in bad}[str(paths["empty"])]
    assert "not its file name" in {b.path: b.problem for b in bad}[str(paths["another attachment"])]
    assert len([r for r in caplog.records if "unusable attachment record" in r.getMessage()]) == len(paths)
    # Callers that pass no list (the agent, the local runtime) get the same skip, without an exception.
    (tmp_path / "bad@eth9.json").write_text("")
    assert state.load_records(str(tmp_path)) == [good]
    assert state.record_for("bad", "eth9", str(tmp_path)) is None


def test_record_for_of_an_empty_record_is_none(tmp_path: Path) -> None:
    (tmp_path / "c1@eth1.json").write_text("")
    bad: list[state.BadRecord] = []
    assert state.record_for("c1", "eth1", str(tmp_path), bad=bad) is None
    assert [b.removed for b in bad] == [True] and not (tmp_path / "c1@eth1.json").exists()


def test_a_bad_record_is_not_removed_while_a_cni_call_holds_the_lock(tmp_path: Path) -> None:
    """A lock-free reader (the agent) must not race a writer: it leaves the file to a later pass."""
    (tmp_path / "c1@eth1.json").write_text("{")
    fd = os.open(tmp_path / state.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        bad: list[state.BadRecord] = []
        assert state.load_records(str(tmp_path), bad=bad) == []
        assert [b.removed for b in bad] == [False] and (tmp_path / "c1@eth1.json").exists()
    finally:
        os.close(fd)
    assert state.load_records(str(tmp_path)) == [] and not (tmp_path / "c1@eth1.json").exists()


def test_a_record_replaced_after_it_was_read_is_not_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between reading a bad file and removing it, a writer may rename a good record over it."""
    path = tmp_path / "c1@eth1.json"
    path.write_text("")
    real_discard = state._discard

    def replaced_first(bad_path: str, identity: tuple[int, int] | None) -> bool:
        state.write_record(str(tmp_path), l2_record())
        return real_discard(bad_path, identity)

    monkeypatch.setattr(state, "_discard", replaced_first)
    bad: list[state.BadRecord] = []
    assert state.record_for("c1", "eth1", str(tmp_path), bad=bad) is None
    assert [b.removed for b in bad] == [False]
    assert state.record_for("c1", "eth1", str(tmp_path)) == l2_record()


def test_unreadable_entries_are_reported_but_left_and_links_are_removed(tmp_path: Path) -> None:
    (tmp_path / "dir@eth1.json").mkdir()  # cannot be read: maybe not ours to remove
    target = tmp_path / "elsewhere.txt"
    target.write_text(_good_json("link"))
    (tmp_path / "link@eth1.json").symlink_to(target)  # never written by us: removed, target kept
    bad: list[state.BadRecord] = []
    assert state.load_records(str(tmp_path), bad=bad) == []
    assert {Path(b.path).name: b.removed for b in bad} == {"dir@eth1.json": False, "link@eth1.json": True}
    assert (tmp_path / "dir@eth1.json").is_dir() and target.exists()


def test_write_record_fsyncs_the_file_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    state.write_record(str(tmp_path), l2_record())
    assert len(synced) == 2
    assert synced[0].startswith(str(tmp_path / ".c1@eth1.json.")) and synced[0].endswith(".tmp")
    assert synced[1] == str(tmp_path)  # the rename reaches the disk with the directory
    assert json.loads((tmp_path / "c1@eth1.json").read_text())["containerId"] == "c1"
    synced.clear()
    state.remove_record(str(tmp_path), "c1", "eth1")
    assert synced == [str(tmp_path)]


def _hold_lock_in_a_thread(state_dir: Path) -> tuple[threading.Event, threading.Event, threading.Thread]:
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with state.locked(str(state_dir), 5):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert holding.wait(5)
    return holding, release, thread


def test_the_lock_another_thread_holds_is_not_this_threads(tmp_path: Path) -> None:
    """The agent reads records lock-free in one thread while a served CNI call holds the lock in
    another: the reader must not remove a bad record as if it held the lock itself."""
    _, release, thread = _hold_lock_in_a_thread(tmp_path)
    try:
        (tmp_path / "c1@eth1.json").write_text("{")
        bad: list[state.BadRecord] = []
        assert state.load_records(str(tmp_path), bad=bad) == []
        assert [b.removed for b in bad] == [False] and (tmp_path / "c1@eth1.json").exists()
    finally:
        release.set()
        thread.join(10)
    assert state.load_records(str(tmp_path)) == [] and not (tmp_path / "c1@eth1.json").exists()


def test_a_thread_that_timed_out_does_not_release_the_holders_claim(tmp_path: Path) -> None:
    """A call that gave up waiting (code 11) must not make the holder forget that it holds the lock."""
    holding, release = threading.Event(), threading.Event()
    removed: list[bool] = []

    def holder() -> None:
        with state.locked(str(tmp_path), 5):
            holding.set()
            release.wait(10)
            (tmp_path / "c1@eth1.json").write_text("{")
            bad: list[state.BadRecord] = []
            state.load_records(str(tmp_path), bad=bad)
            removed.extend(b.removed for b in bad)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert holding.wait(5)
        with pytest.raises(CniError) as raised, state.locked(str(tmp_path), 0.05):
            pass
        assert raised.value.code == 11
    finally:
        release.set()
        thread.join(10)
    assert removed == [True] and not (tmp_path / "c1@eth1.json").exists()


def test_a_timed_out_wait_in_the_holding_thread_keeps_its_claim(tmp_path: Path) -> None:
    """Only a successful acquisition drops the claim: a wait that timed out (code 11) never made one."""
    with state.locked(str(tmp_path), 5):
        with pytest.raises(CniError), state.locked(str(tmp_path), 0.05):
            pass  # a second descriptor: flock(2) refuses it even in the holding thread
        (tmp_path / "c1@eth1.json").write_text("{")
        bad: list[state.BadRecord] = []
        assert state.load_records(str(tmp_path), bad=bad) == []
        assert [b.removed for b in bad] == [True]
