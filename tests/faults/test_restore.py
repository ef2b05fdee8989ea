"""A ledger restored from an older backup, on either backend: the pass compares every event a
row's CAPI Status names with the ledger, not only whether the lead has some event there, so a
backup older than the sheet refuses in words and sends nothing; `sheet-bridge adopt` takes over
what the ledger missed (issue 22, item 1). Meta deduplicates one event id only within 48 hours
(https://developers.facebook.com/docs/marketing-api/conversions-api/deduplication/), so a
backup a few days old would count every Purchase since it again."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sheet_bridge.sync.adopt import adopt_sheet
from sheet_bridge.sync.run import LedgerBehindSheet
from tests.conftest import World, iso, lead_row
from tests.faults.test_lost_ledger import assert_nothing_twice
from tests.ledger_backends import snapshot

MakeWorld = Callable[..., World]


def restored_world(
    make_world: MakeWorld, now: datetime, tmp_path: Path
) -> tuple[World, datetime, int]:
    """100 new leads synced (100 Lead events), a backup taken, 50 of them moved to Customer
    and synced (200 more), then the backup put back. Returns the world, the later time and
    how many events Meta has."""
    world = make_world([lead_row(i, "New", now=now) for i in range(100)])
    bridge = world.bridge()
    assert bridge.sync().events_sent == 100
    put_back = snapshot(world.config.ledger_location({}), tmp_path / "backup.db")
    bridge.ledger.close()
    later = now  # the move happened an hour ago: Meta takes no event_time in the future
    moved = [2 + 2 * i for i in range(50)]  # every other row
    world.edit_cells(
        [(r, "Lead Status", "Customer") for r in moved]
        + [(r, "Status Changed At", iso(now - timedelta(hours=1))) for r in moved]
    )
    bridge = world.bridge(clock=lambda: later)
    assert bridge.sync().events_sent == 200
    bridge.ledger.close()
    del bridge
    put_back()
    assert len(world.meta_events()) == 300
    return world, later, 300


def test_a_restored_older_ledger_refuses_per_event_and_sends_nothing(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world, later, sent = restored_world(make_world, world_now, tmp_path)
    sheet = world.rows()

    with pytest.raises(LedgerBehindSheet) as caught:
        world.bridge(clock=lambda: later).sync()

    words = str(caught.value)
    assert "the ledger has no record of 200 event(s) on 50 row(s)" in words, words
    assert "rows 2, 4, 6," in words and "sheet-bridge adopt" in words
    assert len(world.meta_events()) == sent  # nothing went again
    assert world.rows() == sheet

    # One row's edit pass (the add-on's) refuses the same way.
    with pytest.raises(LedgerBehindSheet):
        world.bridge(clock=lambda: later).sync(rows=[2])
    assert len(world.meta_events()) == sent


def test_adopt_takes_over_what_a_restored_ledger_missed_and_nothing_is_sent_twice(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world, later, sent = restored_world(make_world, world_now, tmp_path)
    bridge = world.bridge(clock=lambda: later)

    report = adopt_sheet(bridge)

    assert (report.sent, report.already_known) == (200, 100)
    assert report.without_log_line == []  # every adopted event had its CAPI Log line
    again = world.bridge(clock=lambda: later).sync()
    assert again.events_sent == 0
    assert again.cells_written == 0
    assert len(world.meta_events()) == sent
    assert_nothing_twice(world)


def test_adopt_marks_events_a_row_claims_without_a_capi_log_line(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(i, "New", now=world_now) for i in range(3)])
    world.bridge().sync()
    # Someone moves row 3 on and types its stage into CAPI Status by hand: no pass sent it,
    # no CAPI Log line names it.
    world.edit_cells([(3, "Lead Status", "MQL"), (3, "CAPI Status", "Sent: Lead, QualifiedLead")])
    with pytest.raises(LedgerBehindSheet, match=r"1 event\(s\) on 1 row\(s\).*rows 3\b"):
        world.bridge().sync()

    report = adopt_sheet(world.bridge())

    assert report.sent == 1 and report.without_log_line == ["row 3: QualifiedLead"]
    assert "without a CAPI Log line" in report.text()
    result = world.bridge().sync()
    assert result.events_sent == 0
    status = world.column("CAPI Status")[1]
    assert "QualifiedLead" in status and "no CAPI Log line" in status, status


def test_a_restored_ledger_refuses_when_the_rows_were_cleared_but_the_capi_log_names_them(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    """A restored backup and CAPI Status cells someone cleared: the rows no longer say what
    was sent, but the CAPI Log lines appended since the backup do. The ledger counts the Log
    lines it has accounted for (the append's `updatedRange`,
    https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values/append),
    so the pass reads only the lines past that count and refuses the same way."""
    world = make_world([lead_row(i, "New", now=world_now) for i in range(20)])
    bridge = world.bridge()
    assert bridge.sync().events_sent == 20
    put_back = snapshot(world.config.ledger_location({}), tmp_path / "backup.db")
    bridge.ledger.close()
    moved = list(range(2, 12))
    world.edit_cells(
        [(r, "Lead Status", "Customer") for r in moved]
        + [(r, "Status Changed At", iso(world_now - timedelta(hours=1))) for r in moved]
    )
    bridge = world.bridge()
    sent = bridge.sync().events_sent
    assert sent == 40  # each moved lead's three middle stages and Purchase
    bridge.ledger.close()
    del bridge
    put_back()
    world.edit_cells(
        [(r, c, "") for r in moved for c in ("CAPI Status", "CAPI Event ID", "CAPI Sent At")]
    )
    # A pass of one row (an edit's) the new Log lines name refuses too; one of a row they do
    # not name goes on, and leaves the count where it was for the next full pass.
    one_row = world.bridge()
    with pytest.raises(LedgerBehindSheet, match=r"4 event\(s\) on 1 row\(s\)"):
        one_row.sync(read=lambda: one_row.read_rows([2]))
    world.edit_cells(
        [(15, "Lead Status", "MQL"), (15, "Status Changed At", iso(world_now - timedelta(hours=1)))]
    )
    assert one_row.sync(read=lambda: one_row.read_rows([15])).events_sent == 1
    one_row.ledger.close()
    on_meta = len(world.meta_events())

    with pytest.raises(LedgerBehindSheet) as caught:
        world.bridge().sync()

    words = str(caught.value)
    assert "the ledger has no record of 40 event(s) on 10 row(s)" in words, words
    assert "sheet-bridge adopt" in words
    assert len(world.meta_events()) == on_meta  # nothing went again

    adopt_sheet(world.bridge())
    again = world.bridge().sync()
    assert again.events_sent == 0
    assert len(world.meta_events()) == on_meta
    assert_nothing_twice(world)


def log_reads(world: World) -> list[list[str]]:
    """The ranges of each CAPI Log read since the last reset (the emulator's request log)."""
    found: list[dict[str, Any]] = httpx.get(
        world.sheets_url + "/_emulator/requests", timeout=10
    ).json()["requests"]
    return [
        r["ranges"]
        for r in found
        if r["method"] in ("values.get", "values.batchGet")
        if any("CAPI Log" in x for x in r["ranges"])
    ]


def test_the_log_count_starts_at_the_first_append_and_a_pass_reads_only_the_lines_past_it(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """A ledger that never counted the CAPI Log (new, or from before the count) reads none of
    it: the pass's append tells where the Log ends (`updates.updatedRange`,
    https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values/append),
    and every later pass reads only the lines below that, so a Log that grows forever costs
    a pass the lines appended since the last one."""
    world = make_world([lead_row(i, "New", now=world_now) for i in range(5)])
    bridge = world.bridge()
    assert bridge.sync().events_sent == 5
    assert log_reads(world) == []  # nothing counted yet: the Log is not read
    assert bridge.ledger.log_lines(bridge.sheet_tab) == 6  # header and 5 lines

    world.edit_cells([(2, "Lead Status", "MQL")])
    httpx.post(world.sheets_url + "/_emulator/stats/reset", timeout=10).raise_for_status()
    assert bridge.sync().events_sent == 1
    assert log_reads(world) == [["'CAPI Log'!1:1", "'CAPI Log'!A7:I"]]
    assert bridge.ledger.log_lines(bridge.sheet_tab) == 7

    # Nothing new since: the pass reads past the Log's end and finds no line.
    httpx.post(world.sheets_url + "/_emulator/stats/reset", timeout=10).raise_for_status()
    assert bridge.sync().events_sent == 0
    assert log_reads(world) == [["'CAPI Log'!1:1", "'CAPI Log'!A8:I"]]
    assert bridge.ledger.log_lines(bridge.sheet_tab) == 7
    bridge.ledger.close()
