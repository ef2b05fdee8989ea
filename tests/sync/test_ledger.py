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
from sheet_bridge.sync.ledger import (
    LOCK_LEASE,
    SCHEMA_VERSION,
    AdoptedEvent,
    LedgerError,
    LockLost,
    SheetTab,
    SqliteLedger,
    SyncBusy,
)
from sheet_bridge.sync.plan import ExpiredEvent, PlannedEvent, Transition
from tests.sync.schema_1 import SCHEMA_1

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
def ledger(ledger_path: Path) -> SqliteLedger:
    return SqliteLedger(ledger_path)


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
    SqliteLedger(ledger_path)

    db = sqlite3.connect(ledger_path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    version = db.execute("SELECT value FROM ledger_info WHERE key='schema_version'").fetchone()
    journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    assert {"ledger_info", "events", "transitions", "pending_edits", "passes", "locks"} <= tables
    assert version == (str(SCHEMA_VERSION),)
    assert journal == "wal"


def test_reopening_a_ledger_keeps_what_it_holds(ledger_path: Path) -> None:
    first = SqliteLedger(ledger_path)
    first.mark_sending(WHERE, [planned()], {}, {}, NOW)
    first.close()

    again = SqliteLedger(ledger_path)

    assert again.counts_by_state(WHERE) == {"sending": 1}


def test_ledger_written_by_a_newer_version_is_refused_with_upgrade_advice(
    ledger_path: Path,
) -> None:
    SqliteLedger(ledger_path).close()
    db = sqlite3.connect(ledger_path)
    db.execute(
        "UPDATE ledger_info SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    db.commit()
    db.close()

    with pytest.raises(LedgerError, match="upgrade") as caught:
        SqliteLedger(ledger_path)
    assert str(ledger_path) in str(caught.value)


def test_corrupt_ledger_file_is_refused_and_left_byte_for_byte_unchanged(
    ledger_path: Path,
) -> None:
    garbage = random.Random(5).randbytes(16384)
    ledger_path.write_bytes(garbage)

    with pytest.raises(LedgerError) as caught:
        SqliteLedger(ledger_path)

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
        SqliteLedger(ledger_path)

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
        SqliteLedger(ledger_path)

    assert ledger_path.read_bytes() == before


# -- events --------------------------------------------------------------------------------


def test_sending_then_outcomes_round_trip_through_history(ledger: SqliteLedger) -> None:
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


def test_transient_failure_is_kept_for_retry(ledger: SqliteLedger) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)

    ledger.record_outcomes(
        WHERE, [(event, SendOutcome("failed", "Meta did not answer", transient=True))], NOW
    )

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert (record.state, record.retry) == ("failed", True)


def test_resending_keeps_the_first_event_id(ledger: SqliteLedger) -> None:
    ledger.mark_sending(WHERE, [planned(event_id="sb.first")], {}, {}, NOW)

    ledger.mark_sending(WHERE, [planned(event_id="sb.second")], {}, {}, NOW)

    assert ledger.history(WHERE)["Lkey1"].events["Lead"].event_id == "sb.first"


def test_history_is_per_spreadsheet(ledger: SqliteLedger) -> None:
    ledger.mark_sending(WHERE, [planned()], {}, {}, NOW)

    assert ledger.history(ELSEWHERE) == {}
    assert ledger.counts_by_state(ELSEWHERE) == {}


def test_expired_event_is_recorded_so_it_is_never_tried_again(ledger: SqliteLedger) -> None:
    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", "sb.x")], NOW)

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert record.state == "expired"
    assert record.event_id == "sb.x"
    assert record.error is not None and "7-day window" in record.error


def test_record_expired_never_overwrites_a_sent_event(ledger: SqliteLedger) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(event, SendOutcome("sent", "sent", "Atrace"))], NOW)

    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", event.event_id)], NOW)

    record = ledger.history(WHERE)["Lkey1"].events["Lead"]
    assert record.state == "sent"
    assert record.fbtrace_id == "Atrace"
    assert record.error is None


def test_record_expired_settles_a_failed_event(ledger: SqliteLedger) -> None:
    event = planned()
    ledger.mark_sending(WHERE, [event], {}, {}, NOW)
    ledger.record_outcomes(WHERE, [(event, SendOutcome("failed", "down", transient=True))], NOW)

    ledger.record_expired(WHERE, [expired("Lkey1", "Lead", event.event_id)], NOW)

    assert ledger.history(WHERE)["Lkey1"].events["Lead"].state == "expired"


