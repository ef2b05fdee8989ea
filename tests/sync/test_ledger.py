"""The ledger's contract, on both backends (each test runs on SQLite and on PostgreSQL): the
schema and its version, refusing what is not a ledger, the event life cycle (sending →
sent/failed/expired), transitions, edits, passes and the per-tab lock (docs/meta-events.md,
docs/deduplication.md; issue
5 "Deliver" 1; issue 14). What only one backend has is in test_ledger_sqlite.py (the file, its
lease lock, schemas 1 and 2) and test_ledger_postgres.py (advisory locks, the pool, errors)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sheet_bridge.config import Stage
from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sync.ledger import (
    SCHEMA_VERSION,
    AdoptedEvent,
    EditChange,
    LedgerBackend,
    LedgerError,
    QueuedEdit,
    SheetTab,
    SyncBusy,
    open_ledger,
)
from sheet_bridge.sync.plan import BaselineEvent, ExpiredEvent, PlannedEvent, Transition
from tests.ledger_backends import run_sql, table_names

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)

SHEET = "sheet-1"

WHERE = SheetTab(SHEET, "Leads")

ELSEWHERE = SheetTab("another-sheet", "Leads")

LEAD_STAGE = Stage(0, ("New",), "Lead", 100.0, None, False, True, False)

MQL_STAGE = Stage(1, ("MQL",), "QualifiedLead", 1000.0, None, True, True, False)


def planned(
    lead_key: str = "Lkey1",
    stage: Stage = LEAD_STAGE,
    *,
    event_id: str | None = None,
    at: datetime = NOW - timedelta(hours=2),
) -> PlannedEvent:
    return PlannedEvent(
        row_number=2,
        lead_key=lead_key,
        stage=stage,
        event_name=stage.event,
        event_id=event_id or f"sb.{lead_key}.{stage.event}",
        event_time=int(at.timestamp()),
        user_data={"em": "a" * 64},
        lead_status=stage.label,
        action_source="system_generated",
        lead_event_source="Google Sheets",
        value=stage.value,
        currency="INR",
    )


def expired(lead_key: str, event_name: str, event_id: str) -> ExpiredEvent:
    at = NOW - timedelta(days=9)
    return ExpiredEvent(
        2, lead_key, event_name, event_id, int(at.timestamp()), timedelta(days=9), timedelta(7)
    )


@pytest.fixture
def ledger(ledger_location: str) -> Iterator[LedgerBackend]:
    opened = open_ledger(ledger_location)
    yield opened
    opened.close()


# -- schema ------------------------------------------------------------------------------


def test_new_ledger_creates_its_tables_and_records_the_schema_version(
    ledger_location: str,
) -> None:
    open_ledger(ledger_location).close()

    version = run_sql(ledger_location, "SELECT value FROM ledger_info WHERE key='schema_version'")
    assert {"ledger_info", "events", "transitions", "pending_edits", "passes"} <= table_names(
        ledger_location
    )
    assert version == [(str(SCHEMA_VERSION),)]


def test_reopening_a_ledger_keeps_what_it_holds(ledger_location: str) -> None:
    first = open_ledger(ledger_location)
    first.mark_sending(WHERE, [planned()], {}, {}, NOW)
    first.close()

    again = open_ledger(ledger_location)

    assert again.counts_by_state(WHERE) == {"sending": 1}


def test_ledger_written_by_a_newer_version_is_refused_with_upgrade_advice(
    ledger_location: str,
) -> None:
    open_ledger(ledger_location).close()
    run_sql(
        ledger_location,
        "UPDATE ledger_info SET value=? WHERE key='schema_version'",
        (str(SCHEMA_VERSION + 1),),
    )

    with pytest.raises(LedgerError, match="upgrade") as caught:
        open_ledger(ledger_location)
    assert ledger_location in str(caught.value)  # a path, or a URL without a password


def test_a_database_that_is_not_a_ledger_is_refused_naming_its_tables(
    ledger_location: str,
) -> None:
    run_sql(ledger_location, "CREATE TABLE contacts (name TEXT)")
    run_sql(ledger_location, "INSERT INTO contacts VALUES ('Asha')")

    with pytest.raises(LedgerError, match="not a sheet-bridge") as caught:
        open_ledger(ledger_location)

    assert "contacts" in str(caught.value)
    assert table_names(ledger_location) == {"contacts"}
    assert run_sql(ledger_location, "SELECT name FROM contacts") == [("Asha",)]


# -- events --------------------------------------------------------------------------------


def test_sending_then_outcomes_round_trip_through_history(ledger: LedgerBackend) -> None:
    lead = planned("Lkey1", LEAD_STAGE, event_id="pixel-evt-1")
    mql = planned("Lkey1", MQL_STAGE)
    other = planned("Lkey2", LEAD_STAGE)
    ledger.mark_sending(WHERE, [lead, mql, other], {"Lkey1": "strong"}, {"Lkey1": None}, NOW)

    sending = ledger.history(WHERE)
    assert {r.state for h in sending.values() for r in h.events.values()} == {"sending"}

    sent_at = NOW + timedelta(seconds=3)
    ledger.record_outcomes(
        WHERE,
        [
            (lead, SendOutcome("sent", "sent to Meta", "Atrace1", events_received=2)),
            (mql, SendOutcome("sent", "sent to Meta", "Atrace1", events_received=2)),
            (
                other,
                SendOutcome("failed", "Invalid Lead ID", "Atrace2", code=100, subcode=2804019),
            ),
        ],
        sent_at,
    )

    history = ledger.history(WHERE)
    assert set(history) == {"Lkey1", "Lkey2"}
    got_lead = history["Lkey1"].events["Lead"]
    assert got_lead.event_id == "pixel-evt-1"
    assert got_lead.state == "sent"
    assert got_lead.sent_at == sent_at
    assert got_lead.fbtrace_id == "Atrace1"
    assert got_lead.error is None
    assert got_lead.event_time == lead.event_time
    assert history["Lkey1"].events["QualifiedLead"].state == "sent"
    failed = history["Lkey2"].events["Lead"]
    assert failed.state == "failed"
    assert failed.sent_at is None
    assert failed.retry is False
    assert failed.fingerprint == other.fingerprint
    assert failed.error is not None and "Invalid Lead ID" in failed.error
    assert ledger.counts_by_state(WHERE) == {"sent": 2, "failed": 1}
    (stored,) = [
        e for e in ledger.events(WHERE) if e.lead_key == "Lkey1" and e.event_name == "Lead"
    ]
    assert stored.match_strength == "strong"
    assert stored.value == 100.0
    assert stored.currency == "INR"
    assert stored.lead_status == "New"


# Control characters, characters JSON or JavaScript treat apart, and a text that reads like JSON's
# escape of a NUL character.
ODD_TEXTS = ["MQL \x01\x1f\x7f", "😀 ñ \u2028 \ufeff", "q\"\\u0000'\\"]


def texts_and_numbers_round_trip(ledger: LedgerBackend, odd: str) -> None:
    """Marks and answers carrying `odd` in every text, and numbers to the last digit, read back
    exactly (a request's marks and answers reach the database as one JSON array each)."""
    first_key = f"Lkey{odd}"
    events = [
        dataclasses.replace(
            planned(first_key), lead_status=odd, value=40000.55, event_time=2**40 + 3
        ),
        dataclasses.replace(planned("Lkey2", MQL_STAGE), value=1733327000.123456),
    ]
    ledger.mark_sending(WHERE, events, {first_key: odd}, {"Lkey2": odd}, NOW)
    answers = [(e, SendOutcome("failed", odd, f"trace{odd}")) for e in events]
    ledger.mark_sending(WHERE, [], {}, {}, NOW, answered=[(answers, NOW)])

    stored = {e.lead_key: e for e in ledger.events(WHERE)}
    assert set(stored) == {first_key, "Lkey2"}
    first, second = stored[first_key], stored["Lkey2"]
    assert (first.lead_status, first.value, first.event_time) == (odd, 40000.55, 2**40 + 3)
    assert first.match_strength == odd and second.value == 1733327000.123456
    assert {e.state for e in stored.values()} == {"failed"}
    assert {e.fbtrace_id for e in stored.values()} == {f"trace{odd}"}
    assert all(e.error is not None and odd in e.error for e in stored.values())


@pytest.mark.parametrize("odd", ODD_TEXTS)
def test_marks_and_answers_store_every_text_and_number_exactly(
    ledger: LedgerBackend, odd: str
) -> None:
    texts_and_numbers_round_trip(ledger, odd)


def statuses_and_memos_round_trip(ledger: LedgerBackend, odd: str) -> None:
    """A scan's statuses seen and a pass's row memos carrying `odd` in every text, and a time
    to the microsecond, read back exactly (each reaches the database as JSON arrays)."""
    at = NOW - timedelta(hours=1, microseconds=123457)
    ledger.add_transitions(WHERE, [(f"Lkey{odd}", odd, at, f"scan{odd}")], NOW)
    memo = (f"k{odd}", f"digest{odd}", f"fp{odd}", f'["{odd}"]')
    ledger.store_row_memos(WHERE, [memo], [], NOW, NOW)

    assert ledger.history(WHERE)[f"Lkey{odd}"].transitions == (
        Transition(odd, at, f"scan{odd}", NOW),
    )
    assert ledger.row_memos(WHERE)[f"k{odd}"] == memo[1:]


@pytest.mark.parametrize("odd", ODD_TEXTS)
def test_statuses_seen_and_row_memos_store_every_text_exactly(
    ledger: LedgerBackend, odd: str
) -> None:
    statuses_and_memos_round_trip(ledger, odd)


def test_the_statuses_a_scan_saw_of_one_lead_keep_their_order(ledger: LedgerBackend) -> None:
    """A scan's statuses are written in lead order (SQLite: its index written page after
    page); a lead's own, seen at one time, keep the order they were seen in."""
    at = NOW - timedelta(hours=1)
    seen = [("Lb", "MQL", at, "scan"), ("La", "New", at, "scan"), ("Lb", "SQL", at, "scan")]
    ledger.add_transitions(
        WHERE, [*seen, ("La", "MQL", at, "scan"), ("Lb", "New", at, "edit")], NOW
    )

    history = ledger.history(WHERE)

    assert [(t.status, t.source) for t in history["Lb"].transitions] == [
        ("MQL", "scan"),
        ("SQL", "scan"),
        ("New", "edit"),
    ]
    assert [t.status for t in history["La"].transitions] == ["New", "MQL"]


def test_a_pass_s_many_row_memos_are_all_stored(ledger: LedgerBackend) -> None:
    """More memos than one statement takes (SQLite writes a few thousand at a time)."""
    memos = [(f"k{i:05}", f"digest-{i}", "fp", f"[{i}]") for i in range(12_001)]
    ledger.store_row_memos(WHERE, memos[::-1], ["k00007"], NOW, NOW)

    stored = ledger.row_memos(WHERE)

    assert len(stored) == 12_001
    assert stored["k12000"] == ("digest-12000", "fp", "[12000]")
    assert stored["k00007"] == ("digest-7", "fp", "[7]")  # forgotten first, stored after


def test_a_mark_records_the_answers_it_carries_in_its_own_transaction(
    ledger: LedgerBackend,
) -> None:
    """A pass records Meta's answers with the next request's mark (one commit per request):
    the answers are written as record_outcomes would, each at its own time; if the mark fails,
    neither is kept (the answered events stay `sending`: sent again with the same ids)."""
    first, second, third = planned("Lkey1"), planned("Lkey2"), planned("Lkey3", MQL_STAGE)
    ledger.mark_sending(WHERE, [first, second], {}, {}, NOW)
    answered = [
        ([(first, SendOutcome("sent", "sent to Meta", "Atrace1"))], NOW + timedelta(seconds=1)),
        ([(second, SendOutcome("failed", "down", transient=True))], NOW + timedelta(seconds=2)),
    ]
    broken = dataclasses.replace(planned("Lkey4"), lead_key=None)  # type: ignore[arg-type]

    with pytest.raises(LedgerError):
        ledger.mark_sending(WHERE, [third, broken], {}, {}, NOW, answered=answered)
    assert ledger.counts_by_state(WHERE) == {"sending": 2}

    ledger.mark_sending(WHERE, [third], {}, {}, NOW, answered=answered)
    history = ledger.history(WHERE)
    sent = history["Lkey1"].events["Lead"]
    assert (sent.state, sent.sent_at, sent.fbtrace_id) == (
        "sent",
        NOW + timedelta(seconds=1),
        "Atrace1",
    )
    failed = history["Lkey2"].events["Lead"]
    assert (failed.state, failed.retry, failed.sent_at) == ("failed", True, None)
    assert history["Lkey3"].events["QualifiedLead"].state == "sending"

    # Only answers (what a pass flushes when it ends): no event to mark.
    ledger.mark_sending(
        WHERE, [], {}, {}, NOW, answered=[([(third, SendOutcome("sent", "ok"))], NOW)]
    )
    assert ledger.counts_by_state(WHERE) == {"sent": 2, "failed": 1}


def test_transient_failure_is_kept_for_retry(ledger: LedgerBackend) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)

    ledger.record_outcomes(
        WHERE, [(event, SendOutcome("failed", "Meta did not answer", transient=True))], NOW
    )

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert (record.state, record.retry) == ("failed", True)


