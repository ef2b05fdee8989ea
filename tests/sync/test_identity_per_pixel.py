"""One lead, one identity per pixel (issue 21, item 4): the event id and the ledger's dedup key
are per (pixel, lead identity, event). Meta deduplicates only on (event_name, event_id), and only
within 48 hours
(https://developers.facebook.com/docs/marketing-api/conversions-api/deduplicate-pixel-and-server-events),
so a lead copied into a second tab of the same pixel, or a row deleted and typed again, must not
reach Meta a second time under new ids. Through the emulator, passes and the fake Meta, on both
ledgers; with a ledger of schema 3 migrated to 5 that sends nothing afterwards."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from sheet_bridge.checks import run_checks
from sheet_bridge.config import is_ledger_url
from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from sheet_bridge.sheets.client import SheetsClient, clear_metadata_cache
from sheet_bridge.sync.ledger import SheetTab, open_ledger
from sheet_bridge.sync.plan import event_id_for
from tests.conftest import (
    WORLD_HEADER,
    WORLD_SHEET,
    WORLD_TOKEN,
    WORLD_TZ,
    World,
    lead_row,
    world_config,
)

PIXEL = "333333333333333"
LEAD_IDS = ["100000000000001", "100000000000002", "100000000000003"]


@dataclass
class SamePixel:
    """Tabs "Brand A" and "Brand B" of one spreadsheet, both bridged to PIXEL, one ledger."""

    a: World
    b: World

    def column(self, tab: str, header: str) -> list[object]:
        data = httpx.get(self.a.sheets_url + "/_emulator/data", timeout=10).json()
        rows = data["spreadsheets"][WORLD_SHEET]["sheets"][tab]
        col = rows[0].index(header)
        return [r[col] if col < len(r) else "" for r in rows[1:]]

    def edit(self, world: World, cells: list[tuple[int, str, object]]) -> None:
        """Change cells of `world`'s tab the way a person would (row number, header, value)."""
        SheetsClient(world.config.sheets).write_cells(
            [(r, WORLD_HEADER.index(h), v) for r, h, v in cells]
        )

    def copy_leads_to_b(self) -> None:
        """A person copies Brand A's lead columns (not the CAPI ones) into Brand B."""
        data = httpx.get(self.a.sheets_url + "/_emulator/data", timeout=10).json()
        source = data["spreadsheets"][WORLD_SHEET]["sheets"]["Brand A"]
        cells = [
            (n, col, value)
            for n, row in enumerate(source[1:], start=2)
            for col, value in enumerate(row[: len(WORLD_HEADER)])
        ]
        SheetsClient(self.b.config.sheets).write_cells(cells)


def leads(world_now: datetime, *, with_lead_ids: bool) -> list[list[object]]:
    return [
        lead_row(i + 1, status, now=world_now, lead_id=LEAD_IDS[i] if with_lead_ids else "")
        for i, status in enumerate(["New", "MQL", "SQL"])
    ]


@pytest.fixture
def same_pixel(tmp_path: Path, world_now: datetime, ledger_location: str) -> Iterator[Any]:
    servers: list[BackgroundServer] = []

    def make(rows: list[list[object]]) -> SamePixel:
        clear_metadata_cache()
        data_path = tmp_path / "sheets.json"
        sheets_data = {
            "spreadsheets": {
                WORLD_SHEET: {
                    "title": "Two tabs, one pixel",
                    "timeZone": WORLD_TZ,
                    "sheets": {
                        "Brand A": [list(WORLD_HEADER), *rows],
                        "Brand B": [list(WORLD_HEADER)],
                    },
                }
            }
        }
        data_path.write_text(json.dumps(sheets_data))
        sheets = BackgroundServer(create_emulator(data_path=data_path)).start()
        meta = BackgroundServer(
            create_fake_meta(access_token=WORLD_TOKEN, pixel_ids=[PIXEL])
        ).start()
        servers.extend([sheets, meta])

        def world(tab: str) -> World:
            config = world_config(
                tmp_path,
                sheets.url,
                meta.url,
                sheets={"tab": tab},
                meta={"pixel_id": PIXEL},
                server={"ledger": ledger_location},
            )
            return World(tmp_path, sheets.url, meta.url, data_path, config, world_now)

        return SamePixel(world("Brand A"), world("Brand B"))

    yield make
    for server in servers:
        server.stop()


def test_lead_copied_into_a_second_tab_of_the_pixel_is_not_sent_again(
    same_pixel: Any, world_now: datetime
) -> None:
    tabs = same_pixel(leads(world_now, with_lead_ids=True))
    tabs.a.bridge().sync()
    first = tabs.a.meta_events()
    assert len(first) == 6  # Lead; Lead, QualifiedLead; Lead, QualifiedLead, Schedule
    tabs.copy_leads_to_b()
    result = tabs.b.bridge().sync()

    assert tabs.a.meta_events() == first  # nothing new reached Meta
    # One id per (pixel, lead identity, event): the Leadgen ID here.
    assert {e["event_id"] for e in first} == {
        event_id_for(PIXEL, f"lead:{int(LEAD_IDS[i])}", name)
        for i, names in enumerate(
            [["Lead"], ["Lead", "QualifiedLead"], ["Lead", "QualifiedLead", "Schedule"]]
        )
        for name in names
    }

    assert result.events_sent == 0
    statuses = tabs.column("Brand B", "CAPI Status")
    assert all("has it already (sent from tab 'Brand A')" in str(s) for s in statuses), statuses
    assert "same Leadgen ID" in str(statuses[2])

    # The lead moves on in the copy: its next stage goes once, under the lead's one id, and the
    # same move in the first tab sends nothing.
    moved = [(2, "Lead Status", "MQL"), (2, "Status Changed At", first_iso(world_now))]
    tabs.edit(tabs.b, moved)
    tabs.b.bridge().sync()
    tabs.edit(tabs.a, moved)
    tabs.a.bridge().sync()
    qualified = [e for e in tabs.a.meta_events() if e["event_name"] == "QualifiedLead"]
    assert len(qualified) == 3
    assert len({e["event_id"] for e in qualified}) == 3


