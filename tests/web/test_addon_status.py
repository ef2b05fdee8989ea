"""What the add-on's sidebar shows everyone in a shared spreadsheet (issue 20, item 5), through
the real Flask app, the Sheets emulator and the fake Meta: Meta's verdict on the token comes
from the last pass that called Meta, hourly passes that stopped coming are an alert (the
trigger runs as its owner: https://developers.google.com/apps-script/guides/triggers/installable),
lists are capped for google.script.run, and a token for another audience says which."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask.testing import FlaskClient

from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_SECRET, WORLD_SHEET, World, lead_row
from tests.google_tokens import AUDIENCE, forged_shape

MakeWorld = Callable[..., World]
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}
ENV = {"SHEET_BRIDGE_SECRET": WORLD_SECRET}


def client_for(world: World, **bridge_kw: Any) -> FlaskClient:
    return create_app(bridges=[world.bridge(**bridge_kw)], environ=ENV).test_client()


def status(client: FlaskClient) -> dict[str, Any]:
    answer = client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body: dict[str, Any] = answer.get_json()
    return body


def alert_codes(client: FlaskClient) -> list[str]:
    return [a["code"] for a in status(client)["alerts"]]


def edit(client: FlaskClient, world: World, row: int, status_now: str) -> dict[str, Any]:
    """One status edit as the add-on sends it: the row, its status now and its CAPI Key."""
    rows = world.rows()
    key = rows[row - 1][rows[0].index("CAPI Key")]
    body = {
        "spreadsheet_id": WORLD_SHEET,
        "tab": "Leads",
        "at": world.now.isoformat(),
        "rows": [{"row": row, "status": status_now, "key": key}],
    }
    answer = client.post("/api/edits", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    result: dict[str, Any] = answer.get_json()
    return result


def test_a_rejected_token_stays_an_alert_after_an_edit_that_changes_nothing(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now), lead_row(2, "New", now=world_now)])
    client = client_for(world)
    first = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    assert first.status_code == 200, first.get_data(as_text=True)
    world.meta_fault("token_expired", count=5)
    world.edit_cells([(2, "Lead Status", "SQL")])
    edit(client, world, 2, "SQL")  # Meta refuses the token (Graph error 190)
    assert alert_codes(client) == ["token_rejected"]
    requests = world.meta_stats()["requests"]

    retyped = edit(client, world, 3, "New")  # nothing changed: no call to Meta

    assert retyped["changed"] == [] and world.meta_stats()["requests"] == requests
    assert alert_codes(client) == ["token_rejected"]
    assert any("code 190" in w for w in status(client)["warnings"])


def test_hourly_passes_that_stopped_coming_are_an_alert_with_who_can_fix_it(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([])
    clock = [world_now - timedelta(hours=3)]
    client = client_for(world, clock=lambda: clock[0])
    hourly = {"spreadsheet_id": WORLD_SHEET, "trigger": "hourly", "wait": 5}
    assert client.post("/api/sync", json=hourly, headers=AUTH).status_code == 200
    clock[0] = world_now - timedelta(hours=1)
    assert alert_codes(client) == [], "2 hours after the last hourly pass is not yet an alert"
    # Sync now, edits and previews do not stand in for the schedule.
    client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)

    clock[0] = world_now
    alerts = status(client)["alerts"]

    assert [a["code"] for a in alerts] == ["hourly_stopped"]
    assert "No hourly sync has run for 3 hours" in alerts[0]["message"]
    assert "run as the person who installed them" in alerts[0]["message"]
    assert "Take over" in alerts[0]["fix"]
    assert client.post("/api/sync", json=hourly, headers=AUTH).status_code == 200
    assert alert_codes(client) == []


def test_a_bridge_that_never_had_an_hourly_pass_has_no_such_alert(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([])
    client = client_for(world, clock=lambda: world_now + timedelta(days=3))
    client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    assert alert_codes(client) == []


def test_rows_nearing_the_window_are_capped_for_the_sidebar_with_their_total(
    make_world: MakeWorld, world_now: datetime
) -> None:
    rows = [
        lead_row(i, "SQL", now=world_now, created_hours=170, changed_hours=160) for i in range(70)
    ]
    world = make_world(rows)
    body = status(client_for(world))
    assert body["nearing_total"] == 140  # QualifiedLead and Schedule of each lead
    assert len(body["nearing_window"]) == 50
    assert body["attention_total"] == len(body["attention"])


def test_an_id_token_for_another_audience_says_the_audience_it_carries(
    make_world: MakeWorld,
) -> None:
    world = make_world([], server={"id_token_audience": AUDIENCE, "allowed_domain": "example.com"})
    client = client_for(world)
    theirs = "98765-their-script.apps.googleusercontent.com"
    token = forged_shape({"alg": "RS256", "kid": "k1"}, aud=theirs)

    answer = client.get(
        f"/api/status?spreadsheet_id={WORLD_SHEET}", headers={"Authorization": f"Bearer {token}"}
    )

    assert answer.status_code == 401
    message = answer.get_json()["error"]["message"]
    assert theirs in message and "id_token_audience" in message
    assert AUDIENCE not in message, "the backend's own audience is not told to strangers"
    odd = forged_shape({"alg": "RS256", "kid": "k1"}, aud="<script>x</script>")
    words = client.get(
        f"/api/status?spreadsheet_id={WORLD_SHEET}", headers={"Authorization": f"Bearer {odd}"}
    ).get_json()["error"]["message"]
    assert "<script>" not in words and "another audience" in words
