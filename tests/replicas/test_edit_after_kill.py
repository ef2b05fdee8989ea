"""Issue 20 item 3: nothing waits for a pass that is not coming.

Two instances started as the image starts them share one ledger (SQLite file or PostgreSQL).
An edit is taken by instance A, which is SIGKILLed (master and workers) right after it
answered: the edit must still reach the fake Meta within settle_seconds + 30 s, with no
further call, from B's sweep. Then the harder case: A is SIGKILLed while its send of a due
edit holds the tab's lock and its request is at Meta; B must know the holder is dead at once
(PostgreSQL frees a dead session's advisory lock; the SQLite lease checks its holder's
process) and send the edit again, with the same event id, within the same bound.

The measured times are printed (pytest -s) for the closing note of the issue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from tests.conftest import (
    WORLD_HEADER,
    WORLD_PIXEL,
    WORLD_SECRET,
    WORLD_STAGES,
    WORLD_TOKEN,
    WORLD_TZ,
    lead_row,
)
from tests.deploy.instances import Instance, MetaGate, write_bridge_config

AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}
SHEET = "1EditAfterKillSheet00000000000000000000000"
SETTLE = 2.0
SWEEP = 1.0
BOUND = SETTLE + 30.0  # the bound: settle_seconds + 30 s
STATUS_COL = "G"  # WORLD_HEADER's Lead Status


@pytest.fixture
def servers(world_now: datetime) -> Iterator[tuple[str, MetaGate, str]]:
    rows = [lead_row(i, "New", now=world_now) for i in range(1, 4)]
    book = {"title": SHEET, "timeZone": WORLD_TZ, "sheets": {"Leads": [WORLD_HEADER, *rows]}}
    sheets = BackgroundServer(create_emulator(data={"spreadsheets": {SHEET: book}}))
    gate = MetaGate(create_fake_meta(access_token=WORLD_TOKEN, pixel_ids=[WORLD_PIXEL]))
    meta = BackgroundServer(gate)
    with sheets, meta:
        yield sheets.url, gate, meta.url
        gate.release.set()


def meta_events(meta_url: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = httpx.get(meta_url + "/_fake/events", timeout=10).json()[
        "events"
    ]
    return events


def until_at_meta(meta_url: str, count: int, since: float, bound: float) -> float:
    """Seconds from `since` (monotonic) until the fake Meta holds `count` events."""
    while len(meta_events(meta_url)) < count:
        assert time.monotonic() - since < bound + 5, "the edit did not reach Meta in time"
        time.sleep(0.1)
    return time.monotonic() - since


def type_status(sheets_url: str, row: int, status: str) -> None:
    httpx.post(
        f"{sheets_url}/v4/spreadsheets/{SHEET}/values:batchUpdate",
        json={
            "valueInputOption": "RAW",
            "data": [{"range": f"Leads!{STATUS_COL}{row}", "values": [[status]]}],
        },
        timeout=10,
    ).raise_for_status()


def edit(instance: Instance, row: int, old: str, new: str, ago: float = 0.0) -> dict[str, Any]:
    body = {
        "spreadsheet_id": SHEET,
        "tab": "Leads",
        "at": (datetime.now(UTC) - timedelta(seconds=ago)).isoformat(),
        "rows": [{"row": row, "status": new, "key": None, "old_status": old}],
    }
    answer = httpx.post(instance.url + "/api/edits", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_an_edit_reaches_meta_after_the_process_that_took_it_was_sigkilled(
    tmp_path: Path,
    ledger_location: str,
    servers: tuple[str, MetaGate, str],
    launch: Callable[[dict[str, str], str], Instance],
) -> None:
    sheets_url, gate, meta_url = servers
    folder = tmp_path / "config"
    folder.mkdir()
    write_bridge_config(
        folder,
        "bridge",
        spreadsheet_id=SHEET,
        sheets_url=sheets_url,
        meta_url=meta_url,
        pixel_id=WORLD_PIXEL,
        stages=WORLD_STAGES,
        sync={"settle_seconds": SETTLE, "sweep_seconds": SWEEP},
    )
    env = {
        "SHEET_BRIDGE_CONFIG": str(folder),
        "SHEET_BRIDGE_LEDGER": ledger_location,
        "META_CAPI_TOKEN": WORLD_TOKEN,
        "SHEET_BRIDGE_SECRET": WORLD_SECRET,
        "WEB_CONCURRENCY": "1",
    }
    a, b = launch(env, "a"), launch(env, "b")
    first = httpx.post(
        a.url + "/api/sync", json={"spreadsheet_id": SHEET, "wait": 20}, headers=AUTH, timeout=30
    )
    assert first.status_code == 200, first.text
    sent = len(meta_events(meta_url))
    assert sent == 3  # Lead for each lead

    # 1. A takes the edit, answers, and dies before it is due.
    type_status(sheets_url, 2, "MQL")
    taken = time.monotonic()
    answer = edit(a, 2, "New", "MQL")
    assert answer["changed"] == [2] and answer["pending"], answer
    a.kill()
    took = until_at_meta(meta_url, sent + 1, taken, BOUND)
    print(f"\nedit taken by a SIGKILLed process: at Meta {took:.1f} s after the edit")
    assert SETTLE <= took <= BOUND
    assert meta_events(meta_url)[-1]["event_name"] == "QualifiedLead"

    # 2. C takes an edit and dies while its send holds the tab's lock, mid-request at Meta.
    # The edit was made settle_seconds ago (its trigger ran late): due at once, C sends it
    # in the background before B's next sweep looks.
    c = launch(env, "c")
    gate.hold(WORLD_PIXEL)
    type_status(sheets_url, 3, "MQL")
    taken = time.monotonic()
    edit(c, 3, "New", "MQL", ago=SETTLE + 0.5)
    assert gate.held.wait(BOUND), "the edit's send never reached Meta"
    c.kill()
    gate.release.set()  # Meta keeps the held request's event: a resend carries the same id
    took = until_at_meta(meta_url, sent + 3, taken, BOUND)  # the held one and B's resend
    print(f"edit whose sender died holding the lock: resent {took:.1f} s after the edit")
    assert took <= BOUND
    ids = [e["event_id"] for e in meta_events(meta_url)[sent + 1 :]]
    assert len(ids) == 2 and len(set(ids)) == 1, ids  # Meta deduplicates by event_id
    # And nothing is left to send: B's sweep took the edit.
    status = httpx.get(
        f"{b.url}/api/status", params={"spreadsheet_id": SHEET}, headers=AUTH, timeout=30
    ).json()
    assert status["pending_edits"]["total"] == 0