# -- transitions and edits -----------------------------------------------------------------


def test_transitions_come_back_in_time_order(ledger: SqliteLedger) -> None:
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


def test_pending_edits_are_kept_until_resolved_into_transitions(ledger: SqliteLedger) -> None:
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


def test_last_pass_is_the_latest_finished_real_pass(ledger: SqliteLedger) -> None:
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


def test_failed_pass_keeps_its_error(ledger: SqliteLedger) -> None:
    pass_id = ledger.start_pass(WHERE, "sync", False, NOW)

    ledger.finish_pass(pass_id, {}, NOW, error="SyncError")

    assert ledger.last_pass(WHERE)["error"] == "SyncError"


# -- lock ----------------------------------------------------------------------------------


def test_second_holder_waits_then_gets_sync_busy(ledger: SqliteLedger) -> None:
    with ledger.lock(WHERE, wait=0):
        started = time.monotonic()
        with pytest.raises(SyncBusy), ledger.lock(WHERE, wait=0.3):
            pass  # pragma: no cover - never entered
        waited = time.monotonic() - started
    assert waited >= 0.3


def test_lock_is_released_after_the_pass_even_when_it_fails(ledger: SqliteLedger) -> None:
    with pytest.raises(RuntimeError), ledger.lock(WHERE, wait=0):
        raise RuntimeError("the pass broke")

    with ledger.lock(WHERE, wait=0):
        pass


def test_locks_of_different_spreadsheets_do_not_block_each_other(ledger: SqliteLedger) -> None:
    with ledger.lock(WHERE, wait=0), ledger.lock(ELSEWHERE, wait=0):
        pass


def test_lock_is_held_across_ledger_objects_on_the_same_file(ledger_path: Path) -> None:
    first, second = SqliteLedger(ledger_path), SqliteLedger(ledger_path)

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
    ledger: SqliteLedger, ledger_path: Path
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
    ledger: SqliteLedger, ledger_path: Path
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
    ledger: SqliteLedger, ledger_path: Path
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
    ledger = SqliteLedger(ledger_path)
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


def test_a_pass_holds_its_lock_for_a_short_lease_not_fifteen_minutes(
    ledger: SqliteLedger, ledger_path: Path
) -> None:
    # Issue 12 finding 8: a pass killed on another host (a restarted container) left a lock
    # that blocked the tab for up to 900 s. Now the lock lapses LOCK_LEASE after its last
    # renewal.
    with ledger.lock(WHERE, wait=0):
        db = sqlite3.connect(ledger_path)
        (expires,) = db.execute("SELECT expires FROM locks").fetchone()
        db.close()
    assert expires - time.time() <= LOCK_LEASE + 1
    assert LOCK_LEASE <= 60


def test_lock_of_a_crashed_pass_on_another_host_is_taken_once_its_lease_ran_out(
    ledger: SqliteLedger, ledger_path: Path
) -> None:
    insert_lock(ledger_path, host="old-container.invalid", pid=1, expires=time.time() - 0.5)

    with ledger.lock(WHERE, wait=0):
        db = sqlite3.connect(ledger_path)
        (host,) = db.execute("SELECT host FROM locks").fetchone()
        db.close()
    assert host == socket.gethostname()


def test_a_live_holder_renews_its_lease_so_nobody_takes_its_lock(ledger_path: Path) -> None:
    holder, other = SqliteLedger(ledger_path), SqliteLedger(ledger_path)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.lock(WHERE, wait=0, lease=0.4):
            held.set()
            release.wait(10)
        holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(5)
        # Three leases long: without the heartbeat the lock would lapse after 0.4 s.
        with pytest.raises(SyncBusy), other.lock(WHERE, wait=1.2, lease=0.4):
            pass  # pragma: no cover - never entered
    finally:
        release.set()
        thread.join(10)
    with other.lock(WHERE, wait=0):
        pass


def test_a_pass_whose_lock_was_taken_over_stops_before_sending_more(
    ledger: SqliteLedger, ledger_path: Path
) -> None:
    with ledger.lock(WHERE, wait=0, lease=0.2) as held:
        held.check()  # ours
        db = sqlite3.connect(ledger_path)
        db.execute("UPDATE locks SET holder='someone-else'")
        db.commit()
        db.close()
        deadline = time.monotonic() + 5
        while not held.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(LockLost, match="run the sync again"):
            held.check()


