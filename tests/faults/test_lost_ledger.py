"""A ledger lost, emptied, from an older version, or holding state a bad request stored: the
pass never silently starts over and never crashes on it; `sheet-bridge adopt` rebuilds the
ledger from the sheet, and nothing reaches Meta twice (issue 12, findings 2 and 3)."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from sheet_bridge.cli import main
from sheet_bridge.sync.run import LedgerBehindSheet
from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_SECRET, WORLD_TOKEN, World, iso, lead_row
from tests.faults.test_faults import leads, write_toml
from tests.ledger_backends import lose, run_sql
from tests.sync.schema_1 import downgrade_to_schema_1

MakeWorld = Callable[..., World]


def sheet_of(now: datetime) -> list[list[object]]:
    """Ten leads across the funnel, a lead with no Status Changed At (its time is when a pass
    first saw it: lost with the ledger), and one whose change is too old for Meta (expired)."""
    return [
        *leads(10, now),
        lead_row(10, "MQL", now=now, changed_hours=None),
        lead_row(11, "SQL", now=now, created_hours=24 * 12, changed_hours=24 * 9),
    ]


def assert_nothing_twice(world: World) -> None:
    """Each (lead, event name) reached the fake Meta at most once."""
    seen = Counter((e["user_data"]["em"], e["event_name"]) for e in world.meta_events())
    assert set(seen.values()) == {1}, [k for k, n in seen.items() if n > 1]


def cli(args: list[str]) -> tuple[int, str]:
    env = {"META_CAPI_TOKEN": WORLD_TOKEN, "SHEET_BRIDGE_LEDGER": None}
    done = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    return done.exit_code, done.output


def sync_once(world: World, when: datetime | None = None) -> None:
    """One pass (at `when`, else now) whose ledger is closed after, as a process's would be."""
    bridge = world.bridge(clock=lambda: when) if when is not None else world.bridge()
    bridge.sync()
    bridge.ledger.close()


def config_then_lose(world: World, tmp_path: Path, how: str) -> Path:
    """The world's config file, then its ledger lost (`how`: emptied or missing)."""
    config = tmp_path / "bridge.toml"
    write_toml(config, world)
    lose(world.config.ledger_location({}), how)
    return config


@pytest.mark.parametrize("how", ["emptied", "missing"])
def test_lost_ledger_refuses_to_sync_then_adopt_rebuilds_it_and_nothing_is_sent_twice(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path, how: str
) -> None:
    world = make_world(sheet_of(world_now))
    bridge = world.bridge()
    first = bridge.sync()
    bridge.ledger.close()
    del bridge
    sent = len(world.meta_events())
    assert first.events_sent == sent > 0
    sheet = world.rows()
    config = tmp_path / "bridge.toml"
    write_toml(config, world)
    lose(world.config.ledger_location({}), how)

    # The pass refuses in words and sends nothing (the library, then the command).
    with pytest.raises(LedgerBehindSheet) as caught:
        world.bridge().sync()
    code, output = cli(["sync", "--config", str(config)])

    rows_shown = 12  # 11 rows sent something, 1 expired
    assert f"on {rows_shown} row(s) this sheet says were sent" in str(caught.value)
    # The command line names the config as given, not its file name alone (the API, which
    # never shows a server path, names the file only).
    assert "sheet-bridge adopt --config bridge.toml`" in str(caught.value)
    assert f"sheet-bridge adopt --config {config}`" in caught.value.for_operator
    assert code == 1 and f"sheet-bridge adopt --config {config}`" in output
    assert len(world.meta_events()) == sent
    assert world.rows() == sheet

    # `check` runs the pass's own test: not ready, with the same fix.
    code, output = cli(["check", "--config", str(config)])

    assert code == 1, output
    assert f"ERROR the ledger has no record of {sent + 3} event(s) on {rows_shown} row(s)" in (
        output
    )
    assert f"`sheet-bridge adopt --config {config}`" in output
    assert "Not ready" in output and "Ready:" not in output

    code, output = cli(["adopt", "--config", str(config)])

    assert code == 0, output
    assert f": {sent} sent, 3 expired and 1 baseline event(s) on {rows_shown} row(s)" in output
    assert "Nothing was sent" in output
    assert world.rows() == sheet  # adopt writes the ledger only

    code, output = cli(["check", "--config", str(config)])
    assert code == 0 and "no record of" not in output, output

    again = world.bridge().sync()

    assert again.events_sent == 0
    assert again.cells_written == 0  # every row reads as it did
    assert len(world.meta_events()) == sent
    assert_nothing_twice(world)

    # Later, a status edit sends only the new stage.
    row = 3  # lead 1, "MQL"
    later = world_now + timedelta(minutes=5)
    world.edit_cells([(row, "Lead Status", "SQL"), (row, "Status Changed At", iso(later))])
    edit = world.bridge(clock=lambda: later).sync()
    assert edit.events_sent == 1
    assert [e["event_name"] for e in world.meta_events()[sent:]] == ["Schedule"]
    assert_nothing_twice(world)