def test_resending_keeps_the_first_event_id(ledger: LedgerBackend) -> None:
    ledger.mark_sending(WHERE, [planned(event_id="sb.first")], {}, {}, NOW)

    ledger.mark_sending(WHERE, [planned(event_id="sb.second")], {}, {}, NOW)

    assert ledger.history(WHERE)["Lkey1"].events["Lead"].event_id == "sb.first"


def test_unmarking_takes_back_only_what_its_own_mark_made(
    ledger: LedgerBackend, ledger_location: str
) -> None:
    """A request marked ahead that never left (sync/send.py): its new events' records go; a
    record the ledger held before, one another pass marked since, an answered one, and one
    of another tab stay as they are."""
    later = NOW + timedelta(minutes=1)
    held_before = planned("Lheld")
    ledger.mark_sending(WHERE, [held_before], {}, {}, NOW - timedelta(hours=1))
    ahead = [
        dataclasses.replace(planned(key), first=True) for key in ("Lnew", "Lanswered", "Lremarked")
    ]
    again = dataclasses.replace(held_before, first=True)  # wrongly called new: kept all the same
    ledger.mark_sending(WHERE, [*ahead, again], {}, {}, later)
    ledger.mark_sending(ELSEWHERE, ahead, {}, {}, later)
    ledger.record_outcomes(WHERE, [(ahead[1], SendOutcome("sent", "Sent", fbtrace_id="t1"))], later)
    ledger.mark_sending(WHERE, [ahead[2]], {}, {}, later)  # another pass's mark since

    ledger.unmark_sending(WHERE, [*ahead, again], later)

    kept = run_sql(
        ledger_location,
        "SELECT lead_key, state, attempts FROM events WHERE tab = 'Leads' "
        "AND spreadsheet_id = 'sheet-1' ORDER BY lead_key",
    )
    assert kept == [("Lanswered", "sent", 1), ("Lheld", "sending", 2), ("Lremarked", "sending", 2)]
    assert ledger.counts_by_state(ELSEWHERE) == {"sending": 3}
    ledger.unmark_sending(WHERE, [planned("Lheld")], later)  # not new: nothing to take back
    assert len(ledger.events(WHERE)) == 3


