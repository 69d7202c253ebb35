"""The agent's CNI socket without root: wire format, bounds, the DEL queue, the socket's mode, the
node settings the shim and the agent share."""

import json
import os
import shutil
import stat
import struct
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from flexsfc.agent.cni_server import (
    MAX_ENV,
    MAX_STDIN,
    CniServer,
    ProtocolError,
    _bytes_reader,
    call,
    decode_reply,
    decode_request,
    drain_delete_queue,
    encode_reply,
    encode_request,
)
from flexsfc.cni.config import (
    DEFAULT_SOCKET,
    ENV_DELETE_QUEUE,
    ENV_NODE_CONFIG,
    ENV_SOCKET,
    ENV_STATE_DIR,
    read_node_config,
)
from flexsfc.cni.dispatch import handle
from flexsfc.cni.errors import CniError


def test_request_round_trip_carries_only_cni_variables() -> None:
    environ = {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=2=3", "FLEXSFC_CNI_STATE_DIR": "/evil", "PATH": "/x"}
    data = encode_request(environ, b'{"x": "\xc3\xa9"}')
    decoded, stdin = decode_request(_bytes_reader(data))
    assert decoded == {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=2=3"}
    assert stdin == b'{"x": "\xc3\xa9"}'
    assert decode_reply(encode_reply(1, b"out")) == (1, b"out")


@pytest.mark.parametrize(
    "data",
    [
        b"XXXX" + struct.pack(">I", 0),
        b"FXC1" + struct.pack(">I", MAX_ENV + 1),
        b"FXC1" + struct.pack(">I", 1) + struct.pack(">I", 5) + b"PATH=",  # not CNI_*
        b"FXC1" + struct.pack(">I", 0) + struct.pack(">I", MAX_STDIN + 1),
        b"FXC1" + struct.pack(">I", 0) + struct.pack(">I", 10) + b"short",
    ],
)
def test_bad_requests_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_request(_bytes_reader(data))


def _queue(directory: Path, name: str, environ: Mapping[str, str], stdin: bytes = b"{}") -> Path:
    path = directory / name
    path.write_bytes(encode_request(environ, stdin))
    return path


def test_queue_replays_dels_oldest_first_keeps_failures_drops_garbage(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(environ: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        seen.append(environ["CNI_CONTAINERID"])
        return (1, b'{"code": 11}') if environ["CNI_CONTAINERID"] == "fails" else (0, b"")

    _queue(tmp_path, "del-2-1", {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "second"})
    _queue(tmp_path, "del-1-1", {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "first"})
    _queue(tmp_path, "del-3-1", {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "fails"})
    _queue(tmp_path, "del-4-1", {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "not-a-del"})
    (tmp_path / "del-5-1").write_bytes(b"garbage")
    (tmp_path / ".tmp-6-1").write_bytes(b"half written")  # a shim writing right now: left alone
    os.symlink("/etc/passwd", tmp_path / "del-7-1")

    report = drain_delete_queue(str(tmp_path), handler)
    assert seen == ["first", "second", "fails"]
    assert report.applied == ["del-1-1", "del-2-1"]
    assert report.kept == ["del-3-1"]
    assert sorted(report.dropped) == ["del-4-1", "del-5-1", "del-7-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-6-1", "del-3-1"]
    assert drain_delete_queue(str(tmp_path / "absent"), handler).applied == []


def test_a_del_failing_past_the_give_up_age_is_set_aside_once(tmp_path: Path) -> None:
    old = _queue(tmp_path, "del-1-1", {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "stuck"})
    _queue(tmp_path, "del-2-1", {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "recent"})
    day_ago = time.time() - 2 * 3600
    os.utime(old, (day_ago, day_ago))

    def fails(environ: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        return 1, b'{"code": 11}'

    report = drain_delete_queue(str(tmp_path), fails, give_up_seconds=3600)
    assert report.abandoned == ["del-1-1"] and report.kept == ["del-2-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abandoned-del-1-1", "del-2-1"]
    assert drain_delete_queue(str(tmp_path), fails, give_up_seconds=3600).abandoned == []  # never again


def test_a_directory_in_the_queue_never_stops_the_pass(tmp_path: Path) -> None:
    """A NAD's IPAM plugin (e.g. host-local's dataDir) could once make directories anywhere the agent
    writes: one named like a queue entry is skipped, and the DELs after it still run."""
    (tmp_path / "del-0").mkdir()
    _queue(tmp_path, "del-1-1", {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "after"})
    report = drain_delete_queue(str(tmp_path), lambda environ, stdin: (0, b""))
    assert report.applied == ["del-1-1"] and report.dropped == ["del-0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["del-0"]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="fxu"))  # a unix socket path has at most 107 bytes
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_server_socket_is_0600_serves_and_is_removed(short_dir: Path) -> None:
    path = str(short_dir / "cni.sock")
    queue = short_dir / "queue"
    queue.mkdir()
    _queue(queue, "del-1-1", {"CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c"})
    calls: list[dict[str, str]] = []

    def handler(environ: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        calls.append(dict(environ))
        return 0, stdin.upper()

    with CniServer(path, handler, delete_queue=str(queue), queue_interval=0):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert not list(queue.iterdir())  # replayed before listening
        assert call(path, {"CNI_COMMAND": "VERSION"}, b"abc") == (0, b"ABC")
        with pytest.raises(RuntimeError, match="already serves"):
            CniServer(path, handler).start()
    assert not os.path.exists(path)
    assert [c["CNI_COMMAND"] for c in calls] == ["DEL", "VERSION"]


def test_served_calls_ignore_node_settings_from_the_caller(tmp_path: Path) -> None:
    from flexsfc.cni.config import NodeConf

    node = NodeConf(state_dir=str(tmp_path / "state"))
    config = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "flexsfc-cni"}).encode()
    status, _ = handle({"CNI_COMMAND": "STATUS", ENV_STATE_DIR: "/proc/forbidden"}, config, node=node)
    assert status == 0 and (tmp_path / "state").is_dir()
    status, out = handle({"CNI_COMMAND": "NOPE"}, config, node=node)
    assert status == 1 and json.loads(out)["code"] == 4
    status, out = handle({"CNI_COMMAND": "VERSION"}, b"", node=node)
    assert status == 0 and "1.1.0" in json.loads(out)["supportedVersions"]


def test_node_settings_with_socket_key(tmp_path: Path) -> None:
    conf = tmp_path / "cni.conf"
    conf.write_text(json.dumps({"socket": "/run/x/agent.sock", "stateDir": "/var/lib/x"}))
    settings = read_node_config({ENV_NODE_CONFIG: str(conf)})
    assert settings.socket == "/run/x/agent.sock" and settings.state_dir == "/var/lib/x"
    overridden = read_node_config({ENV_NODE_CONFIG: str(conf), ENV_SOCKET: "/s", ENV_DELETE_QUEUE: "/q"})
    assert (overridden.socket, overridden.delete_queue) == ("/s", "/q")
    empty = tmp_path / "empty.conf"
    empty.write_text("")
    assert read_node_config({ENV_NODE_CONFIG: str(empty)}).socket == DEFAULT_SOCKET
    conf.write_text(json.dumps({"socket": "relative.sock"}))
    with pytest.raises(CniError) as bad:
        read_node_config({ENV_NODE_CONFIG: str(conf)})
    assert bad.value.code == 7 and "socket" in bad.value.msg
    conf.write_text(json.dumps({"sockett": "/x"}))
    with pytest.raises(CniError, match="unknown keys"):
        read_node_config({ENV_NODE_CONFIG: str(conf)})


def test_stop_lets_a_running_call_finish(short_dir: Path) -> None:
    import threading

    path = str(short_dir / "cni.sock")
    started = threading.Event()
    replies: list[tuple[int, bytes]] = []

    def slow(environ: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        started.set()
        time.sleep(0.3)
        return 0, b"done"

    server = CniServer(path, slow)
    server.start()
    caller = threading.Thread(target=lambda: replies.append(call(path, {"CNI_COMMAND": "ADD"}, b"")))
    caller.start()
    assert started.wait(5)
    server.stop()
    caller.join(5)
    assert replies == [(0, b"done")] and not os.path.exists(path)


def test_a_call_whose_shim_hung_up_while_waiting_is_not_run(short_dir: Path) -> None:
    """With every call slot busy, a request waits in the backlog; a shim that gave up meanwhile (it
    closed its socket) must not get its ADD made behind its back."""
    import socket
    import threading

    path = str(short_dir / "cni.sock")
    release, busy = threading.Event(), threading.Event()
    ran: list[str] = []

    def handler(environ: Mapping[str, str], stdin: bytes) -> tuple[int, bytes]:
        ran.append(environ["CNI_CONTAINERID"])
        if environ["CNI_CONTAINERID"] == "first":
            busy.set()
            release.wait(5)
        return 0, b""

    with CniServer(path, handler, max_connections=1):
        first = threading.Thread(
            target=lambda: call(path, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "first"}, b"")
        )
        first.start()
        assert busy.wait(5)
        with socket.socket(socket.AF_UNIX) as sock:  # the impatient shim: sends, then exits
            sock.connect(path)
            sock.sendall(encode_request({"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "gave-up"}, b"{}"))
            sock.shutdown(socket.SHUT_WR)
        release.set()
        first.join(5)
        call(path, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "later"}, b"")
    assert ran == ["first", "later"]


def test_a_refused_request_is_answered_with_a_cni_error(short_dir: Path) -> None:
    import socket

    path = str(short_dir / "cni.sock")
    with CniServer(path, lambda environ, stdin: (0, b"")), socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"FXC1" + struct.pack(">I", 1) + struct.pack(">I", 7) + b"PATH=/x")
        sock.shutdown(socket.SHUT_WR)
        status, out = decode_reply(sock.recv(1 << 16))
    assert status == 1 and json.loads(out)["code"] == 4
