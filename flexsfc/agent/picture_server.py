"""The node agent's control socket: a front end pushes the cluster picture, the agent reconciles it.

One JSON request per line, one JSON reply per line, many requests per connection (the pusher keeps
its connection). Requests:

    {"op": "ping"}                      -> {"ok": true, "result": {"node": ..., "pid": ...}}
    {"op": "push", "picture": PICTURE}  -> {"ok": true, "result": REPORT}   (flexsfc.agent.picture)
    {"op": "status"}                    -> {"ok": true, "result": {"node", "pushes", "lastError", ...}}

The push reply comes after the reconcile, so the pusher knows the node is programmed (REPORT:
`changed`, `summary`, `errors`, `failed`); a picture that does not parse is refused
({"ok": false, "error": "<field>: ..."}) and changes nothing. Only root may connect (the socket is
0600): a push decides what the node forwards where.
"""

import contextlib
import json
import logging
import os
import socketserver
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flexsfc.agent.loop import AgentLoop
from flexsfc.agent.picture import Picture, PictureError, parse_picture
from flexsfc.agent.reconciler import ReconcileError, ReconcileReport
from flexsfc.model.records import AttachmentRecord

log = logging.getLogger(__name__)

RecordsOf = Callable[[], Mapping[str, list[AttachmentRecord]]]  # pod UID -> its records on this node


def report_json(report: ReconcileReport) -> dict[str, Any]:
    return {
        "changed": report.changed,
        "failed": report.failed,
        "summary": report.summary(),
        "errors": list(report.errors),
    }


class PictureAgent:
    """Applies pushed pictures to an AgentLoop one at a time. The loop's topology carries the nodes'
    addresses and the tunnel device: the reconciler hands both to the data plane when they change."""

    def __init__(self, loop: AgentLoop, records: RecordsOf, *, node: str, tunnel_device: str | None) -> None:
        self.loop = loop
        self.records = records
        self.node = node
        self.tunnel_device = tunnel_device
        self._lock = threading.Lock()
        self.pushes = 0
        self.last_push = 0.0
        self.last_error = ""

    def push(self, raw: Any) -> dict[str, Any]:
        picture = parse_picture(raw)
        if picture.node != self.node:
            # A picture meant for another node would program this one as if it were that node.
            raise PictureError(f"picture.node: {picture.node!r} is not this agent's node {self.node!r}")
        with self._lock:
            return self._apply(picture)

    def _apply(self, picture: Picture) -> dict[str, Any]:
        by_uid = self.records()
        self.loop.set_cross_connections(picture.cross_connections, picture.chain_settings)
        self.loop.set_replicas(picture.nf_replicas(lambda uid: by_uid.get(uid, [])))
        self.loop.set_topology(picture.topology(self.tunnel_device))
        self.pushes += 1
        self.last_push = time.time()
        try:
            report = self.loop.sync("push")
        except ReconcileError as exc:
            report = exc.report
        self.last_error = "; ".join(report.errors)
        return report_json(report)

    def status(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "pid": os.getpid(),
            "pushes": self.pushes,
            "lastPush": self.last_push,
            "lastError": self.last_error,
            "replicas": len(self.loop.replicas()),
            "converged": self.loop.converged,
        }


class _Handler(socketserver.StreamRequestHandler):
    server: "PictureServer"

    def handle(self) -> None:
        for line in self.rfile:
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise PictureError("request: must be a JSON object")
                reply: dict[str, Any] = {"ok": True, "result": self.server.dispatch(request)}
            except (PictureError, json.JSONDecodeError) as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:
                log.exception("control request failed")
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(reply).encode() + b"\n")
            self.wfile.flush()


class PictureServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, agent: PictureAgent) -> None:
        self.agent = agent
        self.path = path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)  # a dead agent's socket (the CNI socket is checked; this one is ours by path)
        super().__init__(path, _Handler)
        os.chmod(path, 0o600)
        self._thread: threading.Thread | None = None

    def dispatch(self, request: Mapping[str, Any]) -> Any:
        op = request.get("op")
        if op == "ping":
            return {"node": self.agent.node, "pid": os.getpid()}
        if op == "push":
            return self.agent.push(request.get("picture"))
        if op == "status":
            return self.agent.status()
        raise PictureError(f"request.op: {op!r} is not one of ping, push, status")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="flexsfc-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def records_by_uid(records: Iterable[AttachmentRecord]) -> dict[str, list[AttachmentRecord]]:
    by_uid: dict[str, list[AttachmentRecord]] = {}
    for record in records:
        if record.pod_uid:
            by_uid.setdefault(record.pod_uid, []).append(record)
    return by_uid