def test_history_is_per_spreadsheet(ledger: LedgerBackend) -> None:
    ledger.mark_sending(WHERE, [planned()], {}, {}, NOW)

    assert ledger.history(ELSEWHERE) == {}
    assert ledger.counts_by_state(ELSEWHERE) == {}


def test_expired_event_is_recorded_so_it_is_never_tried_again(ledger: LedgerBackend) -> None:
    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", "sb.x")], NOW)

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert record.state == "expired"
    assert record.event_id == "sb.x"
    assert record.error is not None and "7-day window" in record.error


def test_record_expired_never_overwrites_a_sent_event(ledger: LedgerBackend) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(event, SendOutcome("sent", "sent", "Atrace"))], NOW)

    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", event.event_id)], NOW)

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert record.state == "sent"
    assert record.fbtrace_id == "Atrace"
    assert record.error is None


def test_record_expired_settles_a_failed_event(ledger: LedgerBackend) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(event, SendOutcome("failed", "down", transient=True))], NOW)

    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", event.event_id)], NOW)

    assert ledger.history(WHERE)["Lkey1"].events["Lead"].state == "expired"


# -- transitions and edits -----------------------------------------------------------------


def test_transitions_come_back_in_time_order(ledger: LedgerBackend) -> None:
    t1, t2, t3 = (NOW - timedelta(hours=h) for h in (3, 2, 1))
    ledger.add_transitions(
        WHERE,
        [("Lkey1", "SQL", t2, "edit"), ("Lkey1", "Opportunity", t3, "edit")],
        NOW,
    )
    ledger.add_transitions(WHERE, [("Lkey1", "MQL", t1, "scan")], NOW)
    ledger.add_transitions(WHERE, [], NOW)

    history = ledger.history(WHERE)

    assert history["Lkey1"].transitions == (
        Transition("MQL", t1, "scan", NOW),
        Transition("SQL", t2, "edit", NOW),
        Transition("Opportunity", t3, "edit", NOW),
    )
    assert history["Lkey1"].events == {}


def test_pending_edits_are_kept_until_resolved_into_transitions(ledger: LedgerBackend) -> None:
    t1, t2 = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    second = ledger.add_edit(WHERE, 5, "MQL", "SQL", t2, NOW)
    first = ledger.add_edit(WHERE, 5, "New", "MQL", t1, NOW)
    ledger.add_edit(SheetTab(SHEET, "Other tab"), 5, "New", "MQL", t1, NOW)

    pending = ledger.pending_edits(WHERE)

    assert [(e.id, e.row_number, e.old_value, e.new_value, e.at) for e in pending] == [
        (first, 5, "New", "MQL", t1),
        (second, 5, "MQL", "SQL", t2),
    ]

    ledger.resolve_edits(WHERE, [(e, "Lkey5") for e in pending])

    assert ledger.pending_edits(WHERE) == []
    assert len(ledger.pending_edits(SheetTab(SHEET, "Other tab"))) == 1
    assert ledger.history(WHERE)["Lkey5"].transitions == (
        Transition("MQL", t1, "edit", NOW),
        Transition("SQL", t2, "edit", NOW),
    )


