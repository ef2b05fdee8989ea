"""No cell can stop a tab (issue 21): each column fed the worst values a sheet (or a script
writing to it) can hold; the row holding one is invalid or loses that field, named, and every
other row still goes. Created At = 1e308 used to raise OverflowError out of every sync, status
and adopt (a 500)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from flask import Flask

from sheet_bridge.sync.adopt import adopt_sheet
from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_HEADER, WORLD_SECRET, World, iso, lead_row
from tests.meta.test_values import COLUMNS, HEADER, events_of, row

MakeWorld = Callable[..., World]
# Google caps a cell at 50,000 characters; a script or an import may still hand the API more,
# and nothing here may depend on that cap.
BIG = "1" * 10_000_000
CONTROL = "\x00\x07\x1b[31m\u202e\u200b"
WORST: list[object] = [1e308, -1e308, "NaN", BIG, CONTROL]
WORST_IDS = ["1e308", "-1e308", "NaN", "10MB", "control"]
# The columns a worst value goes into: every configured one, and the bridge's own key.
TARGETS = [*HEADER, "CAPI Key"]
STATUS_WORDS = ("Sent:", "Invalid:", "Skipped:", "Baseline:", "Expired:")


def worst_rows(now: datetime, value: object) -> tuple[list[list[object]], int]:
    """Two clean leads at Customer (rows 2 and 3), then one lead per target column holding
    `value` there; the number of clean leads."""
    rows = [row(1, "Customer", now=now), row(2, "Customer", now=now)]
    for n, header in enumerate(TARGETS):
        cells = [*row(10 + n, "New", now=now), ""]  # the last cell: CAPI Key
        cells[TARGETS.index(header)] = value
        rows.append(cells)
    return rows, 2


@pytest.mark.parametrize("value", WORST, ids=WORST_IDS)
def test_the_worst_value_in_any_column_stops_no_other_row(
    value: object, make_world: MakeWorld, world_now: datetime
) -> None:
    rows, clean = worst_rows(world_now, value)
    world = make_world(rows, header=[*HEADER, "CAPI Key"], columns=COLUMNS)

    result = world.bridge().sync()

    for i in range(1, clean + 1):  # the clean leads went, all five stages
        assert len(events_of(world, i)) == 5, i
    sheet = world.rows()  # once: the tab may hold 150 MB
    status_col, key_col = sheet[0].index("CAPI Status"), sheet[0].index("CAPI Key")
    statuses = [r[status_col] for r in sheet[1:]]
    assert len(result.rows) == len(rows)
    for n, status in enumerate(statuses):
        assert isinstance(status, str) and status.startswith(STATUS_WORDS), (n, status[:200])
        assert status.isprintable() and len(status) <= 2_000, (n, status[:200])
    stats = world.meta_stats()
    assert stats["rejections"] == 0, "an event Meta's rules refuse was sent"
    for event in world.meta_events():
        value_sent = event["custom_data"].get("value")
        assert value_sent is None or 0 < value_sent <= 1e12, event["custom_data"]
    keys = [r[key_col] for r in sheet[1:]]
    assert all(isinstance(k, str) and 0 < len(k) <= 64 for k in keys), "a key not ours kept"


@pytest.mark.parametrize("cell", [1e308, -1e308, 1e15, float(2**63)], ids=str)
def test_an_absurd_created_at_is_named_and_sync_status_and_adopt_answer(
    cell: float, make_world: MakeWorld, world_now: datetime
) -> None:
    bad = lead_row(2, "New", now=world_now)
    bad[WORLD_HEADER.index("Created At")] = cell
    rows = [lead_row(1, "New", now=world_now), bad]

    world = make_world(rows)
    app: Flask = create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})
    client = app.test_client()
    auth = {"Authorization": f"Bearer {WORLD_SECRET}"}
    body = {"spreadsheet_id": world.config.sheets.spreadsheet_id, "tab": "Leads"}

    synced = client.post("/api/sync", json=body, headers=auth)
    status = client.get(
        f"/api/status?spreadsheet_id={body['spreadsheet_id']}&tab=Leads", headers=auth
    )

    assert synced.status_code == 200, synced.get_data(as_text=True)[:300]
    assert status.status_code == 200, status.get_data(as_text=True)[:300]
    written = world.column("CAPI Status")
    assert written[0].startswith("Sent: Lead")
    assert written[1].startswith("Invalid:") and "Created At" in written[1]
    adopted = adopt_sheet(world.bridge())  # raised OverflowError on main too
    assert adopted.already_known == 1  # row 1's Lead, as the sync wrote it


def test_a_future_created_at_is_reported_against_created_at(
    make_world: MakeWorld, world_now: datetime
) -> None:
    future = lead_row(1, "New", now=world_now, changed_hours=None)
    future[WORLD_HEADER.index("Created At")] = iso(world_now + timedelta(days=3))
    stamped = lead_row(2, "SQL", now=world_now, changed_hours=1)
    stamped[WORLD_HEADER.index("Created At")] = iso(world_now + timedelta(days=3))
    world = make_world([future, stamped, lead_row(3, "New", now=world_now)])

    world.bridge().sync()

    first, second, clean = world.column("CAPI Status")
    for status in (first, second):
        assert status.startswith("Invalid: not sent: Created At "), status
        assert "is in the future" in status and "Status Changed At" not in status
    assert clean.startswith("Sent: Lead")
