"""The local runtime's supervisor process: owns a Runtime and serves control requests on a socket.

`flexsfc up` starts it in the background (its own session, output to supervisor.log) and talks to it
over <state dir>/control.sock: one JSON request per connection, one JSON reply. It exits after `down`
(or SIGTERM/SIGINT), having removed every pod, the pinned data plane and its state directory. Its
Runtime also serves <state dir>/cni.sock, the socket the node shim asks (flexsfc.local.node): the
supervisor is this machine's node agent and the only writer of the data plane.

Before it touches anything it takes the state directory's supervisor lock and claims its pin
directory and namespace prefix (flexsfc.local.locks); a second supervisor exits there, leaving the
first one's socket, pods and data plane alone. When the state directory holds the state of a
supervisor that died, it adopts that runtime (flexsfc.local.runtime) instead of starting empty.
"""

import argparse
import contextlib
import json
import logging
import os
import signal
import socketserver
import sys
import threading
from typing import Any

from flexsfc.agent.flow_history import FlowHistory, dataplane_names
from flexsfc.local.config import RuntimeConfig
from flexsfc.local.locks import (
    EXIT_CLAIMED,
    EXIT_LOCKED,
    EXIT_NOT_ADOPTED,
    ClaimError,
    LockBusy,
    acquire,
    claim,
)
from flexsfc.local.podspec import PodSpecError
from flexsfc.local.runtime import Runtime, RuntimeRequestError
from flexsfc.local.state import read_state
from flexsfc.local.status import ReadyStatus
from flexsfc.util import jsonline

log = logging.getLogger("flexsfc.local.supervisor")


class SocketInUse(RuntimeError):
    pass


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
        self.flow_history: FlowHistory | None = None  # off unless `flexsfc up --flow-history N`
        self._history_lock = threading.Lock()
        path = runtime.config.socket_path
        if path.exists():
            # The supervisor lock makes this the only supervisor of the directory; still, never
            # take the socket from a process that answers on it: only a dead one's is removed.
            if jsonline.answers(str(path), timeout=2):
                raise SocketInUse(f"a live process answers on {path}; not replacing its socket")
            path.unlink()
        super().__init__(str(path), _Handler)
        os.chmod(path, 0o600)

    def dispatch(self, request: dict[str, Any]) -> Any:
        op = request.get("op")
        rt = self.runtime
        if op == "ping":
            return {"pid": os.getpid()}
        if op == "apply":
            return rt.apply_manifests(str(request["path"]), request.get("namespace") or None).to_json()
        if op == "wait_ready":
            rt.wait_ready(float(request.get("timeout", 60)))
            return {"ready": True}
        if op == "ready":
            done, error = rt.ready()
            return ReadyStatus(done, error, tuple(rt.summary())).to_json()
        if op == "scale":
            namespace = request.get("namespace") or None
            return rt.scale(str(request["name"]), int(request["replicas"]), namespace).to_json()
        if op == "status":
            return rt.status().to_json()
        if op == "sessions":
            return [s.to_json() for s in rt.sessions(request.get("xc"))]
        if op == "reactions":
            return [r.to_json() for r in rt.reactions]
        if op == "flows":
            return self.flows(request.get("last"))
        if op == "flow_history":
            return self.set_flow_history(int(request["size"]))
        if op == "node_fail":
            return rt.fail_node(str(request["node"]))
        if op == "down":
            return self.down()
        raise ValueError(f"unknown request op {op!r}")

    def flows(self, last: int | None) -> dict[str, Any]:
        history = self.flow_history
        if history is None:
            raise RuntimeRequestError(
                "this runtime keeps no flow history: turn it on with `flexsfc up PATH --flow-history N` "
                "(the last N events; a running runtime turns it on in place)"
            )
        return history.to_json(None if last is None else max(int(last), 0))

    def set_flow_history(self, size: int) -> dict[str, Any]:
        """Keeps the last `size` flow events from now on (0: none, the stream's reader lets go)."""
        if size < 0:
            raise ValueError(f"flow history size {size}: must be >= 0")
        if size and getattr(self.runtime, "nodes", None) is not None:
            # Simulated nodes: each node's agent owns its data plane; config.pin_dir has none.
            raise RuntimeRequestError(
                "a multi-node runtime has one data plane per node: its flow history is not kept here"
            )
        with self._history_lock:
            old = self.flow_history
            if (old.size if old is not None and old.running else 0) == size:
                return {"size": size, "changed": False}
            self.flow_history = None
            if old is not None:
                old.close()
            if size:
                dp = self.runtime.dataplane
                self.flow_history = FlowHistory(
                    self.runtime.config.pin_dir,
                    size,
                    names=lambda: dataplane_names(dp),
                    keep=old.last(size) if old is not None else (),
                )
            log.info("flow history: %s", f"the last {size} events" if size else "off")
            return {"size": size, "changed": True}

    def down(self) -> dict[str, Any]:
        with self._down_lock:
            self.set_flow_history(0)  # before the pins go
            errors = self.runtime.shutdown()
            threading.Thread(target=self.shutdown, daemon=True).start()
            return {"errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flexsfc-supervisor")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--pin-dir", required=True)
    parser.add_argument("--netns-prefix", default="fx")
    parser.add_argument("--nodes", type=int, default=1, help="simulated nodes (flexsfc.local.nodes)")
    parser.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on 127.0.0.1")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    config = RuntimeConfig(
        state_dir=args.state_dir, pin_dir=args.pin_dir, netns_prefix=args.netns_prefix, nodes=args.nodes
    )
    config.root.mkdir(parents=True, exist_ok=True)
    log.info("supervisor %d starting for %s", os.getpid(), config.state_dir)
    try:
        # Held until this process ends (flock: released by the kernel even on SIGKILL).
        lock = acquire(config.supervisor_lock)
    except LockBusy as exc:
        log.error(
            "another supervisor (pid %s) serves %s; not starting a second one",
            exc.holder.get("pid", "?"),
            config.state_dir,
        )
        return EXIT_LOCKED
    lock.write({"pid": os.getpid()})
    try:
        claims = claim(config)
    except ClaimError as exc:
        log.error("%s", exc)
        return EXIT_CLAIMED
    config.save()
    state = read_state(config)
    if state is not None:
        log.info("adopting the runtime of supervisor %d (%d pods)", state.supervisor_pid, len(state.pods))
    try:
        runtime = Runtime(config, adopt=state)
    except RuntimeRequestError as exc:
        log.error("%s", exc)
        return EXIT_NOT_ADOPTED
    except Exception as exc:  # the simulated nodes could not be created: say why, in one line
        log.error("cannot start the runtime: %s", exc)
        return 1
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
    gone = not config.state_file.exists()  # what is left keeps its claims until `down` removes it
    for held in claims:
        held.release(unlink=gone)
    with contextlib.suppress(OSError):
        lock.release()
    log.info("supervisor %d stopped", os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