# -- passes --------------------------------------------------------------------------------


def test_last_pass_is_the_latest_finished_real_pass(ledger: LedgerBackend) -> None:
    assert ledger.last_pass(WHERE) == {}
    one = ledger.start_pass(WHERE, "sync", False, NOW)
    ledger.finish_pass(one, {"sent": 3}, NOW + timedelta(seconds=2))
    dry = ledger.start_pass(WHERE, "sync", True, NOW + timedelta(minutes=1))
    ledger.finish_pass(dry, {"sent": 0}, NOW + timedelta(minutes=1))
    ledger.start_pass(WHERE, "edit", False, NOW + timedelta(minutes=2))  # unfinished

    last = ledger.last_pass(WHERE)

    assert last["id"] == one
    assert last["trigger"] == "sync"
    assert last["dry_run"] is False
    assert last["counts"] == {"sent": 3}
    assert last["error"] is None
    assert datetime.fromisoformat(last["started_at"]) == NOW
    assert datetime.fromisoformat(last["finished_at"]) == NOW + timedelta(seconds=2)
    assert ledger.last_pass(WHERE, include_dry_run=True)["id"] == dry
    assert ledger.last_pass(ELSEWHERE) == {}


def test_last_meta_pass_is_the_latest_finished_real_pass_that_called_meta(
    ledger: LedgerBackend,
) -> None:
    assert ledger.last_meta_pass(WHERE) is None
    sent = ledger.start_pass(WHERE, "sync", False, NOW)
    ledger.finish_pass(sent, {"sent": 1}, NOW, summary={"meta_requests": 1, "events_sent": 2})
    refused = ledger.start_pass(WHERE, "edit", False, NOW)
    words = "Meta refused the request: Error validating access token (code 190)"
    ledger.finish_pass(refused, {}, NOW, error=words, summary={"meta_requests": 1})
    for dry_run, error, summary in (
        (False, None, {"meta_requests": 0}),  # an edit that changed nothing
        (False, "SyncError", {"error": "the sheet cannot be read"}),
        (True, None, {"meta_requests": 0}),
    ):
        other = ledger.start_pass(WHERE, "edit", dry_run, NOW)
        ledger.finish_pass(other, {}, NOW, error=error, summary=summary)
    ledger.start_pass(WHERE, "sync", False, NOW)  # still running

    record = ledger.last_meta_pass(WHERE)

    assert record is not None and (record.id, record.error) == (refused, words)
    assert ledger.last_meta_pass(ELSEWHERE) is None


def test_failed_pass_keeps_its_error(ledger: LedgerBackend) -> None:
    pass_id = ledger.start_pass(WHERE, "sync", False, NOW)

    ledger.finish_pass(pass_id, {}, NOW, error="SyncError")

    assert ledger.last_pass(WHERE)["error"] == "SyncError"


# -- lock ----------------------------------------------------------------------------------


def test_second_holder_waits_then_gets_sync_busy(ledger: LedgerBackend) -> None:
    with ledger.lock(WHERE, wait=0):
        started = time.monotonic()
        with pytest.raises(SyncBusy), ledger.lock(WHERE, wait=0.3):
            pass  # pragma: no cover - never entered
        waited = time.monotonic() - started
    assert waited >= 0.3


def test_lock_is_released_after_the_pass_even_when_it_fails(ledger: LedgerBackend) -> None:
    with pytest.raises(RuntimeError), ledger.lock(WHERE, wait=0):
        raise RuntimeError("the pass broke")

    with ledger.lock(WHERE, wait=0):
        pass


def test_locks_of_different_spreadsheets_do_not_block_each_other(ledger: LedgerBackend) -> None:
    with ledger.lock(WHERE, wait=0), ledger.lock(ELSEWHERE, wait=0):
        pass


def test_lock_is_held_across_ledger_objects_on_the_same_ledger(ledger_location: str) -> None:
    first, second = open_ledger(ledger_location), open_ledger(ledger_location)

    with first.lock(WHERE, wait=0), pytest.raises(SyncBusy), second.lock(WHERE, wait=0.1):
        pass  # pragma: no cover - never entered
    first.close()
    second.close()


def test_two_threads_contending_for_the_lock_each_get_it_in_turn(ledger: LedgerBackend) -> None:
    inside = 0
    overlaps: list[int] = []
    entered: list[str] = []
    errors: list[BaseException] = []
    guard = threading.Lock()
    go = threading.Barrier(2)

    def work(name: str) -> None:
        nonlocal inside
        try:
            go.wait()
            for _ in range(3):
                with ledger.lock(WHERE, wait=10):
                    with guard:
                        inside += 1
                        overlaps.append(inside)
                        entered.append(name)
                    time.sleep(0.05)
                    with guard:
                        inside -= 1
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert sorted(entered) == ["a", "a", "a", "b", "b", "b"]
    assert max(overlaps) == 1


def test_locks_are_per_tab(ledger: LedgerBackend) -> None:
    with (
        ledger.lock(WHERE, wait=0),
        ledger.lock(SheetTab(SHEET, "Brand B"), wait=0),
        pytest.raises(SyncBusy),
        ledger.lock(WHERE, wait=0),
    ):
        pass  # pragma: no cover - never entered


# -- tabs ----------------------------------------------------------------------------------
BRAND_B = SheetTab(SHEET, "Brand B")


def test_two_tabs_of_one_spreadsheet_never_share_a_lead(ledger: LedgerBackend) -> None:
    # Issue 12 finding 1: the same lead key in two tabs (leads copied from one into the other)
    # is two leads, one per tab.
    sent = planned("Lkey1")
    ledger.mark_sending(WHERE, [sent], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(sent, SendOutcome("sent", "sent", "Atrace"))], NOW)
    ledger.add_transitions(WHERE, [("Lkey1", "MQL", NOW, "scan")], NOW)
    pass_id = ledger.start_pass(WHERE, "sync", False, NOW)
    ledger.finish_pass(pass_id, {"sent": 1}, NOW)

    assert ledger.history(BRAND_B) == {}
    assert ledger.events(BRAND_B) == []
    assert ledger.counts_by_state(BRAND_B) == {}
    assert ledger.last_pass(BRAND_B) == {}

    again = planned("Lkey1", event_id="sb.brand-b")
    ledger.mark_sending(BRAND_B, [again], {}, {}, NOW)
    assert ledger.history(BRAND_B)["Lkey1"].events["Lead"].state == "sending"
    assert ledger.history(WHERE)["Lkey1"].events["Lead"].state == "sent"