def test_locks_are_per_tab(ledger: SqliteLedger) -> None:
    with (
        ledger.lock(WHERE, wait=0),
        ledger.lock(SheetTab(SHEET, "Brand B"), wait=0),
        pytest.raises(SyncBusy),
        ledger.lock(WHERE, wait=0),
    ):
        pass  # pragma: no cover - never entered


# -- tabs ----------------------------------------------------------------------------------

BRAND_B = SheetTab(SHEET, "Brand B")


def test_two_tabs_of_one_spreadsheet_never_share_a_lead(ledger: SqliteLedger) -> None:
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


def test_schema_1_rows_go_to_the_tab_whose_pass_wrote_them(tmp_path: Path) -> None:
    # Two configs (tabs A and B) shared one schema-1 ledger: the bug wrote A's events under
    # keys B's copied leads also had. Each row belongs to the tab of the pass that first
    # planned it (its first_planned is that pass's started_at).
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO ledger_info VALUES ('schema_version', '1')")
    t_a, t_b = NOW.timestamp(), NOW.timestamp() + 60
    db.executemany(
        "INSERT INTO passes (spreadsheet_id, tab, trigger, dry_run, started_at, finished_at) "
        "VALUES (?, ?, 'sync', 0, ?, ?)",
        [(SHEET, "Brand A", t_a, t_a + 1), (SHEET, "Brand B", t_b, t_b + 1)],
    )
    db.executemany(
        "INSERT INTO events (spreadsheet_id, lead_key, event_name, event_id, state, event_time, "
        "first_planned, sent_at, updated_at) VALUES (?, ?, ?, ?, 'sent', 1, ?, ?, ?)",
        [
            (SHEET, "Lkey1", "Lead", "sb.1", t_a, t_a, t_a),
            (SHEET, "Lkey2", "Lead", "sb.2", t_b, t_b, t_b),
        ],
    )
    db.execute(
        "INSERT INTO transitions (spreadsheet_id, lead_key, status, at, source, recorded_at) "
        "VALUES (?, 'Lkey2', 'New', ?, 'scan', ?)",
        (SHEET, t_b, t_b),
    )
    db.commit()
    before = db.execute("SELECT * FROM events ORDER BY lead_key").fetchall()
    db.close()

    ledger = SqliteLedger(path)

    assert set(ledger.history(SheetTab(SHEET, "Brand A"))) == {"Lkey1"}
    b = ledger.history(SheetTab(SHEET, "Brand B"))
    assert set(b) == {"Lkey2"} and [t.status for t in b["Lkey2"].transitions] == ["New"]
    db = sqlite3.connect(path)
    version = db.execute("SELECT value FROM ledger_info WHERE key='schema_version'").fetchone()
    columns = [r[1] for r in db.execute("PRAGMA table_info(events)")]
    after = db.execute(
        f"SELECT {', '.join(c for c in columns if c != 'tab')} FROM events ORDER BY lead_key"
    ).fetchall()
    db.close()
    assert version == (str(SCHEMA_VERSION),)
    assert after == before  # unchanged in content


def test_schema_1_rows_no_pass_can_place_go_to_the_first_tab_that_opens_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO ledger_info VALUES ('schema_version', '1')")
    db.execute(
        "INSERT INTO events (spreadsheet_id, lead_key, event_name, event_id, state, event_time, "
        "first_planned, updated_at) VALUES (?, 'Lkey1', 'Lead', 'sb.1', 'sent', 1, 5, 5)",
        (SHEET,),
    )
    db.commit()
    db.close()

    first = SqliteLedger(path)
    assert first.claim_legacy_rows(SheetTab(SHEET, "Brand A")) == 1
    second = SqliteLedger(path)  # another config of the folder, later
    assert second.claim_legacy_rows(SheetTab(SHEET, "Brand B")) == 0

    assert set(second.history(SheetTab(SHEET, "Brand A"))) == {"Lkey1"}
    assert second.history(SheetTab(SHEET, "Brand B")) == {}
    db = sqlite3.connect(path)
    (tab,) = db.execute(
        "SELECT value FROM ledger_info WHERE key=?", (f"legacy_rows_tab:{SHEET}",)
    ).fetchone()
    db.close()
    assert tab == "Brand A"


