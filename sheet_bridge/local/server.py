"""Run a WSGI app on loopback in a background thread (the emulator, fake Meta, the backend)."""

from __future__ import annotations

import logging
import socket
import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class _QuietHandlerLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def make_local_server(app: Any, host: str, port: int, *, or_free: bool = False) -> BaseWSGIServer:
    """A threaded werkzeug server on `port` (0: any free port); with `or_free`, a port another
    program holds is a preference, not an error: any free port instead."""
    if or_free and port and not port_is_free(host, port):
        port = 0
    return make_server(host, port, app, threaded=True)


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (bound as werkzeug binds, with
    SO_REUSEADDR, so a port left in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class BackgroundServer:
    """A threaded werkzeug server on 127.0.0.1; `port=0` picks a free port, and so does a
    taken `port` with `or_free`.

    Use as a context manager, or call start()/stop(). `url` is the base URL, no trailing slash.
    """

    def __init__(
        self, app: Any, host: str = "127.0.0.1", port: int = 0, *, or_free: bool = False
    ) -> None:
        self.app = app
        self._server: BaseWSGIServer = make_local_server(app, host, port, or_free=or_free)
        # A short poll interval: stop() returns in ~50 ms instead of werkzeug's 0.5 s.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.host = host
        self.port = self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        logging.getLogger("werkzeug").addFilter(_QuietHandlerLogs())
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
