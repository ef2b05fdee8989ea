"""Google's certificate fetch cannot starve the workers (issue 22, item 4): one total deadline
for the whole fetch, tested against a real server on loopback that trickles its reply a byte at
a time, and a reply that is not a set of certificates is never cached (one HTTP 200 captive-
portal page must not turn every valid ID token into a 401 for an hour)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from sheet_bridge.web.auth import GoogleCertificates, google_verifier
from tests.conftest import World
from tests.security.test_auth_fails_closed import (
    bearer,
    error_code,
    id_token,
    id_token_client,
    id_token_world,
    serve_certificates,
    status,
)

MakeWorld = Callable[..., World]


class TricklingServer:
    """An HTTP server on loopback that answers 200 with a long Content-Length and then sends
    one byte every `every` seconds: each read succeeds well inside any per-read timeout."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/certs"

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                got = conn.recv(4096)
                if not got:
                    return
                request += got
            try:
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n{"
                )
                while not self.stop.wait(self.every):
                    conn.sendall(b" ")
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()


@pytest.fixture
def trickling() -> Iterator[TricklingServer]:
    server = TricklingServer(every=0.3)
    yield server
    server.close()


def test_a_certificate_server_that_trickles_bytes_is_given_up_on_at_the_total_deadline(
    make_world: MakeWorld,
    world_now: datetime,
    httpserver: HTTPServer,
    google_key: Any,
    trickling: TricklingServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sheet_bridge")
    world = id_token_world(make_world, world_now, httpserver, allowed_domain="example.com")
    world.config = world.config.model_copy(
        update={
            "server": world.config.server.model_copy(update={"id_token_certs_url": trickling.url})
        }
    )
    client = id_token_client(world, verifier=google_verifier(GoogleCertificates(timeout=1.5)))
    answer: dict[str, Any] = {}

    def ask() -> None:
        answer["response"] = status(client, bearer(id_token(google_key)))

    started = time.monotonic()
    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(10)
    took = time.monotonic() - started

    assert not asking.is_alive(), "the request was still waiting for the certificates after 10 s"
    assert took < 4, f"the fetch had a 1.5 s deadline and took {took:.1f} s"
    response = answer["response"]
    assert response.status_code == 503, response.get_data(as_text=True)
    assert error_code(response) == "auth_unavailable"
    assert "cannot fetch Google's ID-token certificates" in caplog.text
    assert "TimeoutError" in caplog.text


@pytest.mark.parametrize(
    "body",
    ["<html>Sign in to the hotel Wi-Fi</html>", '{"not": "a certificate"}', "[]", '{"keys": []}'],
    ids=["html", "json-not-certificates", "json-list", "empty-jwk-set"],
)
def test_a_200_reply_that_is_not_certificates_is_not_cached_and_is_logged(
    make_world: MakeWorld,
    world_now: datetime,
    httpserver: HTTPServer,
    google_key: Any,
    caplog: pytest.LogCaptureFixture,
    body: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="sheet_bridge")
    httpserver.expect_ordered_request("/certs").respond_with_data(body, status=200)
    serve_certificates(httpserver, google_key)  # the next fetch: Google's real answer
    world = id_token_world(make_world, world_now, httpserver, allowed_domain="example.com")
    monotonic = [1000.0]
    certificates = GoogleCertificates(clock=lambda: monotonic[0])
    client = id_token_client(world, verifier=google_verifier(certificates))

    during = status(client, bearer(id_token(google_key)))
    monotonic[0] += 31  # past the failure pause, far inside the hour a good reply is kept
    after = status(client, bearer(id_token(google_key)))

    # A valid token is never told it is invalid because of Google's (or a proxy's) reply.
    assert during.status_code == 503, during.get_data(as_text=True)
    assert error_code(during) == "auth_unavailable"
    assert "cannot fetch Google's ID-token certificates" in caplog.text
    assert after.status_code == 200, after.get_data(as_text=True)
