"""The backend the sidebar calls, over the emulator and the fake Meta on loopback: edits and
syncs reach Meta exactly once, every /api route is authenticated (shared secret or a Google
ID token verified against locally served certificates), errors share one JSON shape, and the
Meta token leaks nowhere (issue 5 "Deliver" 3 and 7)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from sheet_bridge.meta.identity import sha256_hex
from sheet_bridge.web.app import StartupError, create_app
from tests.conftest import (
    WORLD_HEADER,
    WORLD_PIXEL,
    WORLD_SECRET,
    WORLD_SHEET,
    WORLD_TOKEN,
    WORLD_TZ,
    World,
    lead_row,
    world_config,
)
from tests.google_tokens import AUDIENCE, certificate_pem
from tests.google_tokens import id_token as google_id_token
from tests.ledger_backends import stored_text

MakeWorld = Callable[..., World]
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}
KID = "test-key-1"


@pytest.fixture(scope="module")
def idle_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world shared by the tests whose requests must be refused before any pass runs (a
    world per test costs a second of server shutdown each)."""
    yield from running_world(tmp_path_factory.mktemp("idle"))


def running_world(tmp: Path, **overrides: Any) -> Iterator[World]:
    """What make_world builds, for a module-scoped fixture: one lead at New."""
    now = datetime.now(UTC).replace(microsecond=0)
    data_path = tmp / "sheets.json"
    rows = [list(WORLD_HEADER), lead_row(1, "New", now=now)]
    sheet = {"title": "World", "timeZone": WORLD_TZ, "sheets": {"Leads": rows}}
    data_path.write_text(json.dumps({"spreadsheets": {WORLD_SHEET: sheet}}))
    with (
        BackgroundServer(create_emulator(data_path=data_path)) as sheets,
        BackgroundServer(
            create_fake_meta(access_token=WORLD_TOKEN, pixel_ids=[WORLD_PIXEL])
        ) as meta,
    ):
        config = world_config(tmp, sheets.url, meta.url, **overrides)
        yield World(tmp, sheets.url, meta.url, data_path, config, now)


def make_app(world: World, **kw: Any) -> Flask:
    kw.setdefault("environ", {"SHEET_BRIDGE_SECRET": WORLD_SECRET})
    return create_app(bridges=[world.bridge()], **kw)


def em(i: int) -> str:
    return sha256_hex(f"lead{i}@example.com")


def names_at_meta(world: World, i: int) -> list[str]:
    return [e["event_name"] for e in world.meta_events() if e["user_data"].get("em") == em(i)]


def status_cell(world: World, row_number: int) -> str:
    rows = world.rows()
    col = rows[0].index("CAPI Status")
    row = rows[row_number - 1]
    return str(row[col]) if col < len(row) else ""


def edit_body(row: int, old: str, new: str, at: datetime) -> dict[str, Any]:
    return {
        "spreadsheet_id": WORLD_SHEET,
        "tab": "Leads",
        "row": row,
        "old_value": old,
        "new_value": new,
        "at": at.isoformat(),
    }


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


# -- edits and syncs -----------------------------------------------------------------------


def test_edit_reaches_meta_before_the_request_returns_and_fills_the_row(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now), lead_row(2, "New", now=world_now)])
    client = make_app(world).test_client()
    client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    at = world_now - timedelta(minutes=1)
    world.edit_cells([(2, "Lead Status", "MQL"), (2, "Status Changed At", at.isoformat())])
    world.edit_cells([(3, "Lead Status", "SQL")])  # edited, but its trigger has not fired

    response = client.post("/api/edits", json=edit_body(2, "New", "MQL", at), headers=AUTH)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert names_at_meta(world, 1) == ["Lead", "QualifiedLead"]
    assert names_at_meta(world, 2) == ["Lead"]  # the edit syncs its own lead only
    qualified = world.meta_events()[-1]
    assert qualified["event_time"] == int(at.timestamp())
    assert status_cell(world, 2) == "Sent: Lead, QualifiedLead"
    body = response.get_json()
    assert body["queued"] is False
    assert body["row"]["row"] == 2
    assert body["row"]["outcome"] == "sent"


