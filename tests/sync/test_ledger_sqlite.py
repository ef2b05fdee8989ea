"""The SQLite ledger's own machinery: the file (WAL, permissions, corruption, someone else's
database left byte for byte), its lease lock (heartbeat, take-over of a dead or expired
holder) and the migrations from schemas 1 and 2. The contract both backends share is in
test_ledger.py."""

from __future__ import annotations

import os
import random
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sheet_bridge.sync.ledger import (
    LOCK_LEASE,
    SCHEMA_VERSION,
    LedgerError,
    LockLost,
    SheetTab,
    SqliteLedger,
    SyncBusy,
)
from tests.sync.schema_1 import SCHEMA_1
from tests.sync.test_ledger import NOW, SHEET, WHERE, planned


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


# -- the file ----------------------------------------------------------------------------


def test_a_new_ledger_file_is_in_wal_mode_with_its_lock_table(ledger_path: Path) -> None:
    SqliteLedger(ledger_path)

    db = sqlite3.connect(ledger_path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    db.close()
    assert "locks" in tables
    assert journal == "wal"


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


# -- the lease lock ----------------------------------------------------------------------


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


def test_lock_of_a_killed_process_not_yet_collected_by_its_parent_is_taken_over(
    ledger: SqliteLedger, ledger_path: Path
) -> None:
    # A SIGKILLed gunicorn's workers stay zombies until init collects them: dead, not holders.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        other.kill()
        stat = Path(f"/proc/{other.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_bytes().rsplit(b")", 1)[1][1:2] != b"Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        insert_lock(
            ledger_path, host=socket.gethostname(), pid=other.pid, expires=time.time() + 900
        )

        with ledger.lock(WHERE, wait=0):
            pass
    finally:
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


# -- schemas 1 and 2 ----------------------------------------------------------------------


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
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION == 5


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


# -- a request's events in one statement (the contract's test, test_ledger.py, for the rest) --


def test_a_text_holding_a_nul_character_is_stored_whole(ledger: SqliteLedger) -> None:
    """SQLite's JSON gives a text back only up to a NUL character: such rows are written row by
    row (PostgreSQL refuses NUL in a text, as it always did)."""
    from tests.sync.test_ledger import texts_and_numbers_round_trip

    texts_and_numbers_round_trip(ledger, "a\x00b")


def test_statuses_and_memos_holding_a_nul_character_are_stored_whole(ledger: SqliteLedger) -> None:
    """The statuses a scan saw and a pass's row memos are written a few thousand to a JSON
    statement too: one holding a NUL character is written row by row."""
    from tests.sync.test_ledger import statuses_and_memos_round_trip

    statuses_and_memos_round_trip(ledger, "a\x00b")


def test_a_mark_leaves_the_identity_index_to_index_identities(ledger: SqliteLedger) -> None:
    """A request's mark notes its events (appended by rowid) and writes nothing into
    identity_index: that is written for a whole pass's events at once, after it has sent
    (sqlite.py _IDENTITIES: the marks' cost). Searches find the events either way."""
    ledger.bind_pixel(WHERE, "px1", NOW)
    events = [planned(f"L{i}") for i in range(3)]
    ledger.mark_sending(WHERE, events, {}, {}, NOW)
    db = ledger._connect()
    assert db.execute("SELECT COUNT(*) FROM identity_pending").fetchone() == (3,)
    assert db.execute("SELECT COUNT(*) FROM identity_index").fetchone() == (0,)
    assert len(ledger.pixel_events("px1", contacts=["a" * 64])) == 3

    assert ledger.index_identities() == 3

    assert db.execute("SELECT COUNT(*) FROM identity_pending").fetchone() == (0,)
    assert db.execute("SELECT field, COUNT(*) FROM identity_index GROUP BY 1").fetchall() == [
        ("em", 3)
    ]
    assert len(ledger.pixel_events("px1", contacts=["a" * 64])) == 3


def test_index_identities_indexes_each_field_an_event_has_and_skips_unreadable_user_data(
    ledger: SqliteLedger,
) -> None:
    """Each identifier an event's user_data has is indexed under its field (the Leadgen ID as
    the number it is); an event without one, or whose user_data is not JSON (a hand-edited
    ledger), gives no entry and stops nothing."""
    ledger.bind_pixel(WHERE, "px1", NOW)
    both, lead, bad = planned("L1"), planned("L2"), planned("L3")
    both.user_data = {"em": "a" * 64, "ph": "b" * 64, "fn": "c" * 64}
    lead.user_data = {"lead_id": 1234567890123456789}
    ledger.mark_sending(WHERE, [both, lead, bad], {}, {}, NOW)
    db = ledger._connect()
    with db:
        db.execute("UPDATE events SET user_data = '{not json' WHERE lead_key = 'L3'")

    assert ledger.index_identities() == 3

    entries = db.execute(
        "SELECT i.field, i.value, e.lead_key FROM identity_index i "
        "JOIN events e ON e.rowid = i.event_rowid ORDER BY 1, 3"
    ).fetchall()
    assert entries == [
        ("em", "a" * 64, "L1"),
        ("lead_id", 1234567890123456789, "L2"),
        ("ph", "b" * 64, "L1"),
    ]
    assert [p.lead_key for p in ledger.pixel_events("px1", lead_ids=[1234567890123456789])] == [
        "L2"
    ]
    assert db.execute("SELECT COUNT(*) FROM identity_pending").fetchone() == (0,)


def test_a_ledger_with_the_indexes_on_user_data_trades_them_for_the_identity_index(
    ledger_path: Path,
) -> None:
    """A ledger made while schema 5 indexed user_data (before the identity tables): opened,
    it loses those indexes, its events are noted, and searches find them before and after
    they are indexed."""
    ledger = SqliteLedger(ledger_path)
    ledger.bind_pixel(WHERE, "px1", NOW)
    ledger.mark_sending(WHERE, [planned("L1"), planned("L2")], {}, {}, NOW)
    ledger.close()
    db = sqlite3.connect(ledger_path)
    for name in ("events_insert_pends_identity", "events_update_pends_identity"):
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE identity_index")
    db.execute("DROP TABLE identity_pending")
    for f in ("lead_id", "em", "ph"):
        db.execute(
            f"CREATE INDEX events_{f} ON events ((CASE WHEN json_valid(user_data) THEN "
            f"json_extract(user_data, '$.{f}') END))"
        )
    db.commit()
    db.close()

    again = SqliteLedger(ledger_path)
    names = {r[0] for r in again._connect().execute("SELECT name FROM sqlite_master")}
    assert not names & {"events_lead_id", "events_em", "events_ph"}
    assert {"identity_index", "identity_pending", "events_insert_pends_identity"} <= names
    assert [p.lead_key for p in again.pixel_events("px1", contacts=["a" * 64])] == ["L1", "L2"]
    assert again.index_identities() == 2
    assert [p.lead_key for p in again.pixel_events("px1", contacts=["a" * 64])] == ["L1", "L2"]
    again.close()
