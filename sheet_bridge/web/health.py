"""A health check that slow clients cannot starve (docs/operating.md "Health checks").

gunicorn's gthread workers hand each new connection to a request thread, which then waits for
the request's headers; 40 connections that send a byte now and then hold every thread, and
`/healthz` on the service port waits behind them, so a container health check restarts a
healthy container. This listener runs in gunicorn's master, on a port of its own
(SHEET_BRIDGE_HEALTH_PORT, loopback by default), one short-lived thread per connection with a
5-second socket timeout: it answers from the workers' heartbeats (the files gunicorn itself
watches to replace a stuck worker), never from the request threads.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

# A worker whose heartbeat is older than this is not counted as alive (gthread's main loop
# beats about once a second whatever its request threads do).
STALE_AFTER = 10.0
DEFAULT_PORT = 8081


class _Handler(BaseHTTPRequestHandler):
    timeout = 5  # a client that does not send its request line and headers in 5 s is dropped
    server: HealthServer

    def do_GET(self) -> None:  # http.server calls it by this name
        if self.path.split("?")[0] != "/healthz":
            self._answer(404, {"ok": False, "error": "no such route"})
            return
        alive = self.server.alive_workers()
        self._answer(200 if alive else 503, {"ok": alive > 0, "workers": alive})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a health check every 30 s is not worth a log line


class HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], alive_workers: Callable[[], int]) -> None:
        super().__init__(address, _Handler)
        self.alive_workers = alive_workers


def live_workers(server: Any, stale_after: float = STALE_AFTER) -> int:
    """How many of a gunicorn arbiter's workers beat within `stale_after` seconds."""
    now = time.monotonic()  # gunicorn stamps the heartbeat files with its monotonic clock
    count = 0
    for worker in list(server.WORKERS.values()):
        try:
            if now - worker.tmp.last_update() <= stale_after:
                count += 1
        except (OSError, ValueError):  # the worker is being replaced
            continue
    return count


def start_health_listener(host: str, port: int, alive_workers: Callable[[], int]) -> HealthServer:
    """Serve GET /healthz on host:port in a daemon thread; the server (its port is
    `server.server_address[1]`, useful with port 0)."""
    httpd = HealthServer((host, port), alive_workers)
    thread = threading.Thread(target=httpd.serve_forever, name="sheet-bridge-health", daemon=True)
    thread.start()
    return httpd