def test_sync_answers_the_summary_shape(make_world: MakeWorld, world_now: datetime) -> None:
    world = make_world(
        [
            lead_row(1, "New", now=world_now),
            lead_row(2, "SQL", now=world_now, created_hours=24 * 12, changed_hours=24 * 9),
            lead_row(3, "Maybe later", now=world_now),
        ]
    )
    client = make_app(world).test_client()

    response = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)

    assert response.status_code == 200
    body = response.get_json()
    assert {"sent", "skipped", "expired", "invalid", "failed", "already_sent", "rows"} <= set(body)
    assert (body["sent"], body["expired"], body["skipped"]) == (1, 1, 1)
    assert (body["invalid"], body["failed"], body["already_sent"]) == (0, 0, 0)
    # Rows needing attention only, most urgent first; the sent row is a count.
    assert [(r["row"], r["outcome"]) for r in body["rows"]] == [(3, "expired"), (4, "skipped")]
    assert {"row", "lead_key", "status", "outcome", "message", "events"} <= set(body["rows"][0])
    assert (body["rows_total"], body["attention_total"], body["next_rows_offset"]) == (3, 2, None)
    assert body["state"] == "done" and body["pass_id"]


def test_two_syncs_send_no_duplicates(make_world: MakeWorld, world_now: datetime) -> None:
    world = make_world(
        [lead_row(1, "Opportunity", now=world_now), lead_row(2, "New", now=world_now)]
    )
    client = make_app(world).test_client()

    first = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    second = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)

    assert first.get_json()["sent"] == 2
    assert second.get_json()["already_sent"] == 2
    assert second.get_json()["sent"] == 0
    assert len(world.meta_events()) == 5


def test_dry_run_sync_sends_nothing(make_world: MakeWorld, world_now: datetime) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now)])
    client = make_app(world).test_client()

    response = client.post(
        "/api/sync", json={"spreadsheet_id": WORLD_SHEET, "dry_run": True}, headers=AUTH
    )

    assert response.status_code == 200
    assert response.get_json()["rows"][0]["outcome"] == "due"
    assert world.meta_stats()["requests"] == 0


def test_simultaneous_syncs_and_edits_send_each_lead_event_exactly_once(
    make_world: MakeWorld, world_now: datetime
) -> None:
    statuses = ["New", "MQL", "SQL", "Customer", "New", "Opportunity"]
    world = make_world([lead_row(i + 1, s, now=world_now) for i, s in enumerate(statuses)])
    at = world_now - timedelta(minutes=1)
    world.edit_cells(
        [
            (2, "Lead Status", "MQL"),
            (2, "Status Changed At", at.isoformat()),
            (6, "Lead Status", "SQL"),
            (6, "Status Changed At", at.isoformat()),
        ]
    )
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/api/sync", {"spreadsheet_id": WORLD_SHEET}),
        ("/api/sync", {"spreadsheet_id": WORLD_SHEET}),
        ("/api/sync", {"spreadsheet_id": WORLD_SHEET}),
        ("/api/edits", edit_body(2, "New", "MQL", at)),
        ("/api/edits", edit_body(6, "New", "SQL", at)),
    ]
    answers: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(requests))

    with BackgroundServer(make_app(world)) as server:

        def call(path: str, body: dict[str, Any]) -> None:
            try:
                start.wait()
                r = httpx.post(server.url + path, json=body, headers=AUTH, timeout=30)
                answers.append(r.status_code)
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=call, args=rq) for rq in requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        final = httpx.post(
            server.url + "/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH, timeout=30
        )

    assert errors == []
    assert len(answers) == 5
    assert set(answers) <= {200, 202, 409}, answers
    assert 200 in answers
    assert final.status_code == 200
    sent = Counter((e["user_data"]["em"], e["event_name"]) for e in world.meta_events())
    expected = {
        (em(1), "Lead"),
        (em(1), "QualifiedLead"),
        (em(2), "Lead"),
        (em(2), "QualifiedLead"),
        *((em(3), n) for n in ("Lead", "QualifiedLead", "Schedule")),
        *((em(4), n) for n in ("Lead", "QualifiedLead", "Schedule", "StartTrial", "Purchase")),
        *((em(5), n) for n in ("Lead", "QualifiedLead", "Schedule")),
        *((em(6), n) for n in ("Lead", "QualifiedLead", "Schedule", "StartTrial")),
    }
    assert set(sent) == expected
    assert [k for k, n in sent.items() if n > 1] == []