# -- stored state that cannot be read ------------------------------------------------------


def insert_raw(location: str, table: str, at: object, recorded_at: float, **cells: object) -> int:
    """What an older version stored for any `at` it was given (raw SQL, no API check)."""
    if table == "pending_edits":
        sql = (
            "INSERT INTO pending_edits (spreadsheet_id, tab, row_number, old_value, new_value, "
            "at, recorded_at) VALUES (?, 'Leads', ?, NULL, ?, ?, ?) RETURNING id"
        )
        params = (SHEET, cells.get("row", 2), cells.get("status", "MQL"), at, recorded_at)
    else:
        sql = (
            "INSERT INTO transitions (spreadsheet_id, tab, lead_key, status, at, source, "
            "recorded_at) VALUES (?, 'Leads', ?, ?, ?, 'edit', ?) RETURNING id"
        )
        params = (SHEET, cells.get("key", "Lkey1"), cells.get("status", "MQL"), at, recorded_at)
    ((row_id,),) = run_sql(location, sql, params)
    return int(row_id)


# 0001-01-01T00:00:00+14:00 as the old API stored it: 14 hours before year 1 in UTC.
YEAR_0 = datetime(1, 1, 1, tzinfo=UTC).timestamp() - 14 * 3600


@pytest.mark.parametrize(
    "at",
    [
        YEAR_0,
        # Only SQLite can hold text in a time column (PostgreSQL's is double precision).
        pytest.param("not a time", marks=pytest.mark.sqlite_only),
        float("inf"),
        # SQLite stores NaN as NULL (refused: the column is NOT NULL); PostgreSQL keeps it.
        pytest.param(float("nan"), marks=pytest.mark.postgres_only),
        datetime(2001, 1, 1, tzinfo=UTC).timestamp(),
    ],
)
def test_an_unreadable_stored_time_is_skipped_and_listed_not_a_crash(
    ledger: LedgerBackend, ledger_location: str, at: object
) -> None:
    now = NOW.timestamp()
    good_at = NOW - timedelta(hours=1)
    ledger.add_transitions(WHERE, [("Lkey1", "New", good_at, "scan")], NOW)
    bad_edit = insert_raw(ledger_location, "pending_edits", at, now)
    bad_transition = insert_raw(ledger_location, "transitions", at, now)

    assert ledger.history(WHERE)["Lkey1"].transitions == (Transition("New", good_at, "scan", NOW),)
    assert ledger.pending_edits(WHERE) == []
    problems = ledger.unreadable(WHERE)
    assert [(p.table, p.id) for p in problems] == [
        ("pending_edits", bad_edit),
        ("transitions", bad_transition),
    ]
    assert "row 2" in str(problems[0]) and "unusable time" in str(problems[0])

    ledger.drop_unreadable(problems)
    assert ledger.unreadable(WHERE) == []
    assert ledger.history(WHERE)["Lkey1"].transitions == (Transition("New", good_at, "scan", NOW),)


# -- adopting what the sheet says ----------------------------------------------------------


def test_adopt_adds_what_the_ledger_lacks_and_never_changes_what_it_has(
    ledger: LedgerBackend,
) -> None:
    failed = planned("Lkey1")
    ledger.mark_sending(WHERE, [failed], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(failed, SendOutcome("failed", "down", transient=True))], NOW)

    def adopted(key: str) -> AdoptedEvent:
        return AdoptedEvent(key, "Lead", f"sb.{key}", "sent", 1, 2, "New", 0, NOW)

    assert ledger.adopt(WHERE, [adopted("Lkey1"), adopted("Lkey2")], NOW) == 1

    history = ledger.history(WHERE)
    assert history["Lkey1"].events["Lead"].state == "failed"
    assert history["Lkey2"].events["Lead"].state == "sent"
    assert history["Lkey2"].events["Lead"].sent_at == NOW
    assert ledger.history(BRAND_B) == {}


def test_history_of_some_keys_holds_only_those_leads(ledger: LedgerBackend) -> None:
    ledger.mark_sending(WHERE, [planned("Lkey1"), planned("Lkey2"), planned("Lkey3")], {}, {}, NOW)
    ledger.add_transitions(
        WHERE, [("Lkey2", "MQL", NOW, "edit"), ("Lkey4", "New", NOW, "scan")], NOW
    )

    some = ledger.history(WHERE, keys=["Lkey2", "Lkey4", "nobody"])

    assert set(some) == {"Lkey2", "Lkey4"}
    assert set(some["Lkey2"].events) == {"Lead"}
    assert [t.status for t in some["Lkey2"].transitions] == ["MQL"]
    assert ledger.history(WHERE, keys=[]) == {}
    assert set(ledger.history(WHERE)) == {"Lkey1", "Lkey2", "Lkey3", "Lkey4"}


def test_a_pass_record_tells_its_phase_progress_and_answer(ledger: LedgerBackend) -> None:
    pass_id = ledger.start_pass(WHERE, "sync", False, NOW)
    started = ledger.get_pass(pass_id)
    assert started is not None
    assert (started.phase, started.state(NOW), started.where) == ("queued", "running", WHERE)
    assert ledger.running_pass(WHERE, NOW) == started

    ledger.pass_progress(pass_id, "send", 3, 8, NOW + timedelta(seconds=5))
    mid = ledger.get_pass(pass_id)
    assert mid is not None and (mid.phase, mid.done, mid.total) == ("send", 3, 8)
    assert ledger.running_pass(ELSEWHERE, NOW) is None

    ledger.finish_pass(pass_id, {"sent": 8}, NOW + timedelta(seconds=9), summary={"sent": 8})
    done = ledger.get_pass(pass_id)
    assert done is not None and done.state(NOW) == "done"
    assert (done.summary, done.counts) == ({"sent": 8}, {"sent": 8})
    assert ledger.running_pass(WHERE, NOW) is None
    assert ledger.get_pass(pass_id + 1000) is None


