"""The SQLite ledger: schema and its versions, refusing unreadable files without resetting them,
the event life cycle (sending → sent/failed/expired), transitions, edits, passes and the
per-spreadsheet lock (DOMAIN.md §8, §9; issue 5 "Deliver" 1)."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sheet_bridge.config import Stage
from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sync.ledger import SCHEMA_VERSION, Ledger, LedgerError, SheetTab, SyncBusy
from sheet_bridge.sync.plan import ExpiredEvent, PlannedEvent, Transition

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
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(ledger_path: Path) -> Ledger:
    return Ledger(ledger_path)


def dead_pid() -> int:
    """The pid of a process that has already exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    pid = proc.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


# -- schema --------------------------------------------------------------------------------


def test_new_ledger_creates_its_tables_and_records_the_schema_version(ledger_path: Path) -> None:
    Ledger(ledger_path)

    db = sqlite3.connect(ledger_path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = db.execute("SELECT value FROM ledger_info WHERE key='schema_version'").fetchone()
    journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    assert {"ledger_info", "events", "transitions", "pending_edits", "passes", "locks"} <= tables
    assert version == (str(SCHEMA_VERSION),)
    assert journal == "wal"


def test_reopening_a_ledger_keeps_what_it_holds(ledger_path: Path) -> None:
    first = Ledger(ledger_path)
    first.mark_sending(WHERE, [planned()], {}, {}, NOW)
    first.close()

    again = Ledger(ledger_path)

    assert again.counts_by_state(WHERE) == {"sending": 1}


def test_ledger_written_by_a_newer_version_is_refused_with_upgrade_advice(
    ledger_path: Path,
) -> None:
    Ledger(ledger_path).close()
    db = sqlite3.connect(ledger_path)
    db.execute(
        "UPDATE ledger_info SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    db.commit()
    db.close()

    with pytest.raises(LedgerError, match="upgrade") as caught:
        Ledger(ledger_path)
    assert str(ledger_path) in str(caught.value)


def test_corrupt_ledger_file_is_refused_and_left_byte_for_byte_unchanged(
    ledger_path: Path,
) -> None:
    garbage = random.Random(5).randbytes(16384)
    ledger_path.write_bytes(garbage)

    with pytest.raises(LedgerError) as caught:
        Ledger(ledger_path)

    message = str(caught.value)
    assert str(ledger_path) in message
    assert "Nothing was reset" in message
    assert ledger_path.read_bytes() == garbage


def test_sqlite_file_that_is_not_a_ledger_is_refused_naming_its_tables(
    ledger_path: Path,
) -> None:
    db = sqlite3.connect(ledger_path)
    db.execute("CREATE TABLE contacts (name TEXT)")
    db.execute("INSERT INTO contacts VALUES ('Asha')")
    db.commit()
    db.close()

    with pytest.raises(LedgerError, match="not a sheet-bridge ledger") as caught:
        Ledger(ledger_path)

    assert "contacts" in str(caught.value)
    db = sqlite3.connect(ledger_path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert tables == {"contacts"}


def test_sqlite_file_that_is_not_a_ledger_is_left_byte_for_byte_unchanged(
    ledger_path: Path,
) -> None:
    # Someone else's database (a typo in [server] ledger) must not be altered, not even
    # switched to WAL journal mode, when it is refused.
    db = sqlite3.connect(ledger_path)
    db.execute("CREATE TABLE contacts (name TEXT)")
    db.commit()
    db.close()
    before = ledger_path.read_bytes()

    with pytest.raises(LedgerError):
        Ledger(ledger_path)

    assert ledger_path.read_bytes() == before


# -- events --------------------------------------------------------------------------------


def test_sending_then_outcomes_round_trip_through_history(ledger: Ledger) -> None:
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


def test_transient_failure_is_kept_for_retry(ledger: Ledger) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)

    ledger.record_outcomes(
        WHERE, [(event, SendOutcome("failed", "Meta did not answer", transient=True))], NOW
    )

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert (record.state, record.retry) == ("failed", True)


def test_resending_keeps_the_first_event_id(ledger: Ledger) -> None:
    ledger.mark_sending(WHERE, [planned(event_id="sb.first")], {}, {}, NOW)

    ledger.mark_sending(WHERE, [planned(event_id="sb.second")], {}, {}, NOW)

    assert ledger.history(WHERE)["Lkey1"].events["Lead"].event_id == "sb.first"


def test_history_is_per_spreadsheet(ledger: Ledger) -> None:
    ledger.mark_sending(WHERE, [planned()], {}, {}, NOW)

    assert ledger.history(ELSEWHERE) == {}
    assert ledger.counts_by_state(ELSEWHERE) == {}


def test_expired_event_is_recorded_so_it_is_never_tried_again(ledger: Ledger) -> None:
    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", "sb.x")], NOW)

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert record.state == "expired"
    assert record.event_id == "sb.x"
    assert record.error is not None and "7-day window" in record.error


def test_record_expired_never_overwrites_a_sent_event(ledger: Ledger) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(event, SendOutcome("sent", "sent", "Atrace"))], NOW)

    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", event.event_id)], NOW)

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert record.state == "sent"
    assert record.fbtrace_id == "Atrace"
    assert record.error is None