# -- authentication and errors -------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer wrong-secret"},
        {"Authorization": f"Basic {WORLD_SECRET}"},
        {"Authorization": f"Bearer {WORLD_SECRET}x"},
        {"Authorization": "Bearer a.b.c"},
    ],
    ids=["missing", "empty", "wrong", "not-bearer", "secret-plus-one", "jwt-shaped"],
)
def test_missing_or_wrong_credentials_are_refused_with_401_on_every_api_route(
    idle_world: World, headers: dict[str, str]
) -> None:
    world = idle_world
    client = make_app(world).test_client()

    responses = [
        client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=headers),
        client.post("/api/edits", json=edit_body(2, "", "New", world.now), headers=headers),
        client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=headers),
    ]

    for response in responses:
        assert_error(response, 401, "unauthorized")
    assert world.meta_stats()["requests"] == 0
    assert "CAPI Key" not in world.rows()[0]  # no pass ran


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"row": 1}, "row"),
        ({"row": "two"}, "row"),
        ({"at": "2026-11-26T10:15:00"}, "at"),
        ({"at": "yesterday"}, "at"),
        ({"new_value": None}, "new_value"),
        ({"tab": 5}, "tab"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_edit_body_is_refused_with_400_naming_the_field(
    idle_world: World, change: dict[str, Any], field: str
) -> None:
    world = idle_world
    client = make_app(world).test_client()
    body = {**edit_body(2, "", "New", world.now), **change}

    response = client.post("/api/edits", json=body, headers=AUTH)

    error = assert_error(response, 400, "invalid_request")
    assert error["message"].startswith(field), error["message"]
    assert world.meta_stats()["requests"] == 0


def test_sync_body_must_be_a_json_object(idle_world: World) -> None:
    world = idle_world
    client = make_app(world).test_client()

    not_json = client.post("/api/sync", data="spreadsheet_id=x", headers=AUTH)
    a_list = client.post("/api/sync", json=[WORLD_SHEET], headers=AUTH)
    bad_type = client.post(
        "/api/sync", json={"spreadsheet_id": WORLD_SHEET, "dry_run": "perhaps"}, headers=AUTH
    )

    assert_error(not_json, 400, "invalid_request")
    assert_error(a_list, 400, "invalid_request")
    assert assert_error(bad_type, 400, "invalid_request")["message"].startswith("dry_run")
    assert world.meta_stats()["requests"] == 0


def test_unknown_spreadsheet_is_404_with_credentials_and_401_without(idle_world: World) -> None:
    world = idle_world
    client = make_app(world).test_client()
    body = {"spreadsheet_id": "1SomeoneElsesSheet"}

    with_secret = client.post("/api/sync", json=body, headers=AUTH)
    without = client.post("/api/sync", json=body)
    wrong_tab = client.post(
        "/api/sync", json={"spreadsheet_id": WORLD_SHEET, "tab": "Archive"}, headers=AUTH
    )
    status_unknown = client.get("/api/status?spreadsheet_id=1SomeoneElsesSheet", headers=AUTH)

    assert "1SomeoneElsesSheet" in assert_error(with_secret, 404, "unknown_spreadsheet")["message"]
    assert_error(without, 401, "unauthorized")
    assert_error(wrong_tab, 404, "unknown_spreadsheet")
    assert_error(status_unknown, 404, "unknown_spreadsheet")


def test_oversized_body_is_refused_with_413(idle_world: World) -> None:
    world = idle_world
    client = make_app(world).test_client()
    limit = world.config.server.max_body_bytes
    body = {"spreadsheet_id": WORLD_SHEET, "keys": ["L" + "0" * 15] * (limit // 16)}
    assert len(json.dumps(body)) > limit

    response = client.post("/api/sync", json=body, headers=AUTH)

    assert_error(response, 413)
    assert world.meta_stats()["requests"] == 0


def test_unknown_route_answers_the_json_error_shape(idle_world: World) -> None:
    world = idle_world
    client = make_app(world).test_client()

    assert_error(client.get("/api/nothing-here", headers=AUTH), 404)
    assert_error(client.get("/api/sync", headers=AUTH), 405)


def test_status_reports_counts_last_sync_columns_and_the_custom_event(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now), lead_row(2, "New", now=world_now)])
    client = make_app(world).test_client()
    client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)

    response = client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH)

    assert response.status_code == 200
    body = response.get_json()
    assert body["counts"] == {"sent": 3}
    assert body["last_sync"]["counts"]["sent"] == 2
    assert body["last_sync"]["error"] is None
    assert body["columns"]["status"] == "Lead Status"
    assert any("QualifiedLead" in w and "custom event" in w for w in body["warnings"])


