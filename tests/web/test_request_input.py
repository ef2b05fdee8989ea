"""What a request may carry (issue 12, finding 3): an edit time the server's clock cannot
believe is refused before anything is stored, so it cannot poison later passes; JSON types
are taken as written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_SECRET, WORLD_SHEET, World, lead_row
from tests.ledger_backends import run_sql

MakeWorld = Callable[..., World]
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}


def client_for(world: World) -> Any:
    app = create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})
    return app.test_client()


def edit(at: str, **change: Any) -> dict[str, Any]:
    return {
        "spreadsheet_id": WORLD_SHEET,
        "tab": "Leads",
        "row": 2,
        "old_value": "New",
        "new_value": "MQL",
        "at": at,
        **change,
    }


def stored_edits(world: World) -> int:
    ((count,),) = run_sql(world.config.ledger_location({}), "SELECT COUNT(*) FROM pending_edits")
    return int(count)


@pytest.mark.parametrize(
    "at",
    [
        "0001-01-01T00:00:00+14:00",  # cannot even be moved to UTC
        "2001-05-01T10:00:00+00:00",
        "-63 days",
        "+10 minutes",
    ],
)
def test_an_edit_time_the_server_clock_cannot_believe_is_400_and_poisons_nothing(
    make_world: MakeWorld, world_now: datetime, at: str
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = client_for(world)
    relative = {"-63 days": -timedelta(days=63), "+10 minutes": timedelta(minutes=10)}
    sent_at = (world.now + relative[at]).isoformat() if at in relative else at

    refused = client.post("/api/edits", json=edit(sent_at), headers=AUTH)
    kept = stored_edits(world)
    later = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)

    assert refused.status_code == 400, refused.get_data(as_text=True)
    error = refused.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("at: ")
    assert "the last 62 days up to 5 minutes ahead of the server's clock" in error["message"]
    assert (world.now - timedelta(days=62)).strftime("%Y-%m-%dT%H:%M") in error["message"]
    assert kept == 0
    assert later.status_code == 200, later.get_data(as_text=True)  # the sheet still syncs
    assert later.get_json()["sent"] == 1


def test_edit_times_inside_the_range_are_taken(make_world: MakeWorld, world_now: datetime) -> None:
    """Both ends of the range, with a little clock skew ahead: the 400s above are the range."""
    world = make_world([lead_row(1, "New", now=world_now)])
    client = client_for(world)

    recent = client.post(
        "/api/edits", json=edit((world.now + timedelta(minutes=4)).isoformat()), headers=AUTH
    )
    old = client.post(
        "/api/edits", json=edit((world.now - timedelta(days=61)).isoformat()), headers=AUTH
    )

    assert recent.status_code == 200, recent.get_data(as_text=True)
    assert old.status_code == 200, old.get_data(as_text=True)


@pytest.mark.parametrize(
    ("route", "change", "field"),
    [
        ("/api/sync", {"dry_run": "yes"}, "dry_run"),
        ("/api/sync", {"dry_run": 1}, "dry_run"),
        ("/api/sync", {"dry_run": "false"}, "dry_run"),
        ("/api/sync", {"keys": "Lead1"}, "keys"),
        ("/api/edits", {"row": "2"}, "row"),
        ("/api/edits", {"row": 2.0}, "row"),
        ("/api/edits", {"new_value": 5}, "new_value"),
    ],
)
def test_body_fields_must_have_their_json_type(
    make_world: MakeWorld, world_now: datetime, route: str, change: dict[str, Any], field: str
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = client_for(world)
    base = edit(world.now.isoformat()) if route == "/api/edits" else {"spreadsheet_id": WORLD_SHEET}

    response = client.post(route, json={**base, **change}, headers=AUTH)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["message"].startswith(field)
    assert world.meta_stats()["requests"] == 0
    assert stored_edits(world) == 0
