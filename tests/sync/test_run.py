"""The one imperative pass, over real HTTP on loopback (Sheets emulator + fake Meta): what
reaches Meta, what each row says afterwards, and that nothing is ever sent twice
(docs/event-times.md, docs/normalization.md, docs/meta-events.md, docs/deduplication.md; issue 5
"Deliver" 2)."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from sheet_bridge.meta.identity import sha256_hex
from sheet_bridge.sync.ledger import SyncBusy
from sheet_bridge.sync.plan import plan
from sheet_bridge.sync.run import SyncError
from tests.conftest import WORLD_HEADER, WORLD_SHEET, WORLD_TZ, World, lead_row

FUNNEL = ["Lead", "QualifiedLead", "Schedule", "StartTrial", "Purchase"]
BRIDGE_COLUMNS = ["CAPI Key", "CAPI Event ID", "CAPI Status", "CAPI Sent At", "CAPI Response"]
MakeWorld = Callable[..., World]


def em(i: int) -> str:
    """The hashed e-mail lead_row(i, …) gives the lead, as Meta receives it."""
    return sha256_hex(f"lead{i}@example.com")


def events_of(world: World, i: int) -> list[dict[str, Any]]:
    """Events the fake Meta accepted for lead i, in the order they arrived."""
    return [e for e in world.meta_events() if e["user_data"].get("em") == em(i)]


def row_cells(world: World, row_number: int) -> dict[str, object]:
    """One sheet row (1-based, header is row 1) as header → cell, '' where absent."""
    rows = world.rows()
    header, row = rows[0], rows[row_number - 1]
    return {str(h): (row[c] if c < len(row) else "") for c, h in enumerate(header)}


def sent_at_text(at: datetime) -> str:
    return at.astimezone(ZoneInfo(WORLD_TZ)).strftime("%Y-%m-%d %H:%M:%S %z")


def reset_sheets_stats(world: World) -> None:
    httpx.post(world.sheets_url + "/_emulator/stats/reset", timeout=10).raise_for_status()


# -- the first and second pass -------------------------------------------------------------


def test_first_pass_sends_every_due_event_and_fills_the_bridge_columns(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(
        [
            lead_row(1, "New", now=world_now),
            lead_row(2, "MQL", now=world_now),
            lead_row(3, "On hold", now=world_now),
            lead_row(4, "", now=world_now),
        ]
    )

    result = world.bridge().sync()

    assert result.events_sent == 3
    assert [e["event_name"] for e in events_of(world, 1)] == ["Lead"]
    assert [e["event_name"] for e in events_of(world, 2)] == ["Lead", "QualifiedLead"]
    assert events_of(world, 3) == events_of(world, 4) == []
    assert world.rows()[0] == [*WORLD_HEADER, *BRIDGE_COLUMNS]
    (lead1,) = events_of(world, 1)
    cells = row_cells(world, 2)
    assert str(cells["CAPI Key"]).startswith("L")
    assert cells["CAPI Event ID"] == lead1["event_id"]
    assert cells["CAPI Status"] == "Sent: Lead"
    assert cells["CAPI Sent At"] == sent_at_text(world_now)
    assert str(cells["CAPI Response"]).startswith("ok · fbtrace_id A")
    assert row_cells(world, 3)["CAPI Status"] == "Sent: Lead, QualifiedLead"
    assert str(row_cells(world, 4)["CAPI Status"]).startswith("Skipped:")
    assert row_cells(world, 4)["CAPI Event ID"] == ""
    keys = world.column("CAPI Key")
    assert len(set(keys)) == 4 and all(keys)
    assert result.counts == {
        "sent": 2,
        "skipped": 2,
        "expired": 0,
        "baseline": 0,
        "invalid": 0,
        "failed": 0,
        "already_sent": 0,
    }


def test_second_pass_sends_nothing_and_writes_no_cells(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(i, "SQL", now=world_now) for i in range(1, 4)])
    first = world.bridge().sync()
    sheet_after_first = world.rows()

    second = world.bridge().sync()

    assert first.events_sent == 9
    assert second.events_sent == 0
    assert second.meta_requests == 0
    assert second.cells_written == 0
    assert world.meta_stats()["events"] == 9
    assert world.rows() == sheet_after_first
    assert second.counts["already_sent"] == 3
    assert {r.message for r in second.rows} == {"Sent: Lead, QualifiedLead, Schedule"}


def test_lead_keys_written_on_the_first_pass_are_kept_on_later_passes(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now), lead_row(2, "New", now=world_now)])
    world.bridge().sync()
    keys = world.column("CAPI Key")
    world.edit_cells([(2, "Email", "changed@example.com")])

    world.bridge().sync()

    assert world.column("CAPI Key") == keys
    assert len(world.meta_events()) == 2


# -- funnel order, jumps, times ------------------------------------------------------------


def test_jump_from_new_to_customer_sends_all_five_stages_in_funnel_order(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "Customer", now=world_now, created_hours=30, changed_hours=2)])

    world.bridge().sync()

    events = events_of(world, 1)
    assert [e["event_name"] for e in events] == FUNNEL
    times = [e["event_time"] for e in events]
    assert times == sorted(times)
    assert times[0] == int((world_now - timedelta(hours=30)).timestamp())  # Lead: created
    assert times[-1] == int((world_now - timedelta(hours=2)).timestamp())  # Purchase: changed
    assert len({e["event_id"] for e in events}) == 5
    # Each event carries the status of the stage it stands for (docs/meta-events.md).
    assert [e["custom_data"]["lead_status"] for e in events] == [
        "New",
        "MQL",
        "SQL",
        "Opportunity",
        "Customer",
    ]
    assert row_cells(world, 2)["CAPI Status"] == "Sent: " + ", ".join(FUNNEL)


def test_jump_row_shows_the_event_id_of_the_deepest_stage_sent(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "Customer", now=world_now)])

    world.bridge().sync()

    purchase = next(e for e in events_of(world, 1) if e["event_name"] == "Purchase")
    assert row_cells(world, 2)["CAPI Event ID"] == purchase["event_id"]


def test_three_status_changes_between_passes_become_three_events_in_funnel_order(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now, changed_hours=5)])
    bridge = world.bridge()
    bridge.sync()
    t_mql, t_sql, t_opp = (world_now - timedelta(hours=h) for h in (3, 2, 1))
    # What the onEdit trigger does three times: the cell changes, the backend is told.
    for old, new, at in (
        ("New", "MQL", t_mql),
        ("MQL", "SQL", t_sql),
        ("SQL", "Opportunity", t_opp),
    ):
        world.edit_cells([(2, "Lead Status", new), (2, "Status Changed At", at.isoformat())])
        bridge.record_edit(2, old, new, at)

    result = bridge.sync()

    events = events_of(world, 1)
    assert [e["event_name"] for e in events] == ["Lead", "QualifiedLead", "Schedule", "StartTrial"]
    assert [e["event_time"] for e in events[1:]] == [
        int(t.timestamp()) for t in (t_mql, t_sql, t_opp)
    ]
    assert result.events_sent == 3
    assert row_cells(world, 2)["CAPI Status"] == "Sent: Lead, QualifiedLead, Schedule, StartTrial"


def test_expired_row_is_written_as_expired_in_words_and_nothing_of_it_reaches_meta(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(
        [
            lead_row(1, "SQL", now=world_now, created_hours=24 * 12, changed_hours=24 * 9),
            lead_row(2, "New", now=world_now),
        ]
    )

    result = world.bridge().sync()

    assert events_of(world, 1) == []
    assert [e["event_name"] for e in events_of(world, 2)] == ["Lead"]
    assert world.meta_stats()["rejections"] == 0
    status = str(row_cells(world, 2)["CAPI Status"])
    assert status.startswith("Expired: Lead, QualifiedLead, Schedule")
    assert "outside Meta's window; not sent" in status
    assert row_cells(world, 2)["CAPI Event ID"] == ""
    assert result.counts["expired"] == 1

    again = world.bridge().sync()
    assert events_of(world, 1) == []
    assert again.cells_written == 0


def test_capi_log_gets_one_line_per_event_decided_row_by_row_in_funnel_order(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(
        [
            lead_row(1, "SQL", now=world_now, created_hours=24 * 12, changed_hours=24 * 9),
            lead_row(2, "MQL", now=world_now),
        ]
    )

    world.bridge().sync()

    data = httpx.get(world.sheets_url + "/_emulator/data", timeout=10).json()
    log = data["spreadsheets"][WORLD_SHEET]["sheets"]["CAPI Log"]
    assert log[0] == ["Time", "Row", "CAPI Key", "Lead Status", "Event", "Event ID", "Result",
                      "Answer", "Tab"]  # fmt: skip
    assert {r[8] for r in log[1:]} == {"Leads"}
    lines = [(r[1], r[3], r[4], r[6]) for r in log[1:]]
    assert lines == [
        (2, "SQL", "Lead", "expired"),
        (2, "SQL", "QualifiedLead", "expired"),
        (2, "SQL", "Schedule", "expired"),
        (3, "MQL", "Lead", "sent"),
        (3, "MQL", "QualifiedLead", "sent"),
    ]
    assert {r[7] for r in log[1:4]} == {"older than Meta's 7-day window when planned"}
    assert all(str(r[7]).startswith("ok") for r in log[4:])
    assert [r[5] for r in log[4:]] == [e["event_id"] for e in events_of(world, 2)]
    assert log[1][2] == row_cells(world, 2)["CAPI Key"]

    world.bridge().sync()  # nothing new decided: nothing appended
    data = httpx.get(world.sheets_url + "/_emulator/data", timeout=10).json()
    assert len(data["spreadsheets"][WORLD_SHEET]["sheets"]["CAPI Log"]) == 6


# -- identifiers ---------------------------------------------------------------------------


def test_bad_phone_is_dropped_and_the_row_still_goes_on_email(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now, phone="31337")])

    world.bridge().sync()

    (event,) = events_of(world, 1)
    assert "ph" not in event["user_data"]
    status = str(row_cells(world, 2)["CAPI Status"])
    assert status.startswith("Sent: Lead")
    assert "Phone" in status and "dropped" in status
    assert "31337" not in status


def test_lead_id_typed_as_a_number_is_reported_with_the_plain_text_fix(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now, lead_id=1.20214563987456e15)])  # type: ignore[arg-type]

    world.bridge().sync()

    (event,) = events_of(world, 1)
    assert "lead_id" not in event["user_data"]
    status = str(row_cells(world, 2)["CAPI Status"])
    assert "Leadgen ID" in status
    assert "format the column as Plain text" in status


def test_text_lead_ids_of_15_to_17_digits_reach_meta_as_the_exact_integers(
    make_world: MakeWorld, world_now: datetime
) -> None:
    ids = ["120214563987456", "1202145639874561", "12021456398745612"]
    world = make_world([lead_row(i, "New", now=world_now, lead_id=x) for i, x in enumerate(ids)])

    world.bridge().sync()

    for i, lead_id in enumerate(ids):
        (event,) = events_of(world, i)
        assert event["user_data"]["lead_id"] == int(lead_id)
        assert type(event["user_data"]["lead_id"]) is int


def test_pixel_event_id_is_reused_as_the_lead_event_id(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "SQL", now=world_now, pixel_id="ev-7f3a-pixel")])

    world.bridge().sync()

    ids = {e["event_name"]: e["event_id"] for e in events_of(world, 1)}
    assert ids["Lead"] == "ev-7f3a-pixel"
    assert ids["QualifiedLead"] != "ev-7f3a-pixel"
    assert ids["Schedule"] != "ev-7f3a-pixel"


# -- crashes and retries -------------------------------------------------------------------


def test_crash_after_meta_accepted_is_repaired_without_sending_again(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now), lead_row(2, "New", now=world_now)])

    def crash() -> None:
        raise RuntimeError("killed between Meta's answer and the write-back")

    with pytest.raises(RuntimeError):
        world.bridge(before_write_back=crash).sync()
    assert len(world.meta_events()) == 3
    assert world.rows()[0] == WORLD_HEADER  # nothing written back

    result = world.bridge().sync()

    assert result.events_sent == 0
    assert world.meta_stats()["requests"] == 1
    assert len(world.meta_events()) == 3
    cells = row_cells(world, 2)
    qualified = events_of(world, 1)[-1]
    assert cells["CAPI Status"] == "Sent: Lead, QualifiedLead"
    assert cells["CAPI Event ID"] == qualified["event_id"]
    assert cells["CAPI Sent At"] == sent_at_text(world_now)
    assert str(cells["CAPI Response"]).startswith("ok · fbtrace_id")
    assert row_cells(world, 3)["CAPI Status"] == "Sent: Lead"


def leave_sending(world: World) -> dict[str, str]:
    """What a pass killed right after marking its events `sending` leaves in the ledger:
    (lead key, event name) → event id, and nothing at Meta."""
    bridge = world.bridge()
    _, _, leads = bridge.read()
    the_plan = plan(leads, world.config, bridge.ledger.history(bridge.sheet_tab), world.now)
    bridge.ledger.mark_sending(bridge.sheet_tab, the_plan.events, {}, {}, world.now)
    return {e.event_name: e.event_id for e in the_plan.events}


def test_events_left_sending_are_sent_again_with_the_same_event_id(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now)])
    planned_ids = leave_sending(world)
    assert world.meta_events() == []

    result = world.bridge().sync()

    assert {e["event_name"]: e["event_id"] for e in events_of(world, 1)} == planned_ids
    assert result.events_sent == 2
    assert world.bridge().ledger.counts_by_state(world.bridge().sheet_tab) == {"sent": 2}


def test_row_says_its_events_left_sending_by_an_interrupted_pass_were_sent_again(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now)])
    leave_sending(world)

    world.bridge().sync()

    status = str(row_cells(world, 2)["CAPI Status"])
    assert re.search(r"interrupt|again|re-?sen|earlier pass|previous pass", status, re.I), status


def test_transient_meta_failure_is_reported_and_retried_on_the_next_pass(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    world.meta_fault("500", count=50)

    first = world.bridge().sync()

    status = str(row_cells(world, 2)["CAPI Status"])
    assert first.counts["failed"] == 1
    assert status.startswith("Failed: Lead") and "will retry next sync" in status
    assert world.meta_events() == []

    world.meta_fault("500", count=0)
    second = world.bridge().sync()

    assert [e["event_name"] for e in events_of(world, 1)] == ["Lead"]
    assert second.counts["sent"] == 1
    assert row_cells(world, 2)["CAPI Status"] == "Sent: Lead"


def test_second_caller_waits_briefly_then_is_told_a_sync_is_running(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    holder = world.bridge()

    with holder.ledger.lock(holder.sheet_tab, wait=0), pytest.raises(SyncBusy):
        world.bridge(lock_wait=0.2).sync()

    assert world.meta_events() == []


# -- dry run, errors, call counts ----------------------------------------------------------


def test_dry_run_sends_nothing_and_writes_nothing(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "SQL", now=world_now), lead_row(2, "New", now=world_now)])
    before = world.rows()
    bridge = world.bridge()

    result = bridge.sync(dry_run=True)

    assert world.meta_stats()["requests"] == 0
    assert world.rows() == before
    stats = world.sheets_stats()
    assert stats.get("values.batchUpdate", 0) == stats.get("values.append", 0) == 0
    assert bridge.ledger.counts_by_state(bridge.sheet_tab) == {}
    assert [r.outcome for r in result.rows] == ["due", "due"]
    assert result.rows[0].message == "Would send: Lead, QualifiedLead, Schedule"
    assert result.events_sent == 0


def test_missing_configured_column_stops_the_pass_listing_the_headers_there_are(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)], columns={"email": "E-mail Address"})

    with pytest.raises(SyncError) as caught:
        world.bridge().sync()

    message = str(caught.value)
    assert "'E-mail Address' (columns.email)" in message
    for header in ("Lead Status", "Email", "Leadgen ID"):
        assert repr(header) in message
    assert world.meta_events() == []
    assert world.rows()[0] == WORLD_HEADER


def test_steady_state_pass_reads_once_writes_once_appends_once(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(i, "New", now=world_now) for i in range(1, 6)])
    world.bridge().sync()
    world.edit_cells([(3, "Lead Status", "MQL")])
    reset_sheets_stats(world)

    result = world.bridge().sync()

    stats = world.sheets_stats()
    assert result.events_sent == 1
    assert stats.get("values.get", 0) == 1
    assert stats.get("values.batchUpdate", 0) == 1
    assert stats.get("values.append", 0) == 1
    assert stats.get("values.get", 0) + stats["values.batchUpdate"] + stats["values.append"] <= 3
    assert stats.get("spreadsheets.batchUpdate", 0) == 0
    assert stats.get("spreadsheets.get", 0) <= 1  # the time zone, when not cached


def test_meta_requests_are_events_divided_by_batch_size_rounded_up(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(
        [lead_row(1, "SQL", now=world_now), lead_row(2, "MQL", now=world_now)],
        meta={"batch_size": 2},
    )

    result = world.bridge().sync()

    assert result.events_sent == 5
    assert result.meta_requests == math.ceil(5 / 2)
    assert world.meta_stats()["requests"] == 3
    assert Counter(e["event_name"] for e in world.meta_events()) == {
        "Lead": 2,
        "QualifiedLead": 2,
        "Schedule": 1,
    }