def test_healthz_answers_without_credentials(idle_world: World) -> None:
    world = idle_world
    client = make_app(world).test_client()

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"ok": True}


# -- start-up ------------------------------------------------------------------------------


def test_backend_built_from_config_reads_the_token_from_the_named_variable(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    app = create_app(
        world.config,
        environ={"META_CAPI_TOKEN": WORLD_TOKEN, "SHEET_BRIDGE_SECRET": WORLD_SECRET},
    )

    response = app.test_client().post(
        "/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    assert names_at_meta(world, 1) == ["Lead"]


def test_backend_without_the_meta_token_does_not_start(idle_world: World) -> None:
    with pytest.raises(StartupError, match="META_CAPI_TOKEN"):
        create_app(idle_world.config, environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})


def test_backend_nobody_could_call_does_not_start(idle_world: World) -> None:
    with pytest.raises(StartupError, match="SHEET_BRIDGE_SECRET"):
        create_app(idle_world.config, environ={"META_CAPI_TOKEN": WORLD_TOKEN})


def test_backend_without_a_config_says_which_variable_to_set(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """create_app() with nothing is gunicorn's entry point: one line, and status 4 ("App
    failed to load") so gunicorn stops instead of re-spawning workers."""
    with pytest.raises(SystemExit) as exited:
        create_app(environ={})

    assert exited.value.code == 4
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "SHEET_BRIDGE_CONFIG" in said, said


# -- Google ID tokens, verified for real against a local certificate endpoint ---------------


def id_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    return google_id_token(key, KID, **claims)


@pytest.fixture(scope="module")
def id_world(
    tmp_path_factory: pytest.TempPathFactory, make_httpserver: HTTPServer
) -> Iterator[World]:
    yield from running_world(
        tmp_path_factory.mktemp("id-token"),
        server={
            "shared_secret_env": None,
            "id_token_audience": AUDIENCE,
            "id_token_certs_url": make_httpserver.url_for("/certs"),
            "allowed_domain": "example.com",
        },
    )


@pytest.fixture
def id_token_client(id_world: World, httpserver: HTTPServer, google_key: Any) -> FlaskClient:
    """A backend that accepts only Google ID tokens, whose signing certificate is served on
    loopback the way https://www.googleapis.com/oauth2/v1/certs serves Google's."""
    httpserver.expect_request("/certs").respond_with_data(
        json.dumps({KID: certificate_pem(google_key)}), content_type="application/json"
    )
    return make_app(id_world, environ={}).test_client()


def status_with(client: FlaskClient, token: str) -> Any:
    return client.get(
        f"/api/status?spreadsheet_id={WORLD_SHEET}", headers={"Authorization": f"Bearer {token}"}
    )


def test_valid_google_id_token_is_accepted(id_token_client: FlaskClient, google_key: Any) -> None:
    response = status_with(id_token_client, id_token(google_key))

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["columns"]["status"] == "Lead Status"


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600},
        {"aud": "someone-else.apps.googleusercontent.com"},
        {"iss": "https://evil.example.com"},
    ],
    ids=["expired", "wrong-audience", "not-google"],
)
def test_bad_google_id_token_is_refused_with_401(
    id_token_client: FlaskClient, google_key: Any, claims: dict[str, Any]
) -> None:
    response = status_with(id_token_client, id_token(google_key, **claims))

    assert_error(response, 401, "unauthorized")


