"""Opening the node agent's data plane: upgrading the pinned program, and what to do when refused.

The agent is the data plane's one writer, so it opens the pins with `upgrade=True`: a new agent
version moves the pinned program to its own without stopping forwarding (docs/dataplane.md,
"Upgrade"). When the pinned state needs a migration this version lacks (`UpgradeRefused`), exiting
would make the DaemonSet crash-loop, and the old program forwards correctly with its own state. So
the agent stays up and idle instead: it logs the refusal, answers its liveness probe (the kubelet
must not restart it for a condition a restart cannot fix), and tries again every `retry_seconds`,
picking the state up as soon as an operator rolled the agent back elsewhere or removed the pins.
"""

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

from flexsfc.dataplane.facade import Dataplane
from flexsfc.dataplane.upgrade import UpgradeRefused

log = logging.getLogger(__name__)


def open_agent_dataplane(
    pin_dir: str,
    *,
    liveness: str | None = None,
    retry_seconds: float = 60.0,
    stop: threading.Event | None = None,
    open_dataplane: Callable[[str], Dataplane] | None = None,
) -> Dataplane:
    """The agent's Dataplane at `pin_dir`, its program upgraded. While the upgrade is refused, serves
    `liveness` (e.g. http://0.0.0.0:8080/healthz) and retries; raises UpgradeRefused only when `stop`
    is set meanwhile."""
    opener = open_dataplane or (lambda path: Dataplane(path, upgrade=True))
    stop = stop or threading.Event()
    server: ThreadingHTTPServer | None = None
    try:
        while True:
            try:
                return opener(pin_dir)
            except UpgradeRefused as exc:
                log.error("%s; retrying in %.0f s (the pod stays up, forwarding goes on)", exc, retry_seconds)
                if server is None and liveness:
                    server = _serve_liveness(liveness, f"waiting: {exc}")
                if stop.wait(retry_seconds):
                    raise
    finally:
        if server is not None:  # kopf serves the probe from here on, on the same address
            server.shutdown()
            server.server_close()


def _serve_liveness(url: str, message: str) -> ThreadingHTTPServer:
    parsed = urlparse(url)
    body = (message + "\n").encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == (parsed.path or "/") else 404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the kubelet probes every 20 s: not worth a log line each

    server = ThreadingHTTPServer((parsed.hostname or "0.0.0.0", parsed.port or 80), Handler)
    threading.Thread(target=server.serve_forever, name="liveness-while-refused", daemon=True).start()
    return server