def test_a_pass_whose_process_stopped_heart_beating_is_lost_not_running(
    ledger: LedgerBackend,
) -> None:
    pass_id = ledger.start_pass(WHERE, "hourly", False, NOW)
    ledger.pass_progress(pass_id, "send", 1, 4, NOW)
    later = NOW + timedelta(minutes=3)

    record = ledger.get_pass(pass_id)

    assert record is not None and record.state(later) == "lost"
    assert ledger.running_pass(WHERE, later) is None
    failed = ledger.start_pass(WHERE, "sync", False, NOW)
    ledger.finish_pass(failed, {}, NOW, error="SyncError")
    record = ledger.get_pass(failed)
    assert record is not None and record.state(NOW) == "failed"


def test_last_full_pass_is_the_start_of_the_last_finished_real_pass_over_every_lead(
    ledger: LedgerBackend,
) -> None:
    assert ledger.last_full_pass(WHERE) is None
    full = ledger.start_pass(WHERE, "sync", False, NOW)
    ledger.finish_pass(full, {}, NOW + timedelta(seconds=1))
    later = NOW + timedelta(minutes=1)
    for dry_run, is_full, error in ((True, True, None), (False, False, None), (False, True, "x")):
        other = ledger.start_pass(WHERE, "sync", dry_run, later, full=is_full)
        ledger.finish_pass(other, {}, later, error=error)
    ledger.start_pass(WHERE, "sync", False, later)  # still running

    assert ledger.last_full_pass(WHERE) == NOW
    assert ledger.last_full_pass(ELSEWHERE) is None


def test_a_baseline_never_replaces_what_the_ledger_knows(ledger: LedgerBackend) -> None:
    sent = planned("Lkey1")
    ledger.mark_sending(WHERE, [sent], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(sent, SendOutcome("sent", "sent", "Atrace"))], NOW)

    ledger.record_baseline(
        WHERE,
        [
            BaselineEvent(2, "Lkey1", "Lead", "sb.base1", NOW),
            BaselineEvent(3, "Lkey2", "Lead", "sb.base2", NOW - timedelta(hours=1)),
        ],
        NOW,
    )

    history = ledger.history(WHERE)
    assert history["Lkey1"].events["Lead"].state == "sent"
    baseline = history["Lkey2"].events["Lead"]
    assert (baseline.state, baseline.event_id) == ("baseline", "sb.base2")
    assert baseline.event_time == int((NOW - timedelta(hours=1)).timestamp())


def test_a_resend_counts_its_attempts_and_keeps_the_new_payload(
    ledger: LedgerBackend, ledger_location: str
) -> None:
    first = planned("Lkey1")
    ledger.mark_sending(WHERE, [first], {"Lkey1": "weak"}, {"Lkey1": "a note"}, NOW)
    ledger.record_outcomes(WHERE, [(first, SendOutcome("failed", "down", transient=True))], NOW)

    ledger.mark_sending(WHERE, [first], {"Lkey1": "strong"}, {"Lkey1": None}, NOW)

    (stored,) = ledger.events(WHERE)
    assert (stored.state, stored.match_strength) == ("sending", "strong")
    assert run_sql(ledger_location, "SELECT attempts, notes FROM events") == [(2, None)]


def test_many_threads_share_one_ledger(ledger: LedgerBackend) -> None:
    # The web server's threads call one ledger at once (PostgreSQL: more threads than pooled
    # connections; SQLite: one connection per thread).
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                ledger.add_edit(WHERE, n * 10 + i, "New", "MQL", NOW, NOW)
                ledger.counts_by_state(WHERE)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert len(ledger.pending_edits(WHERE)) == 60


def test_one_event_twice_in_one_call_is_applied_in_order_as_row_by_row(
    ledger: LedgerBackend, ledger_location: str
) -> None:
    first = planned("Lkey1", event_id="sb.first")
    again = planned("Lkey1", event_id="sb.again", at=NOW - timedelta(hours=1))

    ledger.mark_sending(WHERE, [first, planned("Lkey2"), again], {}, {}, NOW)

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert (record.event_id, record.event_time) == ("sb.first", again.event_time)
    assert run_sql(ledger_location, "SELECT lead_key, attempts FROM events ORDER BY lead_key") == [
        ("Lkey1", 2),
        ("Lkey2", 1),
    ]


def test_a_first_pass_of_thousands_of_events_lands_whole(ledger: LedgerBackend) -> None:
    # More rows than one bulk statement takes (PostgreSQL writes them in chunks).
    events = [planned(f"L{i:05}") for i in range(5_001)]
    ledger.mark_sending(WHERE, events, {"L00007": "strong"}, {"L00007": "a note"}, NOW)
    ledger.record_outcomes(WHERE, [(e, SendOutcome("sent", "ok", "Atrace")) for e in events], NOW)
    known = [AdoptedEvent(f"L{i:05}", "Lead", "sb.x", "sent", 1, 2, "New", 0, NOW) for i in (0, 1)]
    new = [
        AdoptedEvent(f"N{i:05}", "QualifiedLead", f"sb.n{i}", "sent", 1, 2, "MQL", 1, NOW)
        for i in range(5_000)
    ]

    assert ledger.adopt(WHERE, known + new, NOW) == 5_000
    assert ledger.counts_by_state(WHERE) == {"sent": 10_001}
    (seven,) = [e for e in ledger.events(WHERE) if e.lead_key == "L00007"]
    assert (seven.match_strength, seven.fbtrace_id, seven.value) == ("strong", "Atrace", 100.0)


def test_recent_passes_are_the_newest_finished_ones_of_a_trigger(ledger: LedgerBackend) -> None:
    ids = []
    for n, trigger in enumerate(["hourly", "sync", "hourly", "hourly"]):
        at = NOW + timedelta(minutes=n)
        pass_id = ledger.start_pass(WHERE, trigger, False, at)
        ledger.finish_pass(pass_id, {}, at, error="SyncError" if n % 2 == 0 else None)
        ids.append(pass_id)
    ledger.start_pass(WHERE, "hourly", False, NOW + timedelta(minutes=9))  # still running
    ledger.start_pass(ELSEWHERE, "hourly", False, NOW)

    hourly = ledger.recent_passes(WHERE, 2, trigger="hourly")
    every = ledger.recent_passes(WHERE, 10)

    assert [p.id for p in hourly] == [ids[3], ids[2]]
    assert [p.state(NOW) for p in hourly] == ["done", "failed"]
    assert [p.id for p in every] == ids[::-1]
    assert ledger.recent_passes(ELSEWHERE, 5) == []