@pytest.mark.parametrize("how", ["emptied", "missing"])
def test_check_is_not_ready_while_the_ledger_is_behind_the_sheet(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path, how: str
) -> None:
    """`check` runs the pass's own test (run.ledger_behind), so it never says Ready where
    `sync` would refuse; `adopt` clears it."""
    world = make_world(leads(3, world_now))
    sync_once(world)
    config = tmp_path / "bridge.toml"
    write_toml(config, world)
    code, output = cli(["check", "--config", str(config)])
    assert code == 0 and "Ready:" in output, output
    lose(world.config.ledger_location({}), how)

    code, output = cli(["check", "--config", str(config)])

    assert code == 1, output
    assert "ERROR the ledger has no record of" in output
    assert "`sheet-bridge sync` refuses" in output
    assert f"`sheet-bridge adopt --config {config}`" in output
    if how == "missing":  # check looked without creating the file
        assert not Path(world.config.ledger_location({})).exists()

    assert cli(["adopt", "--config", str(config)])[0] == 0
    code, output = cli(["check", "--config", str(config)])
    assert code == 0 and "Ready:" in output, output


def test_a_new_ledger_next_to_a_sheet_never_synced_is_simply_new(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(sheet_of(world_now))
    assert world.bridge().sync().events_sent > 0


def test_rows_pasted_with_another_tabs_capi_cells_are_not_sent_without_a_word(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(leads(3, world_now))
    world.bridge().sync()
    sent = len(world.meta_events())
    # A fourth lead pasted with CAPI cells saying "Sent" (copied from elsewhere).
    header = world.rows()[0]
    row = lead_row(40, "MQL", now=world_now)
    cells = [(5, h, v) for h, v in zip(header, row, strict=False)]
    cells += [(5, "CAPI Status", "Sent: Lead, QualifiedLead"), (5, "CAPI Event ID", "sb.x")]
    world.edit_cells(cells)

    with pytest.raises(LedgerBehindSheet, match=r"1 row\(s\).*rows 5\)"):
        world.bridge().sync()

    assert len(world.meta_events()) == sent


@pytest.mark.sqlite_only  # schema 1 existed only as an SQLite file
def test_schema_1_ledger_from_the_previous_version_migrates_and_sends_nothing_again(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world(sheet_of(world_now))
    bridge = world.bridge()
    bridge.sync()
    bridge.ledger.close()
    del bridge
    sent = len(world.meta_events())
    path = Path(world.config.ledger_location({}))
    old = tmp_path / "v1.db"
    downgrade_to_schema_1(path, old)
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        extra.unlink(missing_ok=True)
    os.replace(old, path)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM ledger_info").fetchone() == ("1",)
        assert "tab" not in [r[1] for r in db.execute("PRAGMA table_info(events)")]

    again = world.bridge().sync()

    assert again.events_sent == 0
    assert again.cells_written == 0
    assert len(world.meta_events()) == sent
    row = 3
    later = world_now + timedelta(minutes=5)
    world.edit_cells([(row, "Lead Status", "SQL"), (row, "Status Changed At", iso(later))])
    assert world.bridge(clock=lambda: later).sync().events_sent == 1
    assert_nothing_twice(world)


# -- stored state a bad request left ------------------------------------------------------


def insert_edit(world: World, row: int, status: str, at: object) -> None:
    """What the old /api/edits stored for any `at` it was given (raw SQL, no API check)."""
    run_sql(
        world.config.ledger_location({}),
        "INSERT INTO pending_edits (spreadsheet_id, tab, row_number, old_value, new_value, "
        "at, recorded_at) VALUES (?, ?, ?, 'New', ?, ?, ?)",
        (
            world.config.sheets.spreadsheet_id,
            world.config.sheets.tab,
            row,
            status,
            at,
            world.now.timestamp(),
        ),
    )


# 0001-01-01T00:00:00+14:00: the old API stored it; reading it back was "year 0 is out of range".
YEAR_0 = datetime(1, 1, 1, tzinfo=UTC).timestamp() - 14 * 3600


# Text in a time column: only SQLite can hold it (PostgreSQL's column is double precision).
@pytest.mark.parametrize("at", [YEAR_0, pytest.param("garbage", marks=pytest.mark.sqlite_only)])
def test_a_poisoned_edit_is_skipped_and_reported_once_and_every_pass_runs(
    make_world: MakeWorld, world_now: datetime, at: object
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now), lead_row(2, "New", now=world_now)])
    world.bridge().sync(dry_run=True)  # the ledger exists, as it did when the edit came
    insert_edit(world, 2, "SQL", at)

    first = world.bridge().sync()
    second = world.bridge().sync()

    assert first.events_sent == 3
    assert len(first.notices) == 1 and "row 2" in first.notices[0]
    assert "unusable time" in first.notices[0]
    assert second.notices == [] and second.events_sent == 0
    assert_nothing_twice(world)


def test_an_edit_stamped_2001_does_not_leave_the_lead_invalid_after_a_correct_edit(
    make_world: MakeWorld, world_now: datetime
) -> None:
    # No Status Changed At column value: the lead's stage time comes from its edits.
    world = make_world([lead_row(1, "MQL", now=world_now, changed_hours=None)])
    world.bridge().sync(dry_run=True)
    insert_edit(world, 2, "MQL", datetime(2001, 1, 1, tzinfo=UTC).timestamp())
    bridge = world.bridge()
    bridge.record_edit(2, "New", "MQL", world_now - timedelta(hours=1))

    result = bridge.sync()

    assert result.rows[0].outcome == "sent", result.rows[0].message
    qualified = [e for e in world.meta_events() if e["event_name"] == "QualifiedLead"]
    assert [e["event_time"] for e in qualified] == [
        int((world_now - timedelta(hours=1)).timestamp())
    ]


def test_backend_answers_409_and_status_says_what_to_do_when_the_ledger_is_behind(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(leads(3, world_now))
    bridge = world.bridge()
    bridge.sync()
    bridge.ledger.close()
    del bridge
    sent = len(world.meta_events())
    lose(world.config.ledger_location({}), "emptied")
    app = create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})
    client = app.test_client()
    auth = {"Authorization": f"Bearer {WORLD_SECRET}"}
    sheet = world.config.sheets.spreadsheet_id

    synced = client.post("/api/sync", json={"spreadsheet_id": sheet}, headers=auth)
    status = client.get(f"/api/status?spreadsheet_id={sheet}", headers=auth)

    assert synced.status_code == 409
    error = synced.get_json()["error"]
    assert error["code"] == "ledger_behind_sheet"
    assert "sheet-bridge adopt --config" in error["message"]
    assert str(world.tmp) not in error["message"]  # the config's name, never a path
    assert status.status_code == 200
    assert any("sheet-bridge adopt" in w for w in status.get_json()["warnings"])
    assert status.get_json()["nearing_window"] == []
    assert len(world.meta_events()) == sent


