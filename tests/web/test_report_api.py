"""GET /api/report: the funnel report and its chart for the sidebar, behind the same auth."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime

from flask.testing import FlaskClient

from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_SECRET, WORLD_SHEET, World, lead_row

AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}


def _client(world: World) -> FlaskClient:
    app = create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})
    return app.test_client()


def test_report_after_a_sync_counts_what_was_sent_and_carries_an_svg(
    make_world: Callable[..., World], world_now: datetime
) -> None:
    world = make_world(
        [
            lead_row(1, "New", now=world_now),
            lead_row(2, "New", now=world_now),
            lead_row(3, "MQL", now=world_now),
            lead_row(4, "Disqualified", now=world_now),
        ]
    )
    world.bridge().sync()
    response = _client(world).get(f"/api/report?spreadsheet_id={WORLD_SHEET}", headers=AUTH)
    assert response.status_code == 200, response.get_json()
    data = response.get_json()
    stages = {s["event"]: s for s in data["stages"]}
    assert list(stages) == ["Lead", "QualifiedLead", "Schedule", "StartTrial", "Purchase"]
    assert sum(stages["Lead"]["weekly"]) == 3
    assert sum(stages["QualifiedLead"]["weekly"]) == 1
    assert stages["Lead"]["conversion_to_next"] == round(1 / 3, 4)
    assert data["other_sent"] == {"Disqualified": 1}
    assert data["sales_funnel"]["other"] == ["Disqualified"]
    assert {a["topic"] for a in data["advice"]} == {
        "optimise",
        "values",
        "conversion_leads",
        "sales_funnel",
    }
    svg = ET.fromstring(data["svg"])
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"


def test_report_needs_the_callers_credentials(make_world: Callable[..., World]) -> None:
    client = _client(make_world([]))
    response = client.get(f"/api/report?spreadsheet_id={WORLD_SHEET}")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_report_for_an_unknown_sheet_is_404(make_world: Callable[..., World]) -> None:
    client = _client(make_world([]))
    response = client.get("/api/report?spreadsheet_id=nope", headers=AUTH)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "unknown_spreadsheet"