# -- stored state that cannot be read ------------------------------------------------------


def insert_raw(path: Path, table: str, at: object, recorded_at: float, **cells: object) -> int:
    db = sqlite3.connect(path)
    if table == "pending_edits":
        cur = db.execute(
            "INSERT INTO pending_edits (spreadsheet_id, tab, row_number, old_value, new_value, "
            "at, recorded_at) VALUES (?, 'Leads', ?, NULL, ?, ?, ?)",
            (SHEET, cells.get("row", 2), cells.get("status", "MQL"), at, recorded_at),
        )
    else:
        cur = db.execute(
            "INSERT INTO transitions (spreadsheet_id, tab, lead_key, status, at, source, "
            "recorded_at) VALUES (?, 'Leads', ?, ?, ?, 'edit', ?)",
            (SHEET, cells.get("key", "Lkey1"), cells.get("status", "MQL"), at, recorded_at),
        )
    db.commit()
    db.close()
    return int(cur.lastrowid or 0)


# 0001-01-01T00:00:00+14:00 as the old API stored it: 14 hours before year 1 in UTC.
YEAR_0 = datetime(1, 1, 1, tzinfo=UTC).timestamp() - 14 * 3600


@pytest.mark.parametrize(
    "at", [YEAR_0, "not a time", float("inf"), datetime(2001, 1, 1, tzinfo=UTC).timestamp()]
)
def test_an_unreadable_stored_time_is_skipped_and_listed_not_a_crash(
    ledger: SqliteLedger, ledger_path: Path, at: object
) -> None:
    now = NOW.timestamp()
    good_at = NOW - timedelta(hours=1)
    ledger.add_transitions(WHERE, [("Lkey1", "New", good_at, "scan")], NOW)
    bad_edit = insert_raw(ledger_path, "pending_edits", at, now)
    bad_transition = insert_raw(ledger_path, "transitions", at, now)

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


# -- files ---------------------------------------------------------------------------------


def test_ledger_and_its_wal_and_shm_are_readable_by_their_owner_only(ledger_path: Path) -> None:
    # They hold SHA-256 hashes of e-mails and phones, unsalted as Meta wants them: a phone
    # number's hash is brute-forced in seconds, so the files are as private as the leads.
    previous = os.umask(0o022)
    try:
        ledger = SqliteLedger(ledger_path)
        ledger.mark_sending(WHERE, [planned()], {}, {}, NOW)
        files = [ledger_path, *(Path(f"{ledger_path}-{s}") for s in ("wal", "shm"))]
        modes = {p.name: p.stat().st_mode & 0o777 for p in files}
    finally:
        os.umask(previous)
    assert modes == dict.fromkeys(modes, 0o600)


# -- adopting what the sheet says ----------------------------------------------------------


def test_adopt_adds_what_the_ledger_lacks_and_never_changes_what_it_has(
    ledger: SqliteLedger,
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


def test_a_schema_2_ledger_opens_with_its_passes_and_events_kept(ledger_path: Path) -> None:
    old = SqliteLedger(ledger_path)
    old.mark_sending(WHERE, [planned()], {}, {}, NOW)
    pass_id = old.start_pass(WHERE, "sync", False, NOW)
    old.finish_pass(pass_id, {"sent": 1}, NOW)
    old.close()
    # Back to the schema today's main wrote: passes without progress or summary.
    db = sqlite3.connect(ledger_path)
    for column in ("phase", "done", "total", "heartbeat_at", "summary"):
        db.execute(f"ALTER TABLE passes DROP COLUMN {column}")
    db.execute("UPDATE ledger_info SET value='2' WHERE key='schema_version'")
    db.commit()
    db.close()

    again = SqliteLedger(ledger_path)

    assert again.counts_by_state(WHERE) == {"sending": 1}
    assert again.last_pass(WHERE)["counts"] == {"sent": 1}
    record = again.get_pass(pass_id)
    assert record is not None and record.state(NOW) == "done" and record.phase == "done"
    db = sqlite3.connect(ledger_path)
    version = db.execute("SELECT value FROM ledger_info WHERE key='schema_version'").fetchone()
    db.close()
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION == 3


def test_history_of_some_keys_holds_only_those_leads(ledger: SqliteLedger) -> None:
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


def test_a_pass_record_tells_its_phase_progress_and_answer(ledger: SqliteLedger) -> None:
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
    ledger: SqliteLedger,
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