def test_adopt_takes_over_baselines_and_a_later_change_sends_only_its_own_stage(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    """A stage reached before sheet-bridge saw when is a baseline (docs/event-times.md): after
    a lost ledger and `adopt`, the next sync must not send it dated at a later change's time
    (the demo's row 3: QualifiedLead and Schedule went with the Opportunity move's time)."""
    start = world_now - timedelta(hours=2)
    world = make_world([lead_row(1, "SQL", now=start, changed_hours=None)])
    sync_once(world, start)  # Lead (Created At); QualifiedLead and Schedule: baselines
    moved = iso(world_now - timedelta(minutes=30))
    world.edit_cells([(2, "Lead Status", "Opportunity"), (2, "Status Changed At", moved)])
    sync_once(world, world_now)  # StartTrial; the two stay baselines
    assert [e["event_name"] for e in world.meta_events()] == ["Lead", "StartTrial"]
    assert "Baseline: QualifiedLead, Schedule" in str(world.rows()[1])
    sheet = world.rows()
    config = config_then_lose(world, tmp_path, "missing")

    code, output = cli(["adopt", "--config", str(config)])

    assert code == 0, output
    assert ": 2 sent, 0 expired and 2 baseline event(s) on 1 row(s)" in output
    assert "Baselines (2)" in output
    soon = world_now + timedelta(minutes=1)
    again = world.bridge(clock=lambda: soon).sync()
    assert again.events_sent == 0, [e["event_name"] for e in world.meta_events()]
    assert again.cells_written == 0 and world.rows() == sheet

    later = world_now + timedelta(minutes=5)
    world.edit_cells([(2, "Lead Status", "Customer"), (2, "Status Changed At", iso(later))])
    world.bridge(clock=lambda: later).sync()

    assert [e["event_name"] for e in world.meta_events()] == ["Lead", "StartTrial", "Purchase"]
    assert "Baseline: QualifiedLead, Schedule" in str(world.rows()[1])


def test_adopt_keeps_the_statuses_the_log_saw_so_a_stale_stamp_stays_stale(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    """Status Changed At older than the last time the ledger saw the lead at another status is
    not this change's time (sync/plan.py, rule 1a): the CAPI Log's Lead Status and Time say when
    a pass saw it, and adopt keeps them, so the stamp is not taken after a lost ledger."""
    start = world_now - timedelta(hours=50)
    world = make_world([lead_row(1, "MQL", now=start, created_hours=3, changed_hours=1)])
    for when, status in ((start, "MQL"), (world_now, "SQL")):
        # Lead and QualifiedLead; then SQL (the stamp not updated) seen 50 h later: baseline.
        world.edit_cells([(2, "Lead Status", status)])
        sync_once(world, when)
    assert [e["event_name"] for e in world.meta_events()] == ["Lead", "QualifiedLead"]
    assert "Baseline: Schedule" in str(world.rows()[1])
    config = config_then_lose(world, tmp_path, "emptied")

    code, output = cli(["adopt", "--config", str(config)])

    assert code == 0, output
    assert ": 2 sent, 0 expired and 1 baseline event(s) on 1 row(s)" in output
    again = world.bridge(clock=lambda: world_now + timedelta(minutes=1)).sync()

    assert again.events_sent == 0, [e["event_name"] for e in world.meta_events()]
    assert "Baseline: Schedule" in str(world.rows()[1])


def test_after_adopt_a_row_whose_events_went_in_two_passes_reads_as_it_did(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    """Events sent by an earlier pass keep that pass's time (the CAPI Log's), not the row's
    CAPI Sent At (its latest event's): the next sync writes no cell, and the CAPI Event ID
    cell still shows the latest event's id. Here the pixel's Lead (created 50 h ago, so a
    plan now would no longer send it, docs/deduplication.md) went a day before QualifiedLead."""
    start = world_now - timedelta(hours=30)
    world = make_world(
        [lead_row(1, "New", now=start, created_hours=20, changed_hours=None, pixel_id="px.1")]
    )
    for when, status in ((start, "New"), (world_now, "MQL")):
        changed = iso(world_now - timedelta(minutes=10)) if status == "MQL" else ""
        world.edit_cells([(2, "Lead Status", status), (2, "Status Changed At", changed)])
        sync_once(world, when)
    sent = [(e["event_name"], e["event_id"]) for e in world.meta_events()]
    assert [n for n, _ in sent] == ["Lead", "QualifiedLead"] and sent[0][1] == "px.1"
    sheet = world.rows()
    config = config_then_lose(world, tmp_path, "missing")

    assert cli(["adopt", "--config", str(config)])[0] == 0
    again = world.bridge(clock=lambda: world_now + timedelta(minutes=1)).sync()

    assert again.events_sent == 0
    assert again.cells_written == 0, [r for r in world.rows() if r not in sheet]