def first_iso(world_now: datetime) -> str:
    return world_now.replace(microsecond=0).isoformat()


def test_lead_without_leadgen_id_copied_to_another_tab_is_known_by_its_email(
    same_pixel: Any, world_now: datetime
) -> None:
    tabs = same_pixel(leads(world_now, with_lead_ids=False))
    tabs.a.bridge().sync()
    sent = tabs.a.meta_events()

    tabs.copy_leads_to_b()
    tabs.b.bridge().sync()

    assert tabs.a.meta_events() == sent
    assert tabs.column("Brand B", "CAPI Key") == tabs.column("Brand A", "CAPI Key")


def test_row_deleted_and_typed_again_gets_no_second_lead(
    make_world: Any, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now), lead_row(2, "New", now=world_now)])
    world.bridge().sync()
    key = world.column("CAPI Key")[0]
    assert len(world.meta_events()) == 2

    # Row 2 deleted (every cell, the CAPI ones too) and typed again with Created At corrected.
    retyped = lead_row(1, "New", now=world_now, created_hours=29.0)
    header = world.rows()[0]
    world.edit_cells([(2, h, "") for h in header])
    world.edit_cells([(2, h, v) for h, v in zip(WORLD_HEADER, retyped, strict=True)])
    world.bridge().sync()

    assert len(world.meta_events()) == 2  # no second Lead
    assert world.column("CAPI Key")[0] == key  # the row has its lead's key back


def test_check_warns_when_two_bridges_share_a_pixel(same_pixel: Any, world_now: datetime) -> None:
    tabs = same_pixel(leads(world_now, with_lead_ids=True))
    tabs.a.bridge().sync()
    tabs.b.bridge().sync()

    report = run_checks(tabs.a.config, environ={})

    warning = next(t for t in report.warnings() if "share pixel" in t)
    assert "'Brand B'" in warning and "one identity per pixel" in warning


def test_a_schema_3_ledger_migrates_to_5_and_sends_nothing_again(
    same_pixel: Any, world_now: datetime, ledger_location: str
) -> None:
    tabs = same_pixel(leads(world_now, with_lead_ids=True))
    tabs.a.bridge().sync()
    sent = tabs.a.meta_events()
    make_schema_3(ledger_location)

    tabs.copy_leads_to_b()
    b = tabs.b.bridge().sync()  # the first to open the ledger: it migrates it
    a = tabs.a.bridge().sync()

    assert tabs.a.meta_events() == sent
    assert b.events_sent == 0 and a.events_sent == 0
    ledger = open_ledger(ledger_location)
    try:
        assert ledger.tabs_of_pixel(PIXEL) == [
            SheetTab(WORLD_SHEET, "Brand A"),
            SheetTab(WORLD_SHEET, "Brand B"),
        ]
    finally:
        ledger.close()


def make_schema_3(location: str) -> None:
    """Take the ledger back to schema 3 exactly: schema 5 only added tab_pixels and indexes
    (the identity tables and their triggers in place of indexes on user_data)."""
    drop = [
        "DROP TABLE tab_pixels",
        "DROP INDEX events_lead_key",
        "DROP TABLE identity_index",
        "DROP TABLE identity_pending",
        "UPDATE ledger_info SET value = '3' WHERE key = 'schema_version'",
    ]
    if is_ledger_url(location):
        drop += [
            "DROP TRIGGER events_insert_notes_identity ON events",
            "DROP TRIGGER events_update_notes_identity ON events",
        ]
        with psycopg.connect(location) as conn:
            for sql in drop:
                conn.execute(sql)
        return
    drop += [
        "DROP TRIGGER events_insert_pends_identity",
        "DROP TRIGGER events_update_pends_identity",
    ]
    db = sqlite3.connect(location)
    for sql in drop:
        db.execute(sql)
    db.commit()
    db.close()


def test_two_rows_of_one_lead_in_a_pass_send_once(make_world: Any, world_now: datetime) -> None:
    """The same Leadgen ID typed on two rows (another e-mail, so another CAPI Key): one lead."""
    world = make_world(
        [
            lead_row(1, "New", now=world_now, lead_id=LEAD_IDS[0]),
            lead_row(2, "New", now=world_now, lead_id=LEAD_IDS[0]),
        ]
    )

    world.bridge().sync()

    assert [e["event_name"] for e in world.meta_events()] == ["Lead"]
    assert "has it already (row 2)" in str(world.column("CAPI Status")[1])


def test_a_pass_leaves_its_leads_indexed_by_identity(
    same_pixel: Any, world_now: datetime, ledger_location: str
) -> None:
    """Once a pass has sent, the identities it wrote are in the ledger's identity index, none
    left noted (sync/run.py _index_identities; docs/ledger.md): the next pass's searches read
    the index, not every event the first pass wrote."""
    from tests.ledger_backends import run_sql

    tabs = same_pixel(leads(world_now, with_lead_ids=True))
    assert tabs.a.bridge().sync().events_sent > 0

    assert run_sql(ledger_location, "SELECT COUNT(*) FROM identity_pending") == [(0,)]
    fields = run_sql(ledger_location, "SELECT DISTINCT field FROM identity_index ORDER BY 1")
    assert fields == [("em",), ("lead_id",)]  # these leads have no phone
