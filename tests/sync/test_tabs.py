"""Two tabs of one spreadsheet, two pixels, one shared ledger file (README: one config per tab):
a lead is (spreadsheet, tab, lead key), so leads copied from one tab into the other are new
leads of the other pixel, and neither tab's report, status or audience shows the other's
(issue 12, finding 1)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from sheet_bridge.cli import main
from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from sheet_bridge.sheets.client import SheetsClient, clear_metadata_cache
from sheet_bridge.web.app import create_app
from tests.conftest import (
    WORLD_HEADER,
    WORLD_SHEET,
    WORLD_TOKEN,
    WORLD_TZ,
    World,
    lead_row,
    world_config,
)
from tests.faults.test_faults import write_toml

PIXEL_A, PIXEL_B = "111111111111111", "222222222222222"
# Long enough for any secret rule the server applies (≥ 32 characters).
SECRET_A = "tab-a-secret-0123456789abcdef0123456789"
SECRET_B = "tab-b-secret-0123456789abcdef0123456789"


@dataclass
class TwoTabs:
    a: World
    b: World

    def tab(self, name: str) -> list[list[object]]:
        data = httpx.get(self.a.sheets_url + "/_emulator/data", timeout=10).json()
        rows: list[list[object]] = data["spreadsheets"][WORLD_SHEET]["sheets"][name]
        return rows

    def column(self, tab: str, header: str) -> list[object]:
        rows = self.tab(tab)
        col = rows[0].index(header)
        return [r[col] if col < len(r) else "" for r in rows[1:]]

    def events_by_pixel(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {PIXEL_A: [], PIXEL_B: []}
        for e in self.a.meta_events():
            out[e["pixel_id"]].append(e)
        return out


@pytest.fixture
def two_tabs(tmp_path: Path, world_now: datetime, ledger_location: str) -> Iterator[TwoTabs]:
    """Tab "Brand A" with four leads (one disqualified), tab "Brand B" with the header only;
    configs a (pixel A) and b (pixel B) share one ledger (a file, or a PostgreSQL database)."""
    clear_metadata_cache()
    rows = [
        lead_row(1, "New", now=world_now),
        lead_row(2, "MQL", now=world_now),
        lead_row(3, "SQL", now=world_now),
        lead_row(4, "Disqualified", now=world_now),
    ]
    data_path = tmp_path / "sheets.json"
    sheets_data = {
        "spreadsheets": {
            WORLD_SHEET: {
                "title": "Two brands",
                "timeZone": WORLD_TZ,
                "sheets": {"Brand A": [list(WORLD_HEADER), *rows], "Brand B": [list(WORLD_HEADER)]},
            }
        }
    }
    data_path.write_text(json.dumps(sheets_data))
    sheets = BackgroundServer(create_emulator(data_path=data_path)).start()
    meta = BackgroundServer(
        create_fake_meta(access_token=WORLD_TOKEN, pixel_ids=[PIXEL_A, PIXEL_B])
    ).start()

    def world(tab: str, pixel: str, secret_env: str) -> World:
        config = world_config(
            tmp_path,
            sheets.url,
            meta.url,
            sheets={"tab": tab},
            meta={"pixel_id": pixel},
            server={"shared_secret_env": secret_env, "ledger": ledger_location},
        )
        return World(tmp_path, sheets.url, meta.url, data_path, config, world_now)

    try:
        yield TwoTabs(world("Brand A", PIXEL_A, "SECRET_A"), world("Brand B", PIXEL_B, "SECRET_B"))
    finally:
        sheets.stop()
        meta.stop()


def copy_leads(tabs: TwoTabs, rows: list[int]) -> None:
    """A person copies rows of Brand A (the lead columns, not the CAPI ones) into Brand B."""
    source = tabs.tab("Brand A")
    cells = [
        (i + 2, col, value)
        for i, r in enumerate(rows)
        for col, value in enumerate(source[r - 1][: len(WORLD_HEADER)])
    ]
    SheetsClient(tabs.b.config.sheets).write_cells(cells)


def test_leads_copied_into_a_second_tab_reach_its_own_pixel_and_each_pixel_has_its_own(
    two_tabs: TwoTabs,
) -> None:
    a = two_tabs.a.bridge()
    first = a.sync()
    assert first.events_sent == 1 + 2 + 3 + 1  # New, MQL, SQL (funnel backfill), Disqualified
    copy_leads(two_tabs, [2, 3, 4])  # leads 1, 2, 3 of Brand A

    second = two_tabs.b.bridge().sync()

    assert second.counts["already_sent"] == 0
    assert second.events_sent == 1 + 2 + 3
    by_pixel = two_tabs.events_by_pixel()
    got = {
        p: Counter((e["user_data"]["em"], e["event_name"]) for e in by_pixel[p]) for p in by_pixel
    }
    assert all(n == 1 for counts in got.values() for n in counts.values())  # each once
    a_leads = {e["user_data"]["em"] for e in by_pixel[PIXEL_A]}
    b_leads = {e["user_data"]["em"] for e in by_pixel[PIXEL_B]}
    assert len(a_leads) == 4 and len(b_leads) == 3 and b_leads < a_leads
    assert {k for k in got[PIXEL_B] if k[0] in b_leads} == {
        k for k in got[PIXEL_A] if k[0] in b_leads
    }  # the same leads, the same stages, once more at their own pixel
    ids_a = {e["event_id"] for e in by_pixel[PIXEL_A]}
    assert not ids_a & {e["event_id"] for e in by_pixel[PIXEL_B]}
    assert all(str(s).startswith("Sent: ") for s in two_tabs.column("Brand B", "CAPI Status"))
    assert (
        two_tabs.column("Brand B", "CAPI Event ID")[0]
        != two_tabs.column("Brand A", "CAPI Event ID")[0]
    )

    # Every later pass of either tab sends nothing more.
    assert a.sync().events_sent == two_tabs.b.bridge().sync().events_sent == 0
    assert len(two_tabs.a.meta_events()) == 7 + 6


def test_second_tab_sees_only_its_own_status_report_and_audience(
    two_tabs: TwoTabs, tmp_path: Path
) -> None:
    bridge_a, bridge_b = two_tabs.a.bridge(), two_tabs.b.bridge()
    bridge_a.sync()
    copy_leads(two_tabs, [2])  # lead 1 (New) only
    bridge_b.sync()
    app = create_app(
        bridges=[bridge_a, bridge_b], environ={"SECRET_A": SECRET_A, "SECRET_B": SECRET_B}
    )
    client = app.test_client()
    as_b = {"Authorization": f"Bearer {SECRET_B}"}
    query = f"spreadsheet_id={WORLD_SHEET}&tab=Brand B"

    status = client.get(f"/api/status?{query}", headers=as_b).get_json()
    report = client.get(f"/api/report?{query}", headers=as_b).get_json()

    assert status["counts"] == {"sent": 1}
    assert status["last_sync"]["tab"] == "Brand B"
    assert report["freshness"]["sent"] == 1
    assert report["other_sent"] == {"Disqualified": 0}
    report_a = client.get(
        f"/api/report?spreadsheet_id={WORLD_SHEET}&tab=Brand A",
        headers={"Authorization": f"Bearer {SECRET_A}"},
    ).get_json()
    assert report_a["freshness"]["sent"] == 7
    assert report_a["other_sent"] == {"Disqualified": 1}

    # `sheet-bridge audience --config b.toml`: B's disqualified leads only (none).
    for world, name in ((two_tabs.a, "a.toml"), (two_tabs.b, "b.toml")):
        write_toml(tmp_path / name, world)
    env = {"SHEET_BRIDGE_LEDGER": None}
    runner = CliRunner()
    out_b, out_a = tmp_path / "b.csv", tmp_path / "a.csv"
    done_b = runner.invoke(
        main, ["audience", "--config", str(tmp_path / "b.toml"), "--out", str(out_b)], env=env
    )
    done_a = runner.invoke(
        main, ["audience", "--config", str(tmp_path / "a.toml"), "--out", str(out_a)], env=env
    )

    assert done_b.exit_code == 0 and done_a.exit_code == 0, done_b.output + done_a.output
    assert "0 lead(s) found" in done_b.output
    assert "1 lead(s) found" in done_a.output
    assert len(out_b.read_text().splitlines()) <= 1  # the header at most
    assert len(out_a.read_text().splitlines()) == 2
    assert os.stat(out_a).st_mode & 0o777 == 0o600  # unsalted hashes: owner only
    done = runner.invoke(main, ["report", "--config", str(tmp_path / "b.toml"), "--json"], env=env)
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["freshness"]["sent"] == 1