# -- the edit queue (schema 4, docs/edits.md) ---------------------------------------------------


def queued(key: str, status: str, at: datetime, previous: str | None = "New") -> QueuedEdit:
    return QueuedEdit(key, 2, previous, status, at, at, at + timedelta(seconds=120))


def test_edits_queue_withdraw_and_dequeue_by_lead_and_time(ledger: LedgerBackend) -> None:
    other = SheetTab(SHEET, "Other tab")
    ledger.add_transitions(WHERE, [("kA", "New", NOW - timedelta(days=1), "seen")], NOW)
    click = queued("kA", "Customer", NOW)
    ledger.record_edits(WHERE, [EditChange("kA", None, click)], NOW)
    ledger.record_edits(WHERE, [EditChange("kB", None, queued("kB", "MQL", NOW))], NOW)

    assert ledger.queued_edits(WHERE) == [click, queued("kB", "MQL", NOW)]
    assert ledger.queued_edits(WHERE, {"kB"}) == [queued("kB", "MQL", NOW)]
    assert ledger.queued_edits(other) == []
    assert [t.status for t in ledger.history(WHERE, {"kA"})["kA"].transitions] == [
        "New",
        "Customer",
    ]

    # Changed back 40 s later: the click's transition and its queue row go, the rest stays.
    later = NOW + timedelta(seconds=40)
    ledger.record_edits(WHERE, [EditChange("kA", NOW, None)], later)
    assert [q.lead_key for q in ledger.queued_edits(WHERE)] == ["kB"]
    assert [t.status for t in ledger.history(WHERE, {"kA"})["kA"].transitions] == ["New"]

    # A pass takes only what was due by its start.
    ledger.dequeue_edits(WHERE, {"kB"}, NOW + timedelta(seconds=119))
    assert [q.lead_key for q in ledger.queued_edits(WHERE)] == ["kB"]
    ledger.dequeue_edits(WHERE, {"kB"}, NOW + timedelta(seconds=120))
    assert ledger.queued_edits(WHERE) == []


def test_a_schema_3_ledger_gains_the_edit_queue_and_keeps_everything(
    ledger_location: str,
) -> None:
    first = open_ledger(ledger_location)
    first.mark_sending(WHERE, [planned("kA")], {}, {}, NOW)
    first.add_transitions(WHERE, [("kA", "New", NOW, "seen")], NOW)
    first.close()
    # Back to schema 3, as today's main writes it: no edit queue.
    run_sql(ledger_location, "DROP TABLE edit_queue")
    run_sql(ledger_location, "UPDATE ledger_info SET value = '3' WHERE key = 'schema_version'")

    again = open_ledger(ledger_location)
    try:
        assert "edit_queue" in table_names(ledger_location)
        assert run_sql(
            ledger_location, "SELECT value FROM ledger_info WHERE key = 'schema_version'"
        ) == [(str(SCHEMA_VERSION),)]
        assert again.counts_by_state(WHERE) == {"sending": 1}
        assert [t.status for t in again.history(WHERE)["kA"].transitions] == ["New"]
        assert again.queued_edits(WHERE) == []  # nothing queued, nothing re-sent
    finally:
        again.close()


def test_a_withdrawn_edit_keeps_its_stamp_before_and_its_times_for_the_planner(
    ledger: LedgerBackend,
) -> None:
    """docs/edits.md: a withdrawn edit's row stays, marked: it waits for nothing, and the
    lead's history names its times (a stamp of them is no status's time)."""
    click = QueuedEdit("kA", 2, "New", "Customer", NOW, NOW, NOW + timedelta(seconds=120), "")
    ledger.record_edits(WHERE, [EditChange("kA", None, click)], NOW)
    assert ledger.queued_edits(WHERE) == [click]  # blank before the stamp: "" kept, not None

    ledger.record_edits(WHERE, [EditChange("kA", NOW, None)], NOW + timedelta(seconds=40))

    assert ledger.queued_edits(WHERE) == []
    assert ledger.history(WHERE, {"kA"})["kA"].withdrawn == ((NOW, NOW),)
    assert ledger.history(WHERE)["kA"].transitions == ()
    ledger.dequeue_edits(WHERE, {"kA"}, NOW + timedelta(days=1))  # a pass takes live ones only
    assert ledger.history(WHERE)["kA"].withdrawn == ((NOW, NOW),)
    # The lead's next edit is queued over it (and waits again).
    again = queued("kA", "SQL", NOW + timedelta(minutes=5))
    ledger.record_edits(WHERE, [EditChange("kA", None, again)], NOW + timedelta(minutes=5))
    assert ledger.queued_edits(WHERE) == [again]
    assert ledger.history(WHERE, {"kA"})["kA"].withdrawn == ()


def test_a_schema_5_ledger_of_before_stamps_gains_the_queue_columns_and_keeps_its_edits(
    ledger_location: str,
) -> None:
    """A ledger at schema 5 made before edit_queue had stamp_before and withdrawn_at (same
    schema number, unreleased) gains them empty on opening; what was queued stays queued."""
    first = open_ledger(ledger_location)
    first.close()
    run_sql(ledger_location, "DROP TABLE edit_queue")
    run_sql(
        ledger_location,
        "CREATE TABLE edit_queue (spreadsheet_id TEXT NOT NULL, tab TEXT NOT NULL, "
        "lead_key TEXT NOT NULL, row_number INTEGER NOT NULL, previous TEXT, status TEXT NOT "
        "NULL, since DOUBLE PRECISION NOT NULL, at DOUBLE PRECISION NOT NULL, due_at DOUBLE "
        "PRECISION NOT NULL, recorded_at DOUBLE PRECISION NOT NULL, "
        "PRIMARY KEY (spreadsheet_id, tab, lead_key))",
    )
    t = NOW.timestamp()
    run_sql(
        ledger_location,
        "INSERT INTO edit_queue VALUES (?, ?, 'kA', 2, 'New', 'MQL', ?, ?, ?, ?)",
        [WHERE.spreadsheet_id, WHERE.tab, t, t, t + 120, t],
    )

    again = open_ledger(ledger_location)
    try:
        assert again.queued_edits(WHERE) == [queued("kA", "MQL", NOW)]
        again.record_edits(WHERE, [EditChange("kA", NOW, None)], NOW)
        assert again.queued_edits(WHERE) == []
        assert again.history(WHERE)["kA"].withdrawn == ((NOW, NOW),)
    finally:
        again.close()
    assert run_sql(
        ledger_location, "SELECT value FROM ledger_info WHERE key = 'schema_version'"
    ) == [(str(SCHEMA_VERSION),)]