def test_forged_id_token_signed_by_another_key_is_refused_with_401(
    id_token_client: FlaskClient, forger_key: Any
) -> None:
    response = status_with(id_token_client, id_token(forger_key))

    assert_error(response, 401, "unauthorized")


def test_id_token_with_an_email_outside_the_allowed_domain_is_403(
    id_token_client: FlaskClient, google_key: Any
) -> None:
    outsider = status_with(id_token_client, id_token(google_key, email="eve@example.org"))
    lookalike = status_with(id_token_client, id_token(google_key, email="eve@notexample.com"))
    unverified = status_with(id_token_client, id_token(google_key, email_verified=False))

    assert_error(outsider, 403, "forbidden")
    assert_error(lookalike, 403, "forbidden")
    assert_error(unverified, 403, "forbidden")


# -- no leaks ------------------------------------------------------------------------------


def test_meta_token_never_appears_in_responses_logs_sheet_or_ledger(
    make_world: MakeWorld, world_now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = make_world(
        [
            lead_row(1, "Customer", now=world_now),
            lead_row(2, "New", now=world_now, lead_id="120214563987456"),
            lead_row(3, "SQL", now=world_now, created_hours=24 * 12, changed_hours=24 * 9),
        ]
    )
    client = make_app(world).test_client()
    sync = {"spreadsheet_id": WORLD_SHEET}
    bodies: list[str] = []

    world.meta_fault("token_expired", count=5)
    failed = client.post("/api/sync", json=sync, headers=AUTH)
    world.meta_fault("500", count=50)
    bodies.append(client.post("/api/sync", json=sync, headers=AUTH).get_data(as_text=True))
    world.meta_fault("500", count=0)
    bodies += [
        failed.get_data(as_text=True),
        client.post("/api/sync", json=sync, headers=AUTH).get_data(as_text=True),
        client.post(
            "/api/edits", json=edit_body(3, "New", "New", world_now), headers=AUTH
        ).get_data(as_text=True),
        client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH).get_data(
            as_text=True
        ),
        client.post("/api/sync", json=sync).get_data(as_text=True),
    ]

    assert failed.get_json()["failed"] == 2  # the pass with a failure did run
    assert len(world.meta_events()) == 6  # and the last one delivered
    for body in bodies:
        assert WORLD_TOKEN not in body
        assert WORLD_SECRET not in body
    assert caplog.records, "nothing was logged: the check would prove nothing"
    assert WORLD_TOKEN not in caplog.text
    for record in caplog.records:
        assert WORLD_TOKEN not in record.getMessage()
    assert WORLD_TOKEN.encode() not in world.data_path.read_bytes()
    stored = stored_text(world.config.ledger_location({}))
    assert stored  # the ledger holds what the passes recorded
    assert WORLD_TOKEN.encode() not in stored
