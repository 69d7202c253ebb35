"""Where a runtime lives and what it holds: derived pin directory and prefix, locks, claims (no root)."""

import json
import os
from pathlib import Path

import pytest

from flexsfc.local.config import DEFAULT_LOCAL_PIN_DIR, DEFAULT_RUNTIME_DIR, ConfigError, RuntimeConfig
from flexsfc.local.locks import ClaimError, LockBusy, acquire, claim, claimed_by_other, drop_claims


def test_pin_dir_and_prefix_follow_the_state_dir(tmp_path: Path) -> None:
    default = RuntimeConfig.for_dir(DEFAULT_RUNTIME_DIR)
    assert (default.pin_dir, default.netns_prefix) == (DEFAULT_LOCAL_PIN_DIR, "fx")
    a, b = RuntimeConfig.for_dir(str(tmp_path / "a")), RuntimeConfig.for_dir(str(tmp_path / "b"))
    assert a.pin_dir != b.pin_dir and a.netns_prefix != b.netns_prefix
    assert DEFAULT_LOCAL_PIN_DIR not in (a.pin_dir, b.pin_dir)
    assert "fx" not in (a.netns_prefix, b.netns_prefix) and len(a.netns_prefix) <= 8
    # The same directory, however spelled, gets the same names.
    assert RuntimeConfig.for_dir(f"{tmp_path}/x/../a/.").pin_dir == a.pin_dir
    assert a.netns_name("team-a", "gw-0a1b2c") == f"{a.netns_prefix}-team-a.gw-0a1b2c"


def test_a_saved_config_wins_and_explicit_options_cannot_contradict_it(tmp_path: Path) -> None:
    config = RuntimeConfig(str(tmp_path / "rt"), pin_dir="/sys/fs/bpf/flexsfc/mine", netns_prefix="fxm")
    assert config.with_options(None, None) == config
    config.save()
    assert RuntimeConfig.for_dir(config.state_dir) == config
    assert config.with_options("/sys/fs/bpf/flexsfc/mine", "fxm") == config
    with pytest.raises(ConfigError, match="uses pin directory /sys/fs/bpf/flexsfc/mine"):
        RuntimeConfig.for_dir(config.state_dir).with_options("/sys/fs/bpf/flexsfc/other", None)
    fresh = RuntimeConfig.for_dir(str(tmp_path / "new"))
    assert fresh.with_options("/p", "fxp") == RuntimeConfig(fresh.state_dir, "/p", "fxp")


def test_a_lock_excludes_a_second_holder_until_released(tmp_path: Path) -> None:
    path = tmp_path / "d" / "supervisor.lock"
    first = acquire(path)
    first.write({"pid": 4242})
    with pytest.raises(LockBusy) as busy:
        acquire(path)  # a second open file description: flock excludes it, in this process too
    assert busy.value.holder == {"pid": 4242}
    first.release(unlink=True)
    assert not path.exists()
    with acquire(path) as second:
        assert path.exists() and second.fd >= 0


def test_a_lock_on_a_file_unlinked_meanwhile_is_not_taken(tmp_path: Path) -> None:
    path = tmp_path / "start.lock"
    held = acquire(path)
    os.unlink(path)  # `down` removing the state directory under a holder
    with acquire(path, timeout=0) as other:  # the new file, not the unlinked one still held
        assert os.fstat(other.fd).st_ino == os.stat(path).st_ino != os.fstat(held.fd).st_ino
    held.release()


def test_claims_keep_two_runtimes_off_one_pin_dir_or_prefix(tmp_path: Path) -> None:
    claims = str(tmp_path / "claims")
    a = RuntimeConfig(str(tmp_path / "a"), pin_dir="/sys/fs/bpf/flexsfc/x", netns_prefix="fxa")
    held = claim(a, claims)
    assert claimed_by_other(a, claims) == ""
    same_pins = RuntimeConfig(str(tmp_path / "b"), pin_dir=a.pin_dir, netns_prefix="fxb")
    with pytest.raises(
        ClaimError, match=f"pin directory {a.pin_dir} is in use by the runtime in {tmp_path}/a"
    ):
        claim(same_pins, claims)
    assert claimed_by_other(same_pins, claims) == os.path.realpath(a.state_dir)
    same_prefix = RuntimeConfig(str(tmp_path / "c"), pin_dir="/sys/fs/bpf/flexsfc/c", netns_prefix="fxa")
    with pytest.raises(ClaimError, match="namespace prefix 'fxa' is in use"):
        claim(same_prefix, claims)
    # A refused claim leaves no record of its own behind (its free pin directory's claim included).
    assert all(json.loads(p.read_text())["stateDir"].endswith("/a") for p in Path(claims).iterdir())

    # a's supervisor dies (locks released by the kernel) but its state remains: still a's.
    Path(a.state_dir).mkdir()
    a.state_file.write_text("{}")
    for lock in held:
        lock.release()
    with pytest.raises(ClaimError, match="whose supervisor is gone"):
        claim(same_pins, claims)
    for lock in claim(a, claims):  # a's own next supervisor (adoption) takes them back
        lock.release()


def test_claims_are_free_once_the_runtime_is_gone(tmp_path: Path) -> None:
    claims = str(tmp_path / "claims")
    a = RuntimeConfig(str(tmp_path / "a"), pin_dir="/sys/fs/bpf/flexsfc/x", netns_prefix="fxa")
    for lock in claim(a, claims):
        lock.release(unlink=True)  # a clean `down`
    b = RuntimeConfig(str(tmp_path / "b"), pin_dir=a.pin_dir, netns_prefix=a.netns_prefix)
    held = claim(b, claims)
    assert len(held) == 2
    for lock in held:
        lock.release(unlink=True)
    assert os.listdir(claims) == []


def test_a_dead_runtimes_claims_are_dropped_when_it_is_cleaned_up(tmp_path: Path) -> None:
    claims = str(tmp_path / "claims")
    a = RuntimeConfig(str(tmp_path / "a"), pin_dir="/sys/fs/bpf/flexsfc/x", netns_prefix="fxa")
    for lock in claim(a, claims):
        lock.release()  # the supervisor died: its records stay
    assert len(os.listdir(claims)) == 2
    b = RuntimeConfig(str(tmp_path / "b"), pin_dir="/sys/fs/bpf/flexsfc/y", netns_prefix="fxa")
    held = claim(b, claims)  # a is gone (no state file): b takes the prefix
    drop_claims(a, claims)  # `down` of a from its state: only what is still a's goes
    assert sorted(os.listdir(claims)) == sorted(lock.path.name for lock in held)
    for lock in held:
        lock.release(unlink=True)