def test_record_expired_settles_a_failed_event(ledger: Ledger) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(event, SendOutcome("failed", "down", transient=True))], NOW)

    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", event.event_id)], NOW)

    assert ledger.history(WHERE)["Lkey1"].events["Lead"].state == "expired"


# -- transitions and edits -----------------------------------------------------------------


def test_transitions_come_back_in_time_order(ledger: Ledger) -> None:
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
        Transition("MQL", t1),
        Transition("SQL", t2),
        Transition("Opportunity", t3),
    )
    assert history["Lkey1"].events == {}


def test_pending_edits_are_kept_until_resolved_into_transitions(ledger: Ledger) -> None:
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
        Transition("MQL", t1),
        Transition("SQL", t2),
    )


# -- passes --------------------------------------------------------------------------------


def test_last_pass_is_the_latest_finished_real_pass(ledger: Ledger) -> None:
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


def test_failed_pass_keeps_its_error(ledger: Ledger) -> None:
    pass_id = ledger.start_pass(WHERE, "sync", False, NOW)

    ledger.finish_pass(pass_id, {}, NOW, error="SyncError")

    assert ledger.last_pass(WHERE)["error"] == "SyncError"


# -- lock ----------------------------------------------------------------------------------


def test_second_holder_waits_then_gets_sync_busy(ledger: Ledger) -> None:
    with ledger.lock(WHERE, wait=0):
        started = time.monotonic()
        with pytest.raises(SyncBusy), ledger.lock(WHERE, wait=0.3):
            pass  # pragma: no cover - never entered
        waited = time.monotonic() - started
    assert waited >= 0.3


def test_lock_is_released_after_the_pass_even_when_it_fails(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.lock(WHERE, wait=0):
        raise RuntimeError("the pass broke")

    with ledger.lock(WHERE, wait=0):
        pass


def test_locks_of_different_spreadsheets_do_not_block_each_other(ledger: Ledger) -> None:
    with ledger.lock(WHERE, wait=0), ledger.lock(ELSEWHERE, wait=0):
        pass


def test_lock_is_held_across_ledger_objects_on_the_same_file(ledger_path: Path) -> None:
    first, second = Ledger(ledger_path), Ledger(ledger_path)

    with first.lock(WHERE, wait=0), pytest.raises(SyncBusy), second.lock(WHERE, wait=0.1):
        pass  # pragma: no cover - never entered


def insert_lock(path: Path, *, host: str, pid: int, expires: float) -> None:
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO locks (spreadsheet_id, tab, holder, host, pid, expires) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (SHEET, "Leads", "crashed-pass", host, pid, expires),
    )
    db.commit()
    db.close()


def test_lock_left_by_a_dead_process_on_this_host_is_taken_over(
    ledger: Ledger, ledger_path: Path
) -> None:
    insert_lock(ledger_path, host=socket.gethostname(), pid=dead_pid(), expires=time.time() + 900)

    with ledger.lock(WHERE, wait=0):
        db = sqlite3.connect(ledger_path)
        holder, pid = db.execute(
            "SELECT holder, pid FROM locks WHERE spreadsheet_id=?", (SHEET,)
        ).fetchone()
        db.close()
    assert holder != "crashed-pass"
    assert pid == os.getpid()


def test_lock_held_by_a_live_process_on_this_host_is_respected(
    ledger: Ledger, ledger_path: Path
) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        insert_lock(
            ledger_path, host=socket.gethostname(), pid=other.pid, expires=time.time() + 900
        )
        with pytest.raises(SyncBusy), ledger.lock(WHERE, wait=0.1):
            pass  # pragma: no cover - never entered
    finally:
        other.kill()
        other.wait()


def test_lock_of_another_host_is_respected_until_it_expires(
    ledger: Ledger, ledger_path: Path
) -> None:
    insert_lock(ledger_path, host="other-host.invalid", pid=1, expires=time.time() + 900)
    with pytest.raises(SyncBusy), ledger.lock(WHERE, wait=0.1):
        pass  # pragma: no cover - never entered

    db = sqlite3.connect(ledger_path)
    db.execute("UPDATE locks SET expires=? WHERE spreadsheet_id=?", (time.time() - 1, SHEET))
    db.commit()
    db.close()
    with ledger.lock(WHERE, wait=0):
        pass


def test_two_threads_contending_for_the_lock_each_get_it_in_turn(ledger_path: Path) -> None:
    ledger = Ledger(ledger_path)
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
        finally:
            ledger.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert sorted(entered) == ["a", "a", "a", "b", "b", "b"]
    assert max(overlaps) == 1
