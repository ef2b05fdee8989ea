"""Run a WSGI app on loopback in a background thread (the emulator, fake Meta, the backend)."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server


class _QuietHandlerLogs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


class BackgroundServer:
    """A threaded werkzeug server on 127.0.0.1; `port=0` picks a free port.

    Use as a context manager, or call start()/stop(). `url` is the base URL, no trailing slash.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
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
