"""What Meta receives is true (issue 16): observed event times, first-sync baselines, stale
stamps, per-stage values and labels, date-only changes and the pixel's 48-hour dedup window.

Each test goes through the Sheets emulator, a real pass and the fake Meta (the CLI for the first
sync), and checks what the fake Meta holds: nothing in it may carry a time we cannot defend.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sheet_bridge.config import load_config
from sheet_bridge.sync.ledger import open_ledger
from tests.conftest import WORLD_TZ, World, iso, lead_row
from tests.test_cli import WITH_TOKEN, run, world_toml

MakeWorld = Callable[..., World]
TZ = ZoneInfo(WORLD_TZ)


def events_of(world: World, email_index: int) -> list[dict[str, object]]:
    from tests.sync.test_run import events_of as by_lead

    return by_lead(world, email_index)


def status_cell(world: World, row: int) -> str:
    return str(world.column("CAPI Status")[row - 2])


def ts(at: datetime) -> int:
    return int(at.timestamp())


def unstamped(i: int, status: str, *, now: datetime, created_hours: float | None) -> list[object]:
    """A row as an existing sheet has it on day one: no Status Changed At (maybe no Created At)."""
    row = lead_row(i, status, now=now, changed_hours=None)
    if created_hours is None:
        row[0] = ""
    else:
        row[0] = iso(now - timedelta(hours=created_hours))
    return row


# -- 1. the first sync invents no times ----------------------------------------------------


def test_first_sync_of_an_existing_sheet_sends_only_what_it_can_date_and_records_a_baseline(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    rows = [
        unstamped(1, "Customer", now=world_now, created_hours=60 * 24),  # 60 days old
        unstamped(2, "SQL", now=world_now, created_hours=None),  # no dates at all
        unstamped(3, "New", now=world_now, created_hours=20),
        unstamped(4, "MQL", now=world_now, created_hours=40),
    ]
    rows[0][8] = 90000  # the deal value of the imported customer
    world = make_world(rows)
    config = world_toml(world, tmp_path / "bridge.toml")

    result = run(["sync", "--config", str(config), "--json"], WITH_TOKEN)

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    events = world.meta_events()
    # Only the two Lead events that Created At dates; nothing at "now".
    assert sorted((e["event_name"], e["event_time"]) for e in events) == sorted(
        [
            ("Lead", ts(world_now - timedelta(hours=20))),
            ("Lead", ts(world_now - timedelta(hours=40))),
        ]
    )
    assert events_of(world, 1) == events_of(world, 2) == []
    assert summary["baseline"] == 2  # rows 2 and 3: their current stage cannot be dated
    assert status_cell(world, 2).startswith("Expired: Lead")  # Created At: 60 days ago
    assert "Baseline: QualifiedLead, Schedule, StartTrial, Purchase" in status_cell(world, 2)
    assert status_cell(world, 3).startswith("Baseline:")
    assert "fill Status Changed At" in status_cell(world, 3)
    assert status_cell(world, 5).startswith("Sent: Lead · Baseline: QualifiedLead")

    # The next pass changes nothing; the lead at SQL then moves with the add-on's edit, and only
    # the new stage goes, at the edit's time.
    again = run(["sync", "--config", str(config), "--json"], WITH_TOKEN)
    assert json.loads(again.stdout)["events_sent"] == 0
    assert json.loads(again.stdout)["cells_written"] == 0
    at = world_now - timedelta(minutes=3)
    world.edit_cells([(3, "Lead Status", "Opportunity"), (3, "Status Changed At", iso(at))])
    bridge = world.bridge()
    bridge.ledger = open_ledger(load_config(config).ledger_location({}))  # the CLI's
    bridge.record_edit(3, "SQL", "Opportunity", at)
    bridge.sync()
    moved = events_of(world, 2)
    assert [(e["event_name"], e["event_time"]) for e in moved] == [("StartTrial", ts(at))]


# -- 2. stale stamps -----------------------------------------------------------------------


def test_status_changed_without_a_new_stamp_is_sent_at_when_the_change_was_seen(
    make_world: MakeWorld, world_now: datetime
) -> None:
    # Hourly passes; the stamp is almost 7 days old: used as Schedule's time it would tell Meta
    # the lead was scheduled a week ago (and soon be refused as expired).
    stamp = world_now - timedelta(days=6, hours=20)
    row = lead_row(1, "MQL", now=world_now, created_hours=8 * 24, changed_hours=6 * 24 + 20)
    world = make_world([row])
    world.now = world_now - timedelta(hours=1)
    world.bridge().sync()
    assert [e["event_name"] for e in events_of(world, 1)] == ["QualifiedLead"]  # Lead expired
    # Someone (an API write, another tool) moves the lead on; the stamp stays as it was.
    world.edit_cells([(2, "Lead Status", "SQL")])
    world.now = world_now

    world.bridge().sync()

    schedule = events_of(world, 1)[-1]
    assert schedule["event_name"] == "Schedule"
    assert schedule["event_time"] == ts(world_now)  # not the stale stamp, and not expired
    assert schedule["event_time"] != ts(stamp)
    text = status_cell(world, 2)
    assert "was not updated when the status changed from MQL" in text
    assert "time estimated" in text


def test_change_seen_more_than_a_day_after_the_last_look_is_a_baseline_not_a_guess(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now, created_hours=60, changed_hours=50)])
    world.now = world_now - timedelta(days=2)
    world.bridge().sync()
    world.edit_cells([(2, "Lead Status", "SQL")])  # no stamp, no edit reported
    world.now = world_now

    result = world.bridge().sync()

    assert [e["event_name"] for e in events_of(world, 1)] == ["Lead", "QualifiedLead"]
    assert result.counts["baseline"] == 1
    assert status_cell(world, 2).startswith("Sent: Lead, QualifiedLead · Baseline: Schedule")


# -- 3, 4. values and labels per stage -----------------------------------------------------


def test_a_jump_carries_the_deal_value_on_its_own_stage_and_each_stage_its_label(
    make_world: MakeWorld, world_now: datetime
) -> None:
    row = lead_row(1, "Customer", now=world_now, created_hours=30, changed_hours=2, value=90000)
    lost = lead_row(2, "Disqualified", now=world_now, value=90000)
    world = make_world([row, lost])

    world.bridge().sync()

    events = events_of(world, 1)
    custom = [e["custom_data"] for e in events]
    assert [c["value"] for c in custom] == [100, 1000, 5000, 20000, 90000]  # type: ignore[index]
    assert sum(c["value"] for c in custom) == 116100  # type: ignore[index,misc]
    assert [c["lead_status"] for c in custom] == [  # type: ignore[index]
        "New",
        "MQL",
        "SQL",
        "Opportunity",
        "Customer",
    ]
    [disqualified] = events_of(world, 2)
    assert "value" not in disqualified["custom_data"]  # type: ignore[operator]


# -- 5. a date without a time ---------------------------------------------------------------


def test_date_only_change_on_the_creation_day_is_clamped_after_the_lead_not_refused(
    make_world: MakeWorld, world_now: datetime
) -> None:
    local_now = world_now.astimezone(TZ)
    midnight = local_now.replace(hour=0, minute=0, second=0)
    created = local_now - (local_now - midnight) / 2  # earlier today, in the sheet's zone
    row = lead_row(1, "MQL", now=world_now, changed_hours=None)
    row[0] = iso(created)
    row[7] = created.date().isoformat()  # "2026-12-03": some time that day
    world = make_world([row])

    world.bridge().sync()

    lead, qualified = events_of(world, 1)
    assert lead["event_time"] == qualified["event_time"] == ts(created)
    assert status_cell(world, 2) == "Sent: Lead, QualifiedLead"


# -- 6. the pixel's event id and Meta's 48 hours --------------------------------------------


def test_pixel_event_id_is_reused_within_48_hours_and_no_second_lead_after(
    make_world: MakeWorld, world_now: datetime
) -> None:
    fresh = lead_row(1, "New", now=world_now, created_hours=20, pixel_id="pixel-ev-1")
    old = lead_row(2, "New", now=world_now, created_hours=72, pixel_id="pixel-ev-2")
    world = make_world([fresh, old])

    world.bridge().sync()

    [lead] = events_of(world, 1)
    assert lead["event_id"] == "pixel-ev-1"  # Meta deduplicates it against the browser's
    assert events_of(world, 2) == []
    assert "pixel reported this lead" in status_cell(world, 3)
    assert status_cell(world, 3).startswith("Skipped:")

    at = world_now - timedelta(minutes=2)
    world.edit_cells([(3, "Lead Status", "MQL"), (3, "Status Changed At", iso(at))])
    bridge = world.bridge()
    bridge.record_edit(3, "New", "MQL", at)
    bridge.sync()
    assert [e["event_name"] for e in events_of(world, 2)] == ["QualifiedLead"]
    assert "pixel reported this lead" in status_cell(world, 3)
