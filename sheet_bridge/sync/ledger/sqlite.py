"""The embedded ledger: SQLite in WAL mode, one file, one connection per thread.

It is what makes sheet-bridge idempotent (docs/deduplication.md): an event is marked `sending`
before the POST and `sent`/`failed`/`expired` once Meta answered (with the next request's mark
at the latest), before anything is written back to the sheet, so a crash in between never leads
to a second, different send.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sync.ledger.contract import (
    LOCK_LEASE,
    PASS_LOST,
    SCHEMA_VERSION,
    AdoptedEvent,
    Answered,
    EditChange,
    LedgerError,
    LedgerEvent,
    LockLease,
    LockLost,
    PassRecord,
    PendingEdit,
    PixelEvent,
    QueuedEdit,
    RowMemo,
    SheetTab,
    SyncBusy,
    UnreadableRecord,
    from_ts,
    to_ts,
)
from sheet_bridge.sync.ledger.records import (
    EVENT_COLUMNS,
    LAST_PASS_COLUMNS,
    LIVE,
    PASS_COLUMNS,
    PIXEL_EVENT_COLUMNS,
    PIXEL_MATCH_FIELDS,
    PIXEL_OF_EVENT,
    QUEUE_COLUMNS,
    READABLE_AT,
    adopted_rows,
    answered_rows,
    baseline_rows,
    counts_json,
    edit_change_rows,
    expired_rows,
    last_pass_answer,
    lead_histories,
    ledger_event,
    outcome_rows,
    pass_record,
    pixel_event,
    pixel_searches,
    prune_statements,
    queued_edit,
    row_memos,
    sending_rows,
    summary_json,
    transition_rows,
    unreadable_edit,
    unreadable_transition,
)
from sheet_bridge.sync.plan import (
    BaselineEvent,
    ExpiredEvent,
    LeadHistory,
    PlannedEvent,
)

log = logging.getLogger(__name__)

_TABLES = """
CREATE TABLE IF NOT EXISTS ledger_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    lead_key TEXT NOT NULL,
    event_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed', 'expired', 'baseline')),
    event_time INTEGER NOT NULL,
    row_number INTEGER,
    lead_status TEXT,
    stage_index INTEGER,
    fingerprint TEXT,
    retry INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_planned REAL NOT NULL,
    sent_at REAL,
    updated_at REAL NOT NULL,
    fbtrace_id TEXT,
    error TEXT,
    value REAL,
    currency TEXT,
    match_strength TEXT,
    user_data TEXT,
    notes TEXT,
    PRIMARY KEY (spreadsheet_id, tab, lead_key, event_name)
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    lead_key TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_lead ON transitions (spreadsheet_id, tab, lead_key);
CREATE TABLE IF NOT EXISTS pending_edits (
    id INTEGER PRIMARY KEY,
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    row_number INTEGER NOT NULL,
    old_value TEXT,
    new_value TEXT NOT NULL,
    at REAL NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS edit_queue (
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    lead_key TEXT NOT NULL,
    row_number INTEGER NOT NULL,
    previous TEXT,
    status TEXT NOT NULL,
    since REAL NOT NULL,
    at REAL NOT NULL,
    due_at REAL NOT NULL,
    recorded_at REAL NOT NULL,
    stamp_before TEXT,
    withdrawn_at REAL,
    PRIMARY KEY (spreadsheet_id, tab, lead_key)
);
CREATE TABLE IF NOT EXISTS passes (
    id INTEGER PRIMARY KEY,
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    counts TEXT,
    error TEXT,
    full INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL DEFAULT 'done',
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    heartbeat_at REAL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS locks (
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (spreadsheet_id, tab)
);
"""

# Schema 1 (sheet-bridge before tabs were keys) → 2. Rows get the tab of the pass that first
# wrote them (a pass's start time is the `first_planned` / `recorded_at` of what it wrote),
# else the spreadsheet's only tab that ever ran a real pass, else '' (unclaimed: the first
# bridge that opens the ledger for that spreadsheet takes them, see SqliteLedger.claim_legacy_rows).
_WRITER_TAB = """COALESCE(
    (SELECT CASE WHEN COUNT(DISTINCT p.tab) = 1 THEN MIN(p.tab) END FROM passes p
     WHERE p.spreadsheet_id = {t}.spreadsheet_id AND p.dry_run = 0 AND p.started_at = {t}.{at}),
    (SELECT CASE WHEN COUNT(DISTINCT p.tab) = 1 THEN MIN(p.tab) END FROM passes p
     WHERE p.spreadsheet_id = {t}.spreadsheet_id AND p.dry_run = 0),
    '')"""
_EVENT_COLUMNS = (
    "event_id, state, event_time, row_number, lead_status, stage_index, fingerprint, retry, "
    "attempts, first_planned, sent_at, updated_at, fbtrace_id, error, value, currency, "
    "match_strength, user_data, notes"
)
_MIGRATE_1_TO_2 = f"""
ALTER TABLE events RENAME TO events_v1;
ALTER TABLE transitions RENAME TO transitions_v1;
DROP INDEX IF EXISTS transitions_lead;
DROP TABLE IF EXISTS locks;
ALTER TABLE passes ADD COLUMN full INTEGER NOT NULL DEFAULT 0;
{_TABLES}
INSERT INTO events (spreadsheet_id, tab, lead_key, event_name, {_EVENT_COLUMNS})
    SELECT spreadsheet_id, {_WRITER_TAB.format(t="e", at="first_planned")}, lead_key,
           event_name, {_EVENT_COLUMNS}
    FROM events_v1 e;
INSERT INTO transitions (id, spreadsheet_id, tab, lead_key, status, at, source, recorded_at)
    SELECT id, spreadsheet_id, {_WRITER_TAB.format(t="x", at="recorded_at")}, lead_key, status,
           at, source, recorded_at
    FROM transitions_v1 x;
DROP TABLE events_v1;
DROP TABLE transitions_v1;
"""

# Schema 2 → 3: passes record their progress and their answer (any process can report them).
_MIGRATE_2_TO_3 = """
ALTER TABLE passes ADD COLUMN phase TEXT NOT NULL DEFAULT 'done';
ALTER TABLE passes ADD COLUMN done INTEGER NOT NULL DEFAULT 0;
ALTER TABLE passes ADD COLUMN total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE passes ADD COLUMN heartbeat_at REAL;
ALTER TABLE passes ADD COLUMN summary TEXT
"""

# Schema 3 → 4: edits settle before they are sent; the queue of edits waiting (docs/edits.md).
# Nothing is queued by the migration: edits recorded before it were sent, or go with a pass.
_MIGRATE_3_TO_4 = (
    _TABLES[_TABLES.index("CREATE TABLE IF NOT EXISTS edit_queue") :].split(");\n", 1)[0] + ")"
)


# Schema 3 (or 4) → 5: one lead, one identity per pixel. Each tab's pixel (set by its passes), and
# indexes that find a pixel's leads by Leadgen ID, CAPI Key, e-mail or phone hash. Nothing
# stored changes, so nothing is sent again (docs/identity-and-dates.md).
def _user_field(name: str, table: str = "") -> str:
    """A field of the stored user_data JSON, as schema 5's indexes compute it."""
    column = f"{table}user_data"
    return f"(CASE WHEN json_valid({column}) THEN json_extract({column}, '$.{name}') END)"


# Within schema 5: per tab, the CAPI Log's line count after its last pass appended (contract.py).
_LOG_LINES = """
CREATE TABLE IF NOT EXISTS log_lines (
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    lines INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (spreadsheet_id, tab)
);
"""

_SCHEMA_5 = (
    _LOG_LINES
    + """
CREATE TABLE IF NOT EXISTS tab_pixels (
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    pixel_id TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (spreadsheet_id, tab)
);
CREATE INDEX IF NOT EXISTS tab_pixels_pixel ON tab_pixels (pixel_id);
CREATE INDEX IF NOT EXISTS events_lead_key ON events (lead_key);
"""
)

# Within schema 5: how a pixel's leads are found by Leadgen ID, e-mail or phone hash
# (pixel_events). Schema 5 first indexed those fields of every event's stored user_data: three
# more entries at random places of three indexes for each event a request marks, and a request
# is marked in a commit of its own before it leaves, so a commit rewrote ~1,500 index pages for
# ~500 events (measured replaying a 100,000-lead first pass's 376 marks: 13.2 s with those
# indexes, 7.7 s without). Now a trigger notes each event whose user_data was written in
# `identity_pending` (appended by rowid: no random place), and `index_identities` moves the
# noted events' fields into `identity_index` in a few large transactions once a pass has sent
# (each index page written once for thousands of events). A search looks in both, and checks
# each event it finds against its own user_data: an entry left by an event since rewritten or
# deleted finds nothing it should not.
_IDENTITIES = """
CREATE TABLE IF NOT EXISTS identity_index (
    field TEXT NOT NULL,
    value NOT NULL,
    event_rowid INTEGER NOT NULL,
    PRIMARY KEY (field, value, event_rowid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS identity_pending (event_rowid INTEGER PRIMARY KEY);
CREATE TRIGGER IF NOT EXISTS events_insert_pends_identity AFTER INSERT ON events
    WHEN NEW.user_data IS NOT NULL
    BEGIN INSERT OR IGNORE INTO identity_pending VALUES (NEW.rowid); END;
CREATE TRIGGER IF NOT EXISTS events_update_pends_identity AFTER UPDATE OF user_data ON events
    WHEN NEW.user_data IS NOT NULL AND NEW.user_data IS NOT OLD.user_data
    BEGIN INSERT OR IGNORE INTO identity_pending VALUES (NEW.rowid); END;
"""
_IDENTITY_TRIGGERS = ("events_insert_pends_identity", "events_update_pends_identity")
# How many noted events one transaction of index_identities takes: ~0.4 s of holding the
# ledger's write lock, so another tab's pass waits little (its busy timeout is 10 s).
_INDEX_BATCH = 50_000


def _add_identities(db: sqlite3.Connection) -> None:
    """The identity tables and triggers (idempotent). A ledger that had schema 5's indexes on
    user_data loses them, and notes every event that has a user_data: the next pass's
    index_identities indexes them (until then a search reads them from the notes)."""
    fresh = db.execute("SELECT 1 FROM sqlite_master WHERE name='identity_pending'").fetchone()
    _run_script(db, _IDENTITIES)
    for f in PIXEL_MATCH_FIELDS:
        db.execute(f"DROP INDEX IF EXISTS events_{f}")
    if fresh is None:
        db.execute(
            "INSERT OR IGNORE INTO identity_pending SELECT rowid FROM events "
            "WHERE user_data IS NOT NULL"
        )


# Within schema 5: row memos (sync/memo.py), one per lead a full pass found at a fixed point.
# Triggers delete a lead's memo whenever anything of that lead is written (an event, a
# transition, its edit queue), by any writer and any version of sheet-bridge that knows
# schema 5: a memo that exists is one nothing has touched since it was stored.
_MEMO_TOUCHED_BY = ("events", "transitions", "edit_queue")
_LEAD_MEMOS = """
CREATE TABLE IF NOT EXISTS lead_memos (
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    lead_key TEXT NOT NULL,
    digest TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    report TEXT NOT NULL,
    stored_at REAL NOT NULL,
    PRIMARY KEY (spreadsheet_id, tab, lead_key)
);
""" + "".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_{when.lower()}_forgets_memo AFTER {when} ON {table} "
    + "BEGIN "
    + " ".join(
        f"DELETE FROM lead_memos WHERE spreadsheet_id = {row}.spreadsheet_id "
        f"AND tab = {row}.tab AND lead_key = {row}.lead_key;"
        for row in rows
    )
    + " END;\n"
    for table in _MEMO_TOUCHED_BY
    for when, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")), ("DELETE", ("OLD",)))
)
_MEMO_TRIGGERS = 3 * len(_MEMO_TOUCHED_BY)


def _migrate_to_5(db: sqlite3.Connection) -> None:
    """Schema 5, self-contained: new table and indexes only (idempotent)."""
    _run_script(db, _SCHEMA_5)
    _add_queue_columns(db)
    _run_script(db, _LEAD_MEMOS)
    _add_identities(db)


# Added to edit_queue within schema 5 (contract.py): a ledger made before them gains them empty,
# which is what they mean for the edits it holds (nothing known to put back, none withdrawn).
_QUEUE_ADDED = {"stamp_before": "TEXT", "withdrawn_at": "REAL"}


def _missing_queue_columns(db: sqlite3.Connection) -> list[str]:
    have = {r[1] for r in db.execute("PRAGMA table_info(edit_queue)")}
    return [c for c in _QUEUE_ADDED if c not in have]


def _added_within_5_missing(db: sqlite3.Connection) -> bool:
    """Whether a ledger at schema 5 lacks what was added within 5 (edit_queue's columns, the
    log_lines table, the lead_memos table and its triggers, the identity tables and their
    triggers, or still has the indexes on user_data they replace): _migrate_to_5 adds them."""
    if _missing_queue_columns(db):
        return True
    objects = db.execute("SELECT type, name FROM sqlite_master").fetchall()
    names = {name for _, name in objects}
    memo_triggers = sum(1 for t, n in objects if t == "trigger" and n.endswith("_forgets_memo"))
    return bool(
        not {"identity_index", "identity_pending", *_IDENTITY_TRIGGERS} <= names
        or any(f"events_{f}" in names for f in PIXEL_MATCH_FIELDS)
        or "log_lines" not in names
        or "lead_memos" not in names
        or memo_triggers != _MEMO_TRIGGERS
    )


def _add_queue_columns(db: sqlite3.Connection) -> None:
    for column in _missing_queue_columns(db):
        db.execute(f"ALTER TABLE edit_queue ADD COLUMN {column} {_QUEUE_ADDED[column]}")


# A stored time the pass can use: a number (SQLite keeps any type it is given), a real date,
# and plausible for when it was recorded. Anything else is skipped and reported (unreadable).
_READABLE_AT = (
    "(typeof(at) IN ('integer', 'real') AND typeof(recorded_at) IN ('integer', 'real') "
    f"AND {READABLE_AT})"
)


# WAL pages after which a commit copies the WAL into the database file (a checkpoint, with its
# two fsyncs). SQLite's default, 1,000 pages (4 MB), checkpointed after nearly every request of
# a first pass: each request's events touch ~1,000 pages of the indexes on user_data, so the
# same pages were copied and synced again and again. At 16,000 (64 MB of WAL at most) a page
# rewritten by several requests is copied once; measured writing 100,000 leads' events as a
# pass does (bench: 376 requests): 12.7 s → 8.8 s, median of three.
_CHECKPOINT_PAGES = 16_000


class SqliteLedger:
    """SQLite in WAL mode; one connection per thread, so the web server's threads share it.

    The file (and SQLite's -wal and -shm beside it, which take its permissions) is created
    readable by its owner only: it holds hashes of e-mails and phones, which can be brute-forced.
    """

    one_writer = True  # one write transaction at a time (https://sqlite.org/wal.html#concurrency)

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._unclaimed: set[str] = set()  # spreadsheets with schema-1 rows of no tab yet
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        except OSError as exc:
            raise LedgerError(
                f"The ledger {self.path} cannot be opened ({exc.strerror}); check the path and "
                "its permissions"
            ) from None
        try:
            # Look before changing anything: a file that is not a ledger stays byte for byte.
            probe = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            try:
                self._check_schema(probe)
                self._unclaimed = {
                    r[0]
                    for r in probe.execute(
                        "SELECT DISTINCT spreadsheet_id FROM events WHERE tab = '' UNION "
                        "SELECT DISTINCT spreadsheet_id FROM transitions WHERE tab = ''"
                    )
                }
            finally:
                probe.close()
            self._connect()
        except sqlite3.Error as exc:
            raise self._explain(exc) from None

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            except sqlite3.DatabaseError as exc:
                raise self._explain(exc) from None
            self._local.conn = conn
        return conn

    def backup(self, out: Path) -> int:
        """Copy the ledger to `out` with SQLite's online backup (https://sqlite.org/backup.html):
        a consistent copy while passes run, written beside `out` and moved into place once
        checked. The number of events copied."""
        partial = out.with_name(out.name + ".partial")
        partial.unlink(missing_ok=True)
        try:
            copy = sqlite3.connect(partial, isolation_level=None)
            try:
                self._connect().backup(copy)
                if copy.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                    raise LedgerError(f"the copy of {self.path} failed SQLite's integrity check")
                events: int = copy.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            finally:
                copy.close()
            os.replace(partial, out)
        except sqlite3.Error as exc:
            partial.unlink(missing_ok=True)
            raise self._explain(exc) from None
        return events

    def _explain(self, exc: sqlite3.Error) -> LedgerError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return LedgerError(
                f"The ledger {self.path} is locked by another process for more than "
                f"{self.busy_timeout:.0f} s; wait for it to finish, or stop the other process"
            )
        if "not a database" in text or "malformed" in text:
            return LedgerError(
                f"The ledger {self.path} is not a readable sheet-bridge ledger ({text}). "
                "Nothing was reset. Move the file aside (it may be restored from a backup); "
                "a new empty ledger would re-send every lead"
            )
        return LedgerError(f"The ledger {self.path} cannot be used: {text}")

    @contextlib.contextmanager
    def _tx(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._explain(exc) from None

    def _check_schema(self, db: sqlite3.Connection) -> None:
        if self._schema_version(db) == SCHEMA_VERSION and not _added_within_5_missing(db):
            return
        # Writing: one process at a time, and look again once the write lock is ours (another
        # process may have created or migrated the ledger meanwhile).
        db.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version(db)
            if version in (1, 2, 3, 4):
                self._migrate(db, version)
            elif version == 0:
                _run_script(db, _TABLES)
            _migrate_to_5(db)  # and what was added within 5 (a ledger already at 5)
            db.execute(
                "INSERT OR REPLACE INTO ledger_info VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _migrate(self, db: sqlite3.Connection, version: int) -> None:
        """Forward from `version`, one step at a time, inside the caller's transaction."""
        if version == 1:
            _run_script(db, _MIGRATE_1_TO_2)
            placed = db.execute(
                "SELECT spreadsheet_id, tab, COUNT(*) FROM events GROUP BY 1, 2"
            ).fetchall()
            db.execute(
                "INSERT OR REPLACE INTO ledger_info VALUES ('migrated_from_1', ?)",
                (json.dumps([list(r) for r in placed]),),
            )
            log.info("ledger schema 1 → 2; events by (spreadsheet, tab): %s", placed)
        if version <= 2:
            _run_script(db, _MIGRATE_2_TO_3)
        _run_script(db, _MIGRATE_3_TO_4)

    def _schema_version(self, db: sqlite3.Connection) -> int:
        """The file's schema version; 0 for an empty file; LedgerError when it is not ours or
        is newer than this sheet-bridge."""
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "ledger_info" not in tables:
            if tables:
                raise LedgerError(
                    f"{self.path} is an SQLite file but not a sheet-bridge ledger (tables: "
                    f"{', '.join(sorted(tables))}); point [server] ledger at another file"
                )
            return 0
        row = db.execute("SELECT value FROM ledger_info WHERE key='schema_version'").fetchone()
        try:
            version = int(row[0]) if row else 0
        except ValueError:
            version = -1
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"The ledger {self.path} was written by a newer sheet-bridge (schema "
                f"{version}, this one knows {SCHEMA_VERSION}); upgrade sheet-bridge"
            )
        known = (0, 1, 2, 3, 4, SCHEMA_VERSION)
        if version not in known or (version == 0 and tables != {"ledger_info"}):
            raise LedgerError(
                f"The ledger {self.path} has no known schema version; nothing was changed. "
                "Restore it from a backup or move it aside"
            )
        return version

    def claim_legacy_rows(self, where: SheetTab) -> int:
        """Give schema-1 rows of `where`'s spreadsheet that no pass record could place to this
        tab (the first bridge to open the ledger). Recorded in ledger_info; returns the count."""
        if where.spreadsheet_id not in self._unclaimed:
            return 0
        sid, tab = where.spreadsheet_id, where.tab
        with self._tx(immediate=True) as db:
            moved = db.execute(
                "UPDATE OR IGNORE events SET tab=? WHERE spreadsheet_id=? AND tab=''", (tab, sid)
            ).rowcount
            moved += db.execute(
                "UPDATE transitions SET tab=? WHERE spreadsheet_id=? AND tab=''", (tab, sid)
            ).rowcount
            if moved:
                db.execute(
                    "INSERT OR REPLACE INTO ledger_info VALUES (?, ?)",
                    (f"legacy_rows_tab:{sid}", tab),
                )
        self._unclaimed.discard(sid)
        if moved:
            log.warning(
                "ledger: %d rows from before tabs were keys taken by %s (no pass record "
                "named their tab)",
                moved,
                where,
            )
        return moved

    # -- pixels -----------------------------------------------------------------------------
    def bind_pixel(self, where: SheetTab, pixel_id: str, now: datetime) -> None:
        """Record which pixel `where` sends to: its leads are that pixel's (pixel_events)."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO tab_pixels VALUES (?, ?, ?, ?) ON CONFLICT (spreadsheet_id, tab) "
                "DO UPDATE SET pixel_id=excluded.pixel_id, updated_at=excluded.updated_at "
                "WHERE pixel_id != excluded.pixel_id",
                (where.spreadsheet_id, where.tab, pixel_id, to_ts(now)),
            )

    def log_lines(self, where: SheetTab) -> int | None:
        """The CAPI Log's line count after `where`'s last pass appended to it; None: never
        recorded (a ledger from before the count, or no pass appended yet)."""
        row = (
            self._connect()
            .execute(
                "SELECT lines FROM log_lines WHERE spreadsheet_id=? AND tab=?",
                (where.spreadsheet_id, where.tab),
            )
            .fetchone()
        )
        return int(row[0]) if row else None

    def set_log_lines(self, where: SheetTab, lines: int, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO log_lines VALUES (?, ?, ?, ?) ON CONFLICT (spreadsheet_id, tab) "
                "DO UPDATE SET lines=excluded.lines, updated_at=excluded.updated_at",
                (where.spreadsheet_id, where.tab, lines, to_ts(now)),
            )

    def tabs_of_pixel(self, pixel_id: str) -> list[SheetTab]:
        rows = self._connect().execute(
            "SELECT spreadsheet_id, tab FROM tab_pixels WHERE pixel_id=? ORDER BY 1, 2",
            (pixel_id,),
        )
        return [SheetTab(sid, tab) for sid, tab in rows]

    def pixel_has_events(self, pixel_id: str, since: datetime) -> bool:
        """Whether any tab of `pixel_id` (or not yet bound to one) planned an event since
        `since`: a pass skips matching rows by e-mail and phone when none did."""
        row = (
            self._connect()
            .execute(
                f"SELECT 1 FROM events e LEFT JOIN tab_pixels p ON {PIXEL_OF_EVENT} "
                "WHERE (p.pixel_id = ? OR p.pixel_id IS NULL) AND e.first_planned >= ? LIMIT 1",
                (pixel_id, to_ts(since)),
            )
            .fetchone()
        )
        return row is not None

    def pixel_events(
        self,
        pixel_id: str,
        *,
        lead_ids: Collection[int] = (),
        keys: Collection[str] = (),
        contacts: Collection[str] = (),
        since: datetime | None = None,
    ) -> list[PixelEvent]:
        """The events of `pixel_id`'s tabs whose lead has one of these Leadgen IDs or CAPI
        Keys, or (recorded since `since`) one of these e-mail or phone hashes. A tab no pass has
        bound to a pixel yet (its rows are from before schema 5) counts as this pixel's: until
        its own pass names its pixel, nothing it sent is sent again from another tab."""
        searches = pixel_searches(
            lambda name: _user_field(name, "e."),
            int,
            lead_ids=lead_ids,
            keys=keys,
            contacts=contacts,
            since=since,
        )
        fields = {_user_field(name, "e."): name for name in PIXEL_MATCH_FIELDS}
        found: list[PixelEvent] = []
        db = self._connect()
        try:
            for column, values, after in searches:
                sql = (
                    f"SELECT {PIXEL_EVENT_COLUMNS} FROM events e LEFT JOIN tab_pixels p ON "
                    f"{PIXEL_OF_EVENT} "
                    f"WHERE (p.pixel_id = ? OR p.pixel_id IS NULL) AND {column} IN "
                    "(SELECT value FROM json_each(?))"
                )
                params: tuple[object, ...] = (pixel_id, json.dumps(values))
                if column in fields:  # the candidates: indexed, or noted and not yet indexed
                    sql += (
                        " AND e.rowid IN (SELECT event_rowid FROM identity_index WHERE field = ? "
                        "AND value IN (SELECT value FROM json_each(?)) "
                        "UNION SELECT event_rowid FROM identity_pending)"
                    )
                    params = (*params, fields[column], params[1])
                if after is not None:
                    sql += " AND e.first_planned >= ?"
                    params = (*params, to_ts(after))
                found.extend(pixel_event(r) for r in db.execute(sql, params))
        except sqlite3.Error as exc:
            raise self._explain(exc) from None
        return found

    def index_identities(self, most: int | None = None) -> int:
        """Index the Leadgen ID, e-mail and phone hash of the events noted since the last
        call (see _IDENTITIES), a few large transactions for a whole pass's events (`most`:
        one transaction of at most that many, the oldest noted); how many events were
        indexed."""
        done = 0
        batch = _INDEX_BATCH if most is None else max(1, min(most, _INDEX_BATCH))
        fields = ", ".join(f"json_extract(u, '$.{f}') AS {f}" for f in PIXEL_MATCH_FIELDS)
        while True:
            with self._tx(immediate=True) as db:
                row = db.execute(
                    "SELECT COUNT(*), MAX(event_rowid) FROM (SELECT event_rowid FROM "
                    "identity_pending ORDER BY event_rowid LIMIT ?)",
                    (batch,),
                ).fetchone()
                count, upto = row
                if not count:
                    return done
                # Each event's user_data read once for its three fields (this SQLite parses
                # a JSON text again at each json_ call: three fields, read where they are
                # indexed, were six parses an event, a third of the time), into a table of
                # this connection's own, then each field indexed in order.
                db.execute("DROP TABLE IF EXISTS temp.identity_batch")
                db.execute(
                    f"CREATE TEMP TABLE identity_batch AS SELECT r, {fields} FROM ("
                    "SELECT e.rowid AS r, CASE WHEN json_valid(e.user_data) "
                    "THEN e.user_data END AS u "
                    # CROSS JOIN: the notes drive (SQLite otherwise may scan events up to the
                    # newest note's rowid: a whole table for an edit's pass).
                    "FROM identity_pending n CROSS JOIN events e ON e.rowid = n.event_rowid "
                    "WHERE n.event_rowid <= ?)",
                    (upto,),
                )
                for f in PIXEL_MATCH_FIELDS:
                    db.execute(
                        "INSERT OR IGNORE INTO identity_index (field, value, event_rowid) "
                        f"SELECT ?, {f}, r FROM temp.identity_batch WHERE {f} IS NOT NULL "
                        f"ORDER BY {f}",
                        (f,),
                    )
                db.execute("DROP TABLE temp.identity_batch")
                db.execute("DELETE FROM identity_pending WHERE event_rowid <= ?", (upto,))
            done += int(count)
            if most is not None:
                return done

    def close(self) -> None:
        """Close the calling thread's connection (each thread has its own)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def release_thread(self) -> None:
        """A thread about to end (sync/send.py's ledger writer) closes its connection now,
        not whenever its garbage is collected: a connection's close may copy the WAL into the
        file, which must not happen after someone else has replaced the file."""
        self.close()

    # -- lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, where: SheetTab, wait: float, lease: float = LOCK_LEASE) -> Iterator[LockLease]:
        """Hold `where` (one tab) across threads, processes and hosts; SyncBusy after `wait`.

        A heartbeat thread renews the lease every `lease / 4` seconds while the pass runs. A
        lock not renewed for `lease` seconds (its holder died, on any host), or whose holder
        is a dead process on this host, is taken over: a crashed pass never blocks the next
        one for long. "On this host" is the same hostname AND the same PID namespace (two
        containers, or a container and a host cron, can share a hostname while each has its
        own PIDs): the holder's token names its namespace and its process's start time, so
        neither a PID seen from another namespace nor a reused PID is taken for the holder.
        The lease checks the row is still its own (`check`) before each request to Meta.
        """
        holder = _holder_token()
        host = socket.gethostname()
        deadline = time.monotonic() + wait
        while not self._try_lock(where, holder, host, lease):
            if time.monotonic() >= deadline:
                raise SyncBusy(str(where))
            time.sleep(0.05)
        held = _LeaseRow(self, where, holder, lease)
        stop = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat,
            args=(where, holder, held, stop),
            name="sheet-bridge-lock-heartbeat",
            daemon=True,
        )
        heartbeat.start()
        try:
            yield held
        finally:
            stop.set()
            heartbeat.join()
            with self._tx(immediate=True) as db:
                db.execute(
                    "DELETE FROM locks WHERE spreadsheet_id=? AND tab=? AND holder=?",
                    (where.spreadsheet_id, where.tab, holder),
                )

    def _try_lock(self, where: SheetTab, holder: str, host: str, lease: float) -> bool:
        now = time.time()
        key = (where.spreadsheet_id, where.tab)
        with self._tx(immediate=True) as db:
            row = db.execute(
                "SELECT host, pid, expires, holder FROM locks WHERE spreadsheet_id=? AND tab=?",
                key,
            ).fetchone()
            if row is not None:
                other_host, pid, expires, other = row
                if expires > now and (other_host != host or _holder_alive(other, pid)):
                    return False
                log.warning(
                    "lock on %s taken over from %s (pid %s): %s",
                    where,
                    other_host,
                    pid,
                    "its lease expired" if expires <= now else "that process is gone",
                )
            db.execute(
                "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?, ?)",
                (*key, holder, host, os.getpid(), now + lease),
            )
            return True

    def _heartbeat(
        self, where: SheetTab, holder: str, held: LockLease, stop: threading.Event
    ) -> None:
        try:
            while not stop.wait(held.lease / 4):
                try:
                    with self._tx(immediate=True) as db:
                        renewed = db.execute(
                            "UPDATE locks SET expires=? WHERE spreadsheet_id=? AND tab=? "
                            "AND holder=?",
                            (time.time() + held.lease, where.spreadsheet_id, where.tab, holder),
                        ).rowcount
                except LedgerError as exc:
                    log.warning("could not renew the lock on %s: %s", where, exc)
                    continue
                if not renewed:
                    held.lost = True
                    log.error("the lock on %s was taken over; this pass stops sending", where)
                    return
        finally:
            self.close()  # this thread's connection

    # -- history ---------------------------------------------------------------------------
    def history(
        self, where: SheetTab, keys: Collection[str] | None = None
    ) -> dict[str, LeadHistory]:
        """Each lead's events and readable transitions (see `unreadable` for the others);
        with `keys`, only those leads' (an edit's pass reads a handful, not the tab)."""
        db = self._connect()
        scope: tuple[object, ...] = (where.spreadsheet_id, where.tab)
        only = ""
        if keys is not None:
            wanted = sorted(set(keys))
            if not wanted:
                return {}
            # One JSON array parameter: any number of keys, no SQLite variable limit.
            only = " AND lead_key IN (SELECT value FROM json_each(?))"
            scope = (*scope, json.dumps(wanted))
        try:
            return lead_histories(
                db.execute(
                    "SELECT lead_key, event_name, event_id, state, event_time, retry, "
                    "fingerprint, sent_at, fbtrace_id, error, notes FROM events "
                    "WHERE spreadsheet_id=? AND tab=?" + only,
                    scope,
                ),
                db.execute(
                    "SELECT lead_key, status, at, source, recorded_at FROM transitions "
                    f"WHERE spreadsheet_id=? AND tab=? AND {_READABLE_AT}{only} ORDER BY at, id",
                    scope,
                ),
                db.execute(
                    "SELECT lead_key, since, at FROM edit_queue WHERE spreadsheet_id=? AND tab=? "
                    f"AND NOT {LIVE}{only}",
                    scope,
                ),
            )
        except sqlite3.Error as exc:
            raise self._explain(exc) from None

    def unreadable(self, where: SheetTab) -> list[UnreadableRecord]:
        """Stored edits and transitions of `where` whose time cannot be used (not a number, not
        a date, or implausible for when it was recorded): the pass skips and reports them."""
        scope = (where.spreadsheet_id, where.tab)
        db = self._connect()
        try:
            edits = db.execute(
                "SELECT id, row_number, new_value, at FROM pending_edits "
                f"WHERE spreadsheet_id=? AND tab=? AND NOT {_READABLE_AT} ORDER BY id",
                scope,
            ).fetchall()
            changes = db.execute(
                "SELECT id, lead_key, status, at FROM transitions "
                f"WHERE spreadsheet_id=? AND tab=? AND NOT {_READABLE_AT} ORDER BY id",
                scope,
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._explain(exc) from None
        return [*map(unreadable_edit, edits), *map(unreadable_transition, changes)]

    def drop_unreadable(self, records: Sequence[UnreadableRecord]) -> None:
        """Remove what `unreadable` found, so it is reported once, not on every pass."""
        if not records:
            return
        with self._tx() as db:
            for table in ("pending_edits", "transitions"):
                db.executemany(
                    f"DELETE FROM {table} WHERE id=?",
                    [(r.id,) for r in records if r.table == table],
                )

    def add_transitions(
        self,
        where: SheetTab,
        items: Iterable[tuple[str, str, datetime, str]],
        now: datetime,
    ) -> None:
        """Record (lead key, status, at, source) transitions seen by an edit or a scan."""
        # A scan's statuses (100,000 of them in a first pass, written while the pass builds its
        # first requests) a few thousand to a statement, which runs with Python's lock
        # released, as a mark does; in lead order, so the transitions' index (by lead) is
        # written page after page. Stable: a lead's own transitions keep their order.
        ordered = sorted(items, key=itemgetter(0))
        if not ordered:
            return
        t = to_ts(now)
        with self._tx() as db:
            for start in range(0, len(ordered), _ROWS_PER_STATEMENT):
                part = ordered[start : start + _ROWS_PER_STATEMENT]
                seen = _json_rows((k, s, to_ts(at), src) for k, s, at, src in part)
                if _NUL in seen:
                    db.executemany(_ADD_TRANSITION_ROW, transition_rows(where, part, t))
                else:
                    db.execute(_ADD_TRANSITIONS, (where.spreadsheet_id, where.tab, t, seen))

    # -- edits -----------------------------------------------------------------------------
    def add_edit(
        self,
        where: SheetTab,
        row_number: int,
        old_value: str | None,
        new_value: str,
        at: datetime,
        now: datetime,
    ) -> int:
        """Keep an edit durably until a pass maps its row to a lead (nothing lost if busy)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO pending_edits (spreadsheet_id, tab, row_number, old_value, "
                "new_value, at, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    where.spreadsheet_id,
                    where.tab,
                    row_number,
                    old_value,
                    new_value,
                    to_ts(at),
                    to_ts(now),
                ),
            )
            return int(cur.lastrowid or 0)

    def pending_edits(self, where: SheetTab) -> list[PendingEdit]:
        """The tab's readable pending edits, oldest first (`unreadable` lists the others)."""
        db = self._connect()
        try:
            rows = db.execute(
                "SELECT id, row_number, old_value, new_value, at, recorded_at FROM pending_edits "
                f"WHERE spreadsheet_id=? AND tab=? AND {_READABLE_AT} ORDER BY at, id",
                (where.spreadsheet_id, where.tab),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._explain(exc) from None
        return [PendingEdit(i, r, o, n, from_ts(a), from_ts(t)) for i, r, o, n, a, t in rows]

    def resolve_edits(
        self, where: SheetTab, resolved: Sequence[tuple[PendingEdit, str | None]]
    ) -> None:
        """Turn pending edits into transitions of the lead each maps to (None: no lead, the
        edit is dropped), in one transaction. A transition keeps when its edit was recorded."""
        sid, tab = where.spreadsheet_id, where.tab
        rows = [
            (sid, tab, key, e.new_value, to_ts(e.at), "edit", to_ts(e.recorded_at))
            for e, key in resolved
            if key is not None
        ]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO transitions (spreadsheet_id, tab, lead_key, status, at, source, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany("DELETE FROM pending_edits WHERE id=?", [(e.id,) for e, _ in resolved])

    def record_edits(self, where: SheetTab, changes: Sequence[EditChange], now: datetime) -> None:
        """Withdraw, record and queue what edits did to their leads, in one transaction."""
        rows = edit_change_rows(where, changes, to_ts(now))
        with self._tx(immediate=True) as db:
            db.executemany(
                "DELETE FROM transitions WHERE spreadsheet_id=? AND tab=? AND lead_key=? "
                "AND source='edit' AND at >= ?",
                rows.withdrawn,
            )
            db.executemany(
                "INSERT INTO transitions (spreadsheet_id, tab, lead_key, status, at, source, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows.transitions,
            )
            db.executemany(
                "UPDATE edit_queue SET withdrawn_at=? WHERE spreadsheet_id=? AND tab=? "
                f"AND lead_key=? AND {LIVE}",
                rows.dequeued,
            )
            db.executemany(
                f"INSERT OR REPLACE INTO edit_queue (spreadsheet_id, tab, {QUEUE_COLUMNS}, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows.queue,
            )

    def queued_edits(
        self, where: SheetTab, keys: Collection[str] | None = None
    ) -> list[QueuedEdit]:
        """The tab's queued edits (with `keys`, only those leads'), the first due first."""
        scope: tuple[object, ...] = (where.spreadsheet_id, where.tab)
        only = ""
        if keys is not None:
            only = " AND lead_key IN (SELECT value FROM json_each(?))"
            scope = (*scope, json.dumps(sorted(set(keys))))
        db = self._connect()
        try:
            rows = db.execute(
                f"SELECT {QUEUE_COLUMNS} FROM edit_queue WHERE spreadsheet_id=? AND tab=? "
                f"AND {LIVE}{only} ORDER BY due_at, lead_key",
                scope,
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._explain(exc) from None
        return [queued_edit(r) for r in rows]

    def dequeue_edits(self, where: SheetTab, keys: Collection[str], now: datetime) -> None:
        """Remove the queued edits of these leads that were due by `now` (a pass took them)."""
        if not keys:
            return
        with self._tx(immediate=True) as db:
            db.execute(
                f"DELETE FROM edit_queue WHERE spreadsheet_id=? AND tab=? AND {LIVE} "
                "AND due_at <= ? AND lead_key IN (SELECT value FROM json_each(?))",
                (where.spreadsheet_id, where.tab, to_ts(now), json.dumps(sorted(set(keys)))),
            )

    # -- events ----------------------------------------------------------------------------
    def mark_sending(
        self,
        where: SheetTab,
        events: Sequence[PlannedEvent],
        strengths: Mapping[str, str],
        notes: Mapping[str, str | None],
        now: datetime,
        answered: Answered = (),
    ) -> None:
        """Before the POST: the event exists, with its final event_id, as `sending`; the
        answers to earlier requests (`answered`) are recorded first, in the same transaction
        (contract.py): no commit of their own."""
        # One statement marks a request's ~500 events; SQLite keeps its statement journal
        # (what the pages held before it, to undo it alone) in a temporary file by default:
        # ~1 s of writes in a 100,000-lead first pass. In memory, on this connection only
        # (https://sqlite.org/pragma.html#pragma_temp_store): the journal lasts one statement.
        # Set once per connection: each statement costs the writing thread Python's lock back.
        conn = self._connect()
        if getattr(self._local, "journal_in_memory", None) is not conn:
            conn.execute("PRAGMA temp_store=MEMORY")
            self._local.journal_in_memory = conn
        with self._tx() as db:
            if answered:
                _record_outcomes(db, where, answered_rows(where, answered))
            if events:
                t = to_ts(now)
                rows = list(sending_rows(where, events, strengths, notes, t))
                marked = _json_rows((*r[2:10], *r[12:]) for r in rows)  # without tab and time
                if _NUL in marked:
                    db.executemany(_MARK_SENDING_ROW, rows)
                else:
                    db.execute(_MARK_SENDING, (where.spreadsheet_id, where.tab, t, marked))

    def unmark_sending(
        self, where: SheetTab, events: Sequence[PlannedEvent], marked_at: datetime
    ) -> None:
        """Delete the records of `events` (each new to the ledger) that their mark alone left:
        `sending`, attempts 1, planned at `marked_at` (contract.py)."""
        firsts = [(e.lead_key, e.event_name) for e in events if e.first]
        if not firsts:
            return
        with self._tx() as db:
            db.executemany(
                "DELETE FROM events WHERE spreadsheet_id=? AND tab=? AND lead_key=? "
                "AND event_name=? AND state='sending' AND attempts=1 AND first_planned=?",
                [(where.spreadsheet_id, where.tab, k, n, to_ts(marked_at)) for k, n in firsts],
            )

    def record_outcomes(
        self,
        where: SheetTab,
        results: Sequence[tuple[PlannedEvent, SendOutcome]],
        now: datetime,
    ) -> None:
        """Right after Meta answers, before the sheet is written."""
        rows = outcome_rows(where, results, to_ts(now))
        with self._tx() as db:
            _record_outcomes(db, where, rows)

    def record_expired(
        self, where: SheetTab, expired: Sequence[ExpiredEvent], now: datetime
    ) -> None:
        """Planned too old to send: kept so it is never tried again, and reported."""
        rows = expired_rows(where, expired, to_ts(now))
        with self._tx() as db:
            db.executemany(
                "INSERT INTO events (spreadsheet_id, tab, lead_key, event_name, event_id, state, "
                "event_time, row_number, first_planned, updated_at, error) "
                "VALUES (?, ?, ?, ?, ?, 'expired', ?, ?, ?, ?, ?) "
                "ON CONFLICT (spreadsheet_id, tab, lead_key, event_name) DO UPDATE SET "
                "state='expired', updated_at=excluded.updated_at, error=excluded.error "
                "WHERE state != 'sent'",
                rows,
            )

    def record_baseline(
        self, where: SheetTab, baseline: Sequence[BaselineEvent], now: datetime
    ) -> None:
        """Stages reached before sheet-bridge saw when: kept (never sent) so reports and the
        moved-back check know them; a later defensible time may still send them."""
        rows = baseline_rows(where, baseline, to_ts(now))
        with self._tx() as db:
            db.executemany(
                "INSERT INTO events (spreadsheet_id, tab, lead_key, event_name, event_id, state, "
                "event_time, row_number, first_planned, updated_at, error) "
                "VALUES (?, ?, ?, ?, ?, 'baseline', ?, ?, ?, ?, ?) "
                "ON CONFLICT (spreadsheet_id, tab, lead_key, event_name) DO NOTHING",
                rows,
            )

    def adopt(self, where: SheetTab, events: Sequence[AdoptedEvent], now: datetime) -> int:
        """Take events the sheet shows as sent or expired into the ledger; what the ledger
        already knows of a (lead, event) is never changed. Returns how many were new."""
        rows = adopted_rows(where, events, to_ts(now))
        with self._tx(immediate=True) as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO events (spreadsheet_id, tab, lead_key, event_name, event_id, state, "
                "event_time, row_number, lead_status, stage_index, first_planned, sent_at, "
                "updated_at, error, value, currency, match_strength, user_data, fbtrace_id, "
                "notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (spreadsheet_id, tab, lead_key, event_name) DO NOTHING",
                rows,
            )
            return db.total_changes - before

    def events(self, where: SheetTab) -> list[LedgerEvent]:
        db = self._connect()
        return [
            ledger_event(r)
            for r in db.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE spreadsheet_id=? AND tab=? "
                "ORDER BY event_time, lead_key",
                (where.spreadsheet_id, where.tab),
            )
        ]

    def counts_by_state(self, where: SheetTab) -> dict[str, int]:
        db = self._connect()
        return {
            state: n
            for state, n in db.execute(
                "SELECT state, COUNT(*) FROM events WHERE spreadsheet_id=? AND tab=? "
                "GROUP BY state",
                (where.spreadsheet_id, where.tab),
            )
        }

    # -- passes ----------------------------------------------------------------------------
    def start_pass(
        self, where: SheetTab, trigger: str, dry_run: bool, now: datetime, full: bool = True
    ) -> int:
        """`full`: the pass plans every lead of the tab (not one edit's lead)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO passes (spreadsheet_id, tab, trigger, dry_run, started_at, full, "
                "phase, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?)",
                (
                    where.spreadsheet_id,
                    where.tab,
                    trigger,
                    int(dry_run),
                    to_ts(now),
                    int(full),
                    to_ts(now),
                ),
            )
            return int(cur.lastrowid or 0)

    def pass_progress(self, pass_id: int, phase: str, done: int, total: int, now: datetime) -> None:
        """Where a running pass is (read / send n of m / write); also its heartbeat."""
        with self._tx() as db:
            db.execute(
                "UPDATE passes SET phase=?, done=?, total=?, heartbeat_at=? WHERE id=?",
                (phase, done, total, to_ts(now), pass_id),
            )

    def finish_pass(
        self,
        pass_id: int,
        counts: dict[str, int],
        now: datetime,
        error: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None:
        # A pass already marked lost (the pass that took its lock over found it unfinished)
        # stays lost, when and why: only its counts and answer (what it did send) are kept.
        with self._tx() as db:
            db.execute(
                "UPDATE passes SET finished_at=CASE WHEN error=? THEN finished_at ELSE ? END, "
                "counts=?, error=CASE WHEN error=? THEN error ELSE ? END, phase='done', "
                "heartbeat_at=?, summary=? WHERE id=?",
                (
                    PASS_LOST,
                    to_ts(now),
                    counts_json(counts),
                    PASS_LOST,
                    error,
                    to_ts(now),
                    summary_json(summary),
                    pass_id,
                ),
            )

    def get_pass(self, pass_id: int) -> PassRecord | None:
        row = (
            self._connect()
            .execute(f"SELECT {PASS_COLUMNS} FROM passes WHERE id=?", (pass_id,))
            .fetchone()
        )
        return pass_record(row) if row is not None else None

    def running_pass(self, where: SheetTab, now: datetime) -> PassRecord | None:
        """The tab's newest unfinished pass whose process is still alive, if any."""
        for row in self._connect().execute(
            f"SELECT {PASS_COLUMNS} FROM passes WHERE spreadsheet_id=? AND tab=? "
            "AND finished_at IS NULL ORDER BY id DESC LIMIT 5",
            (where.spreadsheet_id, where.tab),
        ):
            record = pass_record(row)
            if record.state(now) == "running":
                return record
        return None

    def recent_passes(
        self, where: SheetTab, limit: int, trigger: str | None = None
    ) -> list[PassRecord]:
        """The tab's newest finished passes (of one trigger), newest first: an hourly pass
        that failed several times in a row is an alert."""
        rows = (
            self._connect()
            .execute(
                f"SELECT {PASS_COLUMNS} FROM passes WHERE spreadsheet_id=? AND tab=? "
                "AND finished_at IS NOT NULL AND (? IS NULL OR trigger=?) ORDER BY id DESC LIMIT ?",
                (where.spreadsheet_id, where.tab, trigger, trigger, limit),
            )
            .fetchall()
        )
        return [pass_record(r) for r in rows]

    def last_meta_pass(self, where: SheetTab) -> PassRecord | None:
        """The tab's newest finished pass that called Meta (made a request, or was refused in
        Meta's words): whether Meta takes the token is its answer, not a later pass's that had
        nothing to send."""
        row = (
            self._connect()
            .execute(
                f"SELECT {PASS_COLUMNS} FROM passes WHERE spreadsheet_id=? AND tab=? "
                "AND finished_at IS NOT NULL AND dry_run=0 AND (error LIKE '% %' OR "
                "COALESCE(json_extract(summary, '$.meta_requests'), 0) > 0) "
                "ORDER BY id DESC LIMIT 1",
                (where.spreadsheet_id, where.tab),
            )
            .fetchone()
        )
        return pass_record(row) if row is not None else None

    def last_full_pass(self, where: SheetTab) -> datetime | None:
        """When the last completed pass that read every lead of the tab started: it saw each
        lead at its then-latest status (the bound of a scan's estimate, sync/plan.py)."""
        db = self._connect()
        row = db.execute(
            "SELECT MAX(started_at) FROM passes WHERE spreadsheet_id=? AND tab=? AND dry_run=0 "
            "AND finished_at IS NOT NULL AND error IS NULL AND full=1",
            (where.spreadsheet_id, where.tab),
        ).fetchone()
        return from_ts(row[0]) if row and row[0] is not None else None

    def prune_passes(self, where: SheetTab, now: datetime) -> tuple[int, int]:
        """Drop old passes' answers and delete older passes (contract.py KEEP_PASSES,
        SUMMARY_DAYS, RECORD_DAYS); (answers dropped, records deleted)."""
        full_pass = "dry_run = 0 AND finished_at IS NOT NULL AND error IS NULL AND full = 1"
        with self._tx() as db:
            dropped, deleted = (
                db.execute(sql, params).rowcount
                for sql, params in prune_statements(where, now, "?", full_pass)
            )
        return dropped, deleted

    def last_pass(self, where: SheetTab, include_dry_run: bool = False) -> dict[str, Any]:
        row = (
            self._connect()
            .execute(
                f"SELECT {LAST_PASS_COLUMNS} FROM passes WHERE spreadsheet_id=? AND tab=? "
                "AND finished_at IS NOT NULL "
                + ("" if include_dry_run else "AND dry_run=0 ")
                + "ORDER BY id DESC LIMIT 1",
                (where.spreadsheet_id, where.tab),
            )
            .fetchone()
        )
        return last_pass_answer(row)

    # -- row memos (sync/memo.py) ----------------------------------------------------------
    def row_memos(self, where: SheetTab) -> dict[str, RowMemo]:
        """The tab's row memos by lead key (the triggers of _LEAD_MEMOS deleted those of every
        lead written since they were stored)."""
        try:
            return row_memos(
                self._connect().execute(
                    "SELECT lead_key, digest, fingerprint, report FROM lead_memos "
                    "WHERE spreadsheet_id=? AND tab=?",
                    (where.spreadsheet_id, where.tab),
                )
            )
        except sqlite3.Error as exc:
            raise self._explain(exc) from None

    def store_row_memos(
        self,
        where: SheetTab,
        memos: Sequence[tuple[str, str, str, str]],
        forget: Collection[str],
        since: datetime,
        now: datetime,
    ) -> None:
        """Store (lead key, digest, fingerprint, report) memos and delete those of `forget`, in
        one transaction. An edit is recorded without the tab's lock: a lead with an edit
        recorded or withdrawn since `since` (the pass's start) may have changed after the pass
        read its history, so its memo is not kept."""
        sid, tab = where.spreadsheet_id, where.tab
        t, stored = to_ts(since), to_ts(now)
        with self._tx(immediate=True) as db:
            db.execute(
                "DELETE FROM lead_memos WHERE spreadsheet_id=? AND tab=? "
                "AND lead_key IN (SELECT value FROM json_each(?))",
                (sid, tab, json.dumps(sorted(forget))),
            )
            # In lead order (the table's key, so its pages are written one after another),
            # a few thousand memos a statement (_ROWS_PER_STATEMENT), each run with Python's
            # lock released.
            ordered = sorted(memos, key=itemgetter(0))
            for start in range(0, len(ordered), _ROWS_PER_STATEMENT):
                part = ordered[start : start + _ROWS_PER_STATEMENT]
                rows = _json_rows(part)
                if _NUL in rows:
                    db.executemany(
                        _STORE_MEMO_ROW,
                        ((sid, tab, k, d, f, r, stored) for k, d, f, r in part),
                    )
                else:
                    db.execute(_STORE_MEMOS, (sid, tab, stored, rows))
            db.execute(
                "DELETE FROM lead_memos WHERE spreadsheet_id=? AND tab=? AND lead_key IN ("
                "SELECT lead_key FROM edit_queue WHERE spreadsheet_id=? AND tab=? "
                "AND (recorded_at >= ? OR withdrawn_at >= ?) UNION "
                "SELECT lead_key FROM transitions WHERE spreadsheet_id=? AND tab=? "
                "AND source='edit' AND recorded_at >= ?)",
                (sid, tab, sid, tab, t, t, sid, tab, t),
            )


# Many requests' events in one statement, their rows as one JSON array (each row a JSON array):
# a statement is one call into SQLite, which runs it without Python's lock. One call per row
# (executemany) takes the lock back for every row, and a thread writing the ledger while the
# pass's thread runs Python then waits for the lock once per row (sync/send.py LedgerWrites).
# SQLite's JSON gives back a text only up to a NUL character: rows with one are bound one by one.
def _json_rows(rows: Iterable[Sequence[object]]) -> str:
    """Rows as a JSON array for json_each (UTF-8 as is: no surrogate escapes for SQLite's JSON
    to decode). A number that is not finite cannot be stored this way: ValueError."""
    return _encode_rows(list(rows))


_encode_rows = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_NUL = "\\u0000"  # how JSON writes a NUL character (or a text holding a backslash and "u0000")


def _row_field(i: int) -> str:
    return f"json_extract(value, '$[{i}]')"


_MARK_COLUMNS = (
    "INSERT INTO events (spreadsheet_id, tab, lead_key, event_name, event_id, state, "
    "event_time, row_number, lead_status, stage_index, fingerprint, attempts, first_planned, "
    "updated_at, value, currency, match_strength, user_data, notes) "
)
_MARK_CONFLICT = (
    "ON CONFLICT (spreadsheet_id, tab, lead_key, event_name) DO UPDATE SET "
    "state='sending', event_time=excluded.event_time, "
    "row_number=excluded.row_number, lead_status=excluded.lead_status, "
    "fingerprint=excluded.fingerprint, attempts=attempts + 1, "
    "updated_at=excluded.updated_at, value=excluded.value, "
    "currency=excluded.currency, match_strength=excluded.match_strength, "
    "user_data=excluded.user_data, notes=excluded.notes"
)
# records.py sending_rows as a JSON array of rows (?4) without the spreadsheet, tab and times
# (?1, ?2, ?3).
_MARK_SENDING = (
    f"{_MARK_COLUMNS}SELECT ?1, ?2, {', '.join(_row_field(i) for i in (0, 1, 2))}, 'sending', "
    f"{', '.join(_row_field(i) for i in (3, 4, 5, 6, 7))}, 1, ?3, ?3, "
    f"{', '.join(_row_field(i) for i in (8, 9, 10, 11, 12))} "
    f"FROM json_each(?4) WHERE true {_MARK_CONFLICT}"  # `WHERE true`: SQLite's upsert rule
)
# One row of records.py sending_rows.
_MARK_SENDING_ROW = (
    f"{_MARK_COLUMNS}VALUES (?, ?, ?, ?, ?, 'sending', ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?) "
    f"{_MARK_CONFLICT}"
)
_ADD_TRANSITION = (
    "INSERT INTO transitions (spreadsheet_id, tab, lead_key, status, at, source, recorded_at) "
)
_ADD_TRANSITION_ROW = f"{_ADD_TRANSITION}VALUES (?, ?, ?, ?, ?, ?, ?)"
# The transitions of ?4, a JSON array of (lead_key, status, at, source), recorded at ?3.
_ADD_TRANSITIONS = (
    f"{_ADD_TRANSITION}SELECT ?1, ?2, {', '.join(_row_field(i) for i in range(4))}, ?3 "
    "FROM json_each(?4)"
)
_STORE_MEMO = "INSERT OR REPLACE INTO lead_memos "
_STORE_MEMO_ROW = f"{_STORE_MEMO}VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
# The memos of ?4, a JSON array of (lead_key, digest, fingerprint, report), stored at ?3.
_STORE_MEMOS = (
    f"{_STORE_MEMO}SELECT ?1, ?2, {', '.join(_row_field(i) for i in range(4))}, ?3 "
    "FROM json_each(?4)"
)
# Rows a statement writes, of many (statuses seen, memos): each statement's JSON is ~1–2 MB,
# not the whole pass's at once.
_ROWS_PER_STATEMENT = 5_000


_OUTCOME_SET = (
    "UPDATE events SET state=?1, sent_at=COALESCE(?2, sent_at), fbtrace_id=?3, error=?4, "
    "retry=?5, updated_at=?6 WHERE spreadsheet_id=?7 AND tab=?8 AND "
)
# The answer (?1 to ?6) of the events of ?9, a JSON array of (lead_key, event_name).
_RECORD_OUTCOME = (
    f"{_OUTCOME_SET}(lead_key, event_name) IN "
    f"(SELECT {_row_field(0)}, {_row_field(1)} FROM json_each(?9))"
)
# One row of records.py outcome_rows.
_RECORD_OUTCOME_ROW = f"{_OUTCOME_SET}lead_key=?9 AND event_name=?10"


def _record_outcomes(
    db: sqlite3.Connection, where: SheetTab, rows: Sequence[Sequence[object]]
) -> None:
    """records.py outcome_rows, a statement per run of rows with the same answer (a request's
    events usually share one: sent, at the same time, under one fbtrace_id); in order."""
    for answer, group in itertools.groupby(rows, key=lambda r: tuple(r[:6])):
        run = list(group)
        events = _json_rows(r[8:10] for r in run)
        if _NUL in events:
            db.executemany(_RECORD_OUTCOME_ROW, run)
        else:
            db.execute(_RECORD_OUTCOME, (*answer, where.spreadsheet_id, where.tab, events))


def _run_script(db: sqlite3.Connection, script: str) -> None:
    """Statement by statement: executescript would commit the open transaction first."""
    for statement in script.split(";\n"):
        if statement.strip():
            db.execute(statement)


class _LeaseRow(LockLease):
    """A pass's row in `locks`: renewed by the heartbeat, and read back before each request
    to Meta and before the write-back (one indexed read): if another pass took it over, this
    one stops at once, not at the heartbeat's next renewal up to 15 s later."""

    def __init__(self, ledger: SqliteLedger, where: SheetTab, holder: str, lease: float) -> None:
        super().__init__(where, lease)
        self._ledger, self._holder = ledger, holder

    def check(self) -> None:
        if not self.lost:
            try:
                row = (
                    self._ledger._connect()
                    .execute(
                        "SELECT holder FROM locks WHERE spreadsheet_id=? AND tab=?",
                        (self.where.spreadsheet_id, self.where.tab),
                    )
                    .fetchone()
                )
            except sqlite3.Error:
                row = None
            self.lost = row is None or row[0] != self._holder
        if self.lost:
            raise LockLost(
                f"the pass lost its lock on {self.where} (another pass took it over after "
                f"its lease of {self.lease:.0f} s lapsed) and stopped before sending more; run "
                "the sync again"
            )


def _holder_token() -> str:
    """A lock holder's token: random (it tells two passes of one process apart), then this
    process's PID namespace and start time ("<hex> pid:[4026531836] 123456"). Older versions
    wrote the random part only; the token is compared whole, never parsed, except here."""
    ns, started = _process_identity()
    return f"{uuid.uuid4().hex} {ns or '-'} {started or '-'}"


def _process_identity(pid: int | None = None) -> tuple[str | None, str | None]:
    """(PID namespace, start time) of this process, or of `pid` seen from here; None where
    /proc cannot tell. The namespace is /proc/self/ns/pid's link ("pid:[4026531836]", see
    https://man7.org/linux/man-pages/man7/pid_namespaces.7.html); the start time is field 22
    of /proc/<pid>/stat, in clock ticks since boot (https://man7.org/linux/man-pages/man5/proc_pid_stat.5.html):
    a PID reused by another process has another start time."""
    where = "self" if pid is None else str(pid)
    ns = None
    if pid is None:
        try:
            ns = os.readlink("/proc/self/ns/pid")
        except OSError:
            ns = None
    try:
        with open(f"/proc/{where}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return ns, None
    fields = stat[stat.rfind(b")") + 2 :].split()  # fields 3 on: the command may hold ") "
    return ns, fields[19].decode() if len(fields) > 19 else None


def _holder_alive(holder: str, pid: int) -> bool:
    """Whether a lock's holder on this hostname is still running. A holder in another PID
    namespace cannot be seen from here (its PID means another process, or none): only its
    lease can say it died. A token from an older version names no namespace: its PID is
    judged as before."""
    parts = holder.split(" ")
    if len(parts) != 3:
        return _pid_alive(pid)
    ns, started = (None if p == "-" else p for p in parts[1:])
    mine, _ = _process_identity()
    if ns is None and mine is None:  # no /proc here (macOS): no namespaces either
        return _pid_alive(pid)
    if ns is None or mine is None or ns != mine:
        return True
    if not _pid_alive(pid):
        return False
    _, now_started = _process_identity(pid)
    return started is None or now_started is None or now_started == started


def _pid_alive(pid: int) -> bool:
    """Whether the process holding a lock on this host still runs. A zombie (it exited and its
    parent has not collected it: a SIGKILLed gunicorn master's workers, until init reaps them)
    is dead; without /proc (macOS) a process that answers signal 0 is taken as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    # "pid (command) state …": the command may itself hold ") ", so from the last one.
    end = stat.rfind(b")")
    return stat[end + 2 : end + 3] != b"Z"
