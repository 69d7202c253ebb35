"""The local runtime's supervisor process: owns a Runtime and serves control requests on a socket.

`flexsfc up` starts it in the background (its own session, output to supervisor.log) and talks to it
over <state dir>/control.sock: one JSON request per connection, one JSON reply. It exits after `down`
(or SIGTERM/SIGINT), having removed every pod, the pinned data plane and its state directory.
"""

import argparse
import json
import logging
import os
import signal
import socketserver
import sys
import threading
from typing import Any

from flexsfc.local.config import RuntimeConfig
from flexsfc.local.podspec import PodSpecError
from flexsfc.local.runtime import Runtime, RuntimeRequestError

log = logging.getLogger("flexsfc.local.supervisor")


class _Handler(socketserver.StreamRequestHandler):
    server: "ControlServer"

    def handle(self) -> None:
        line = self.rfile.readline()
        try:
            request = json.loads(line)
            result = self.server.dispatch(request)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except (RuntimeRequestError, PodSpecError, ValueError) as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.exception("request failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")


class ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._down_lock = threading.Lock()
        path = runtime.config.socket_path
        if path.exists():
            path.unlink()
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o600)

    def dispatch(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        rt = self.runtime
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "apply":
            from flexsfc.model.loader import load_plan

            return rt.apply(load_plan(request["path"]), str(request["path"]))
        if op == "wait_ready":
            rt.wait_ready(float(request.get("timeout", 60)))
            return {"ready": True}
        if op == "ready":
            done, error = rt.ready()
            return {"ready": done, "error": error, "deployments": rt.summary()}
        if op == "scale":
            return rt.scale(str(request["name"]), int(request["replicas"]))
        if op == "status":
            return rt.status()
        if op == "sessions":
            return rt.sessions(request.get("xc"))
        if op == "reactions":
            return rt.reactions
        if op == "down":
            return self.down()
        raise ValueError(f"unknown request op {op!r}")

    def down(self) -> dict[str, Any]:
        with self._down_lock:
            errors = self.runtime.shutdown()
            threading.Thread(target=self.shutdown, daemon=True).start()
            return {"errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flexsfc-supervisor")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--pin-dir", required=True)
    parser.add_argument("--netns-prefix", default="fx")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on 127.0.0.1")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    config = RuntimeConfig(state_dir=args.state_dir, pin_dir=args.pin_dir, netns_prefix=args.netns_prefix)
    config.save()
    runtime = Runtime(config)
    server = ControlServer(runtime)
    if args.metrics_port:
        from flexsfc.metrics.local import serve_runtime_metrics

        serve_runtime_metrics(runtime, args.metrics_port)
        log.info("metrics on http://127.0.0.1:%d/metrics", args.metrics_port)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down", signum)
        threading.Thread(target=server.down, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("supervisor %d serving %s", os.getpid(), config.socket_path)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    log.info("supervisor %d stopped", os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
