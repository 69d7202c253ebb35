"""The flow history without a kernel: a fake event stream stands in for the ring buffer. The history
keeps the newest N events, remembers the names of replicas removed since, serves them on its socket
as the records themselves, and `flexsfc flows --last` prints them filtered, from that socket."""

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flexsfc.agent import flow_history
from flexsfc.agent.flow_history import (
    FlowHistory,
    FlowHistoryServer,
    HistoryUnavailable,
    fetch,
    record_from_wire,
    record_to_wire,
)
from flexsfc.cli.flows import flows
from flexsfc.dataplane import maps
from flexsfc.dataplane.events import Flow, FlowEventRecord


def _created(port: int, replica: int, at: float = 1000.0) -> FlowEventRecord:
    return FlowEventRecord(
        time=at, kind=maps.FlowEventKind.CREATED, reason=None, xc_id=3, side=0, moved_side=0,
        ifindex=11, old_ifindex=0, ifindex_a=11, ifindex_b=replica,
        flow=Flow(maps.FAMILY_V4, 17, "10.0.0.1", port, "10.0.0.2", 9000),
    )  # fmt: skip


class FakeStream:
    """What FlowHistory uses of EventStream: batches handed to poll() by the test."""

    instances: list["FakeStream"] = []

    def __init__(self, pin_dir: str, *, drop_budget: int | None = None) -> None:
        self.batches: list[list[FlowEventRecord]] = []
        self.lock = threading.Lock()
        self.closed = False
        self.readers = 1  # live leases, this one included
        self.held = 0
        FakeStream.instances.append(self)

    def feed(self, batch: list[FlowEventRecord]) -> None:
        with self.lock:
            self.batches.append(batch)

    def poll(self, timeout: float = 0.2) -> list[FlowEventRecord]:
        with self.lock:
            if self.batches:
                return self.batches.pop(0)
        time.sleep(0.01)
        return []

    def hold(self) -> None:
        self.held += 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeStream]]:
    FakeStream.instances.clear()
    monkeypatch.setattr(flow_history, "EventStream", FakeStream)
    yield FakeStream


def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_a_record_survives_the_wire() -> None:
    drop = FlowEventRecord(
        time=1234.5678, kind=maps.FlowEventKind.DROP, reason="not_ip", xc_id=0, side=1, moved_side=0,
        ifindex=7, old_ifindex=0, ifindex_a=0, ifindex_b=0, flow=None, pkt_len=60, packet=b"\x01\x02",
    )  # fmt: skip
    for record in (_created(5000, 21), drop):
        assert record_from_wire(json.loads(json.dumps(record_to_wire(record)))) == record


def test_the_history_keeps_the_newest_events_and_names_of_removed_replicas(stream: type[FakeStream]) -> None:
    ports = {"21": {"identity": "fw-a", "xc": "default/c-fw", "side": "B"}}
    calls = []

    def names() -> dict[str, Any]:
        calls.append(1)
        return {"xcs": {"3": "default/c-fw"}, "ports": dict(ports)}

    with FlowHistory("/nowhere", 3, names=names) as history:
        fake = stream.instances[0]
        fake.feed([_created(5000 + i, 21) for i in range(4)])
        _until(lambda: history.recorded == 4)
        assert [r.flow.sport for r in history.last() if r.flow] == [5001, 5002, 5003]
        assert [r.flow.sport for r in history.last(1) if r.flow] == [5003]
        ports.clear()  # fw-a removed from the data plane: the kept events still name it
        ports["22"] = {"identity": "fw-b", "xc": "default/c-fw", "side": "B"}
        fake.feed([_created(6000, 22)])
        _until(lambda: history.recorded == 5)
        reply = history.to_json(2)
        assert reply["kept"] == 3 and reply["size"] == 3 and reply["running"]
        assert [e["flow"]["sport"] for e in reply["events"]] == [5003, 6000]
        assert set(reply["names"]["ports"]) == {"21", "22"}
    assert fake.closed and not history.running


def test_the_history_yields_the_ring_to_another_reader_and_reports_the_gap(stream: type[FakeStream]) -> None:
    with FlowHistory("/nowhere", 10) as history:
        fake = stream.instances[0]
        fake.readers = 2  # `flexsfc flows` attached: its records must not be taken from it
        _until(lambda: fake.held > 0)
        fake.feed([_created(5000, 21)])
        time.sleep(0.2)
        assert history.recorded == 0 and fake.batches and history.paused_since is not None
        assert history.to_json()["pausedSince"] is not None
        fake.readers = 1
        _until(lambda: history.recorded == 1)
        reply = history.to_json()
        assert reply["pausedSince"] is None
        [(start, end)] = reply["gaps"]
        assert start < end


def test_the_socket_serves_the_history_and_flows_last_prints_it(
    stream: type[FakeStream], tmp_path: Path
) -> None:
    names = {"xcs": {"3": "default/c-fw"}, "ports": {"21": {"identity": "fw-a", "xc": "default/c-fw"}}}
    path = str(tmp_path / "flows.sock")
    server = flow_history.serve(path, "/nowhere", 10, lambda: names)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        stream.instances[0].feed([_created(5000 + i, 21, at=1000.0 + i) for i in range(5)])
        _until(lambda: server.history.recorded == 5)
        reply = fetch(path, last=2)
        assert [r.flow.sport for r in reply.events if r.flow] == [5003, 5004]
        with pytest.raises(RuntimeError, match="another process serves"):
            FlowHistoryServer(path, server.history)

        result = CliRunner().invoke(
            flows, ["--agent-socket", path, "--last", "2", "--json", "--port", "5001"]
        )
        assert result.exit_code == 0, result.output
        [line] = result.stdout.splitlines()
        event = json.loads(line)
        assert (
            event["flow"]["sport"] == 5001 and event["b"]["pod"] == "fw-a" and event["xc"] == "default/c-fw"
        )
        text = CliRunner().invoke(flows, ["--agent-socket", path, "--last", "3"])
        assert text.exit_code == 0 and len(text.stdout.splitlines()) == 3
        assert "fw-a" in text.stdout
    finally:
        server.stop()
    assert not os.path.exists(path) and stream.instances[0].closed
    with pytest.raises(HistoryUnavailable):
        fetch(path)
    missing = CliRunner().invoke(flows, ["--agent-socket", path, "--last", "2"])
    assert missing.exit_code != 0 and "--flow-history N" in missing.output


def test_flows_options_that_do_not_go_together() -> None:
    runner = CliRunner()
    assert "give --last N" in runner.invoke(flows, ["--agent-socket", "/x.sock"]).output
    assert "give one of them" in runner.invoke(flows, ["--last", "2", "--follow"]).output