@pytest.mark.parametrize("version", ["3", "5"])
def test_a_ledger_without_the_log_count_gains_it_empty_and_keeps_everything(
    ledger_location: str, version: str
) -> None:
    """The CAPI Log's line count (added within schema 5, unreleased): a ledger at 3, or at 5
    made before it, gains the table empty on opening (no count: a pass reads no Log line until
    its next append counts them, docs/operations.md); per tab, the latest count wins."""
    first = open_ledger(ledger_location)
    first.mark_sending(WHERE, [planned("kA")], {}, {}, NOW)
    first.close()
    run_sql(ledger_location, "DROP TABLE log_lines")
    if version == "3":
        run_sql(ledger_location, "DROP TABLE edit_queue")
    run_sql(
        ledger_location, "UPDATE ledger_info SET value = ? WHERE key = 'schema_version'", [version]
    )

    again = open_ledger(ledger_location)
    try:
        assert "log_lines" in table_names(ledger_location)
        assert again.log_lines(WHERE) is None
        assert again.counts_by_state(WHERE) == {"sending": 1}
        again.set_log_lines(WHERE, 41, NOW)
        again.set_log_lines(WHERE, 12, NOW)  # rows of the Log deleted: the append's end wins
        again.set_log_lines(BRAND_B, 7, NOW)
        assert (again.log_lines(WHERE), again.log_lines(BRAND_B)) == (12, 7)
    finally:
        again.close()
    assert run_sql(
        ledger_location, "SELECT value FROM ledger_info WHERE key = 'schema_version'"
    ) == [(str(SCHEMA_VERSION),)]


def test_a_pixels_leads_are_found_by_their_identity_as_last_written_indexed_or_not(
    ledger: LedgerBackend,
) -> None:
    """pixel_events by Leadgen ID, e-mail and phone hash (sync/run.py: one identity per pixel)
    finds the events whose stored user_data holds them, as last written: the same before and
    after index_identities, and never by an identity an event no longer has."""
    ledger.bind_pixel(WHERE, "px1", NOW)
    first = {"em": "e" * 64, "ph": "1" * 64, "lead_id": 1234567890123456789}
    lead = dataclasses.replace(planned("Lone"), user_data=first)
    mql = dataclasses.replace(planned("Lone", MQL_STAGE), user_data=first)
    other = dataclasses.replace(planned("Lother"), user_data={"em": "f" * 64})
    ledger.mark_sending(WHERE, [lead, mql, other], {}, {}, NOW)

    def found(**search: object) -> list[tuple[str, str]]:
        return sorted((p.lead_key, p.event_name) for p in ledger.pixel_events("px1", **search))

    both = [("Lone", "Lead"), ("Lone", "QualifiedLead")]
    for _ in range(2):  # before the index is brought up to date, then after
        assert found(lead_ids=[1234567890123456789]) == both
        assert found(contacts=["e" * 64]) == both
        assert found(contacts=["1" * 64]) == both
        assert found(contacts=["f" * 64]) == [("Lother", "Lead")]
        assert found(contacts=["e" * 64], since=NOW + timedelta(seconds=1)) == []
        assert found(lead_ids=[1]) == found(contacts=["0" * 64]) == []
        ledger.index_identities()
    # Sent again with a new e-mail (the row's cell was corrected): found by the new one only.
    again = dataclasses.replace(lead, user_data={**first, "em": "d" * 64})
    ledger.mark_sending(WHERE, [again], {}, {}, NOW + timedelta(minutes=1))
    for _ in range(2):
        assert found(contacts=["e" * 64]) == [("Lone", "QualifiedLead")]
        assert found(contacts=["d" * 64]) == [("Lone", "Lead")]
        assert found(lead_ids=[1234567890123456789]) == both
        ledger.index_identities()
    # A mark taken back (a request that never left): its event is found no more.
    ahead = dataclasses.replace(planned("Lahead"), user_data={"em": "c" * 64}, first=True)
    ledger.mark_sending(WHERE, [ahead], {}, {}, NOW)
    ledger.index_identities()
    ledger.unmark_sending(WHERE, [ahead], NOW)
    assert found(contacts=["c" * 64]) == []
    assert ledger.index_identities() == 0  # nothing new since


def test_index_identities_takes_at_most_the_notes_it_is_asked_for_oldest_first(
    ledger: LedgerBackend, ledger_location: str
) -> None:
    """`most` (a slice the pass's ledger writer takes while it waits for Meta, sync/send.py):
    one transaction of at most that many notes, the oldest; the rest stay noted, and the
    searches find every event all along. A note is an event in SQLite and a lead in
    PostgreSQL (one per lead a statement wrote): each request below writes one event a lead."""
    from tests.ledger_backends import run_sql

    ledger.bind_pixel(WHERE, "px1", NOW)
    for n in range(3):  # three requests' marks, a lead each
        event = dataclasses.replace(planned(f"L{n}"), user_data={"em": f"{n}" * 64})
        ledger.mark_sending(WHERE, [event], {}, {}, NOW)

    def indexed() -> list[str]:
        rows = run_sql(ledger_location, "SELECT value FROM identity_index ORDER BY 1")
        return [str(v)[0] for (v,) in rows]

    assert ledger.index_identities(most=2) == 2
    assert indexed() == ["0", "1"]  # the oldest two
    assert run_sql(ledger_location, "SELECT COUNT(*) FROM identity_pending") == [(1,)]
    assert {p.lead_key for p in ledger.pixel_events("px1", contacts=["2" * 64])} == {"L2"}
    assert ledger.index_identities(most=2) == 1
    assert indexed() == ["0", "1", "2"]
    assert ledger.index_identities(most=2) == ledger.index_identities() == 0
