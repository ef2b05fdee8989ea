"""The ledger (SQLite): one row per (spreadsheet, lead, event name), transitions, passes, locks.

It is what makes sheet-bridge idempotent (DOMAIN.md §9): an event is marked `sending` before
the POST and `sent`/`failed`/`expired` right after Meta answers, before anything is written back
to the sheet, so a crash in between never leads to a second, different send.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sync.plan import (
    BASELINE_REASON,
    BaselineEvent,
    EventRecord,
    ExpiredEvent,
    LeadHistory,
    PlannedEvent,
    Transition,
    expired_reason,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    spreadsheet_id TEXT NOT NULL,
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
    PRIMARY KEY (spreadsheet_id, lead_key, event_name)
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    spreadsheet_id TEXT NOT NULL,
    lead_key TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_lead ON transitions (spreadsheet_id, lead_key);
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
    full INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS locks (
    scope TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL
);
"""


class LedgerError(Exception):
    """The ledger cannot be used; the message says why and what to do."""


class SyncBusy(Exception):
    """Another pass holds the spreadsheet's lock."""


@dataclass(frozen=True)
class PendingEdit:
    id: int
    row_number: int
    old_value: str | None
    new_value: str
    at: datetime


@dataclass(frozen=True)
class LedgerEvent:
    """One ledger row, for reports and the status panel."""

    lead_key: str
    event_name: str
    event_id: str
    state: str
    event_time: int
    row_number: int | None
    lead_status: str | None
    stage_index: int | None
    sent_at: float | None
    fbtrace_id: str | None
    error: str | None
    retry: bool
    value: float | None
    currency: str | None
    match_strength: str | None
    user_data: dict[str, Any] | None


def _ts(at: datetime) -> float:
    return at.timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class Ledger:
    """SQLite in WAL mode; one connection per thread, so the web server's threads share it."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Look before changing anything: a file that is not a ledger stays byte for byte.
            probe = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
            try:
                self._check_schema(probe)
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
            except sqlite3.DatabaseError as exc:
                raise self._explain(exc) from None
            self._local.conn = conn
        return conn

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
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "ledger_info" in tables:
            row = db.execute("SELECT value FROM ledger_info WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"The ledger {self.path} was written by a newer sheet-bridge (schema "
                    f"{version}, this one knows {SCHEMA_VERSION}); upgrade sheet-bridge"
                )
            if version == SCHEMA_VERSION:
                return
        elif tables:
            raise LedgerError(
                f"{self.path} is an SQLite file but not a sheet-bridge ledger (tables: "
                f"{', '.join(sorted(tables))}); point [server] ledger at another file"
            )
        db.executescript(
            "BEGIN;\n"
            + _SCHEMA
            + f"INSERT OR REPLACE INTO ledger_info VALUES ('schema_version', '{SCHEMA_VERSION}');"
            + "\nCOMMIT;"
        )

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, scope: str, wait: float, hold: float = 900.0) -> Iterator[None]:
        """Hold `scope` (one spreadsheet) across threads and processes; SyncBusy after `wait`.

        A lock whose holder died (same host, process gone) or expired is taken over, so a pass
        killed mid-way never blocks the next one.
        """
        holder = uuid.uuid4().hex
        host = socket.gethostname()
        deadline = time.monotonic() + wait
        while True:
            if self._try_lock(scope, holder, host, hold):
                break
            if time.monotonic() >= deadline:
                raise SyncBusy(scope)
            time.sleep(0.05)
        try:
            yield
        finally:
            with self._tx(immediate=True) as db:
                db.execute("DELETE FROM locks WHERE scope=? AND holder=?", (scope, holder))

    def _try_lock(self, scope: str, holder: str, host: str, hold: float) -> bool:
        now = time.time()
        with self._tx(immediate=True) as db:
            row = db.execute(
                "SELECT host, pid, expires FROM locks WHERE scope=?", (scope,)
            ).fetchone()
            if row is not None:
                other_host, pid, expires = row
                alive = expires > now and not (other_host == host and not _pid_alive(pid))
                if alive:
                    return False
            db.execute(
                "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?)",
                (scope, holder, host, os.getpid(), now + hold),
            )
            return True

    # -- history ---------------------------------------------------------------------------
    def history(self, spreadsheet_id: str) -> dict[str, LeadHistory]:
        events: dict[str, dict[str, EventRecord]] = {}
        transitions: dict[str, list[Transition]] = {}
        db = self._connect()
        sent_times: dict[float, datetime] = {}  # one per batch sent: convert each once
        try:
            for key, name, eid, state, etime, retry, fp, sent_at, trace, err, notes in db.execute(
                "SELECT lead_key, event_name, event_id, state, event_time, retry, fingerprint, "
                "sent_at, fbtrace_id, error, notes FROM events WHERE spreadsheet_id=?",
                (spreadsheet_id,),
            ):
                events.setdefault(key, {})[name] = EventRecord(
                    name,
                    eid,
                    state,
                    etime,
                    bool(retry),
                    fp,
                    (sent_times.get(sent_at) or sent_times.setdefault(sent_at, _dt(sent_at)))
                    if sent_at
                    else None,
                    trace,
                    err,
                    notes,
                )
            for key, status, at, source, recorded_at in db.execute(
                "SELECT lead_key, status, at, source, recorded_at FROM transitions "
                "WHERE spreadsheet_id=? ORDER BY at, id",
                (spreadsheet_id,),
            ):
                transitions.setdefault(key, []).append(
                    Transition(status, _dt(at), source, _dt(recorded_at))
                )
        except sqlite3.Error as exc:
            raise self._explain(exc) from None
        keys = set(events) | set(transitions)
        return {k: LeadHistory(events.get(k, {}), tuple(transitions.get(k, ()))) for k in keys}

    def add_transitions(
        self,
        spreadsheet_id: str,
        items: Iterable[tuple[str, str, datetime, str]],
        now: datetime,
    ) -> None:
        """Record (lead key, status, at, source) transitions seen by an edit or a scan."""
        rows = [(spreadsheet_id, k, s, _ts(at), src, _ts(now)) for k, s, at, src in items]
        if not rows:
            return
        with self._tx() as db:
            db.executemany(
                "INSERT INTO transitions (spreadsheet_id, lead_key, status, at, source, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )

    # -- edits -----------------------------------------------------------------------------
    def add_edit(
        self,
        spreadsheet_id: str,
        tab: str,
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
                (spreadsheet_id, tab, row_number, old_value, new_value, _ts(at), _ts(now)),
            )
            return int(cur.lastrowid or 0)

    def pending_edits(self, spreadsheet_id: str, tab: str) -> list[PendingEdit]:
        db = self._connect()
        rows = db.execute(
            "SELECT id, row_number, old_value, new_value, at FROM pending_edits "
            "WHERE spreadsheet_id=? AND tab=? ORDER BY at, id",
            (spreadsheet_id, tab),
        ).fetchall()
        return [PendingEdit(i, r, o, n, _dt(a)) for i, r, o, n, a in rows]

    def resolve_edits(
        self,
        spreadsheet_id: str,
        edit_ids: Sequence[int],
        transitions: Iterable[tuple[str, str, datetime, str]],
        now: datetime,
    ) -> None:
        """Turn pending edits into transitions, in one transaction."""
        rows = [(spreadsheet_id, k, s, _ts(at), src, _ts(now)) for k, s, at, src in transitions]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO transitions (spreadsheet_id, lead_key, status, at, source, "
                "recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany("DELETE FROM pending_edits WHERE id=?", [(i,) for i in edit_ids])

    # -- events ----------------------------------------------------------------------------
    def mark_sending(
        self,
        spreadsheet_id: str,
        events: Sequence[PlannedEvent],
        strengths: Mapping[str, str],
        notes: Mapping[str, str | None],
        now: datetime,
    ) -> None:
        """Before the POST: the event exists, with its final event_id, as `sending`."""
        t = _ts(now)

        def rows() -> Iterator[tuple[object, ...]]:
            # A generator: 100,000 leads' user_data JSON never sits in memory all at once.
            # A lead's events come together and share one user_data: encode it once.
            last_user: object = None
            user_json = ""
            for e in events:
                if e.user_data is not last_user:
                    last_user, user_json = e.user_data, json.dumps(e.user_data, sort_keys=True)
                yield (
                    spreadsheet_id,
                    e.lead_key,
                    e.event_name,
                    e.event_id,
                    e.event_time,
                    e.row_number,
                    e.lead_status,
                    e.stage.index,
                    e.fingerprint,
                    t,
                    t,
                    e.value,
                    e.currency,
                    strengths.get(e.lead_key),
                    user_json,
                    notes.get(e.lead_key),
                )

        with self._tx() as db:
            db.executemany(
                "INSERT INTO events (spreadsheet_id, lead_key, event_name, event_id, state, "
                "event_time, row_number, lead_status, stage_index, fingerprint, attempts, "
                "first_planned, updated_at, value, currency, match_strength, user_data, notes) "
                "VALUES (?, ?, ?, ?, 'sending', ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (spreadsheet_id, lead_key, event_name) DO UPDATE SET "
                "state='sending', event_time=excluded.event_time, "
                "row_number=excluded.row_number, lead_status=excluded.lead_status, "
                "fingerprint=excluded.fingerprint, attempts=attempts + 1, "
                "updated_at=excluded.updated_at, value=excluded.value, "
                "currency=excluded.currency, match_strength=excluded.match_strength, "
                "user_data=excluded.user_data, notes=excluded.notes",
                rows(),
            )

    def record_outcomes(
        self,
        spreadsheet_id: str,
        results: Sequence[tuple[PlannedEvent, SendOutcome]],
        now: datetime,
    ) -> None:
        """Right after Meta answers, before the sheet is written."""
        t = _ts(now)
        rows = []
        for e, o in results:
            state = {"sent": "sent", "expired": "expired"}.get(o.state, "failed")
            retry = o.state == "not_sent" or o.transient
            rows.append(
                (
                    state,
                    t if state == "sent" else None,
                    o.fbtrace_id,
                    None if state == "sent" else o.summary,
                    int(retry),
                    t,
                    spreadsheet_id,
                    e.lead_key,
                    e.event_name,
                )
            )
        with self._tx() as db:
            db.executemany(
                "UPDATE events SET state=?, sent_at=COALESCE(?, sent_at), fbtrace_id=?, "
                "error=?, retry=?, updated_at=? "
                "WHERE spreadsheet_id=? AND lead_key=? AND event_name=?",
                rows,
            )

    def record_expired(
        self, spreadsheet_id: str, expired: Sequence[ExpiredEvent], now: datetime
    ) -> None:
        """Planned too old to send: kept so it is never tried again, and reported."""
        t = _ts(now)
        rows = [
            (
                spreadsheet_id,
                x.lead_key,
                x.event_name,
                x.event_id,
                x.event_time,
                x.row_number,
                t,
                t,
                expired_reason(x),
            )
            for x in expired
        ]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO events (spreadsheet_id, lead_key, event_name, event_id, state, "
                "event_time, row_number, first_planned, updated_at, error) "
                "VALUES (?, ?, ?, ?, 'expired', ?, ?, ?, ?, ?) "
                "ON CONFLICT (spreadsheet_id, lead_key, event_name) DO UPDATE SET "
                "state='expired', updated_at=excluded.updated_at, error=excluded.error "
                "WHERE state != 'sent'",
                rows,
            )

    def record_baseline(
        self, spreadsheet_id: str, baseline: Sequence[BaselineEvent], now: datetime
    ) -> None:
        """Stages reached before sheet-bridge saw when: kept (never sent) so reports and the
        moved-back check know them; a later defensible time may still send them."""
        t = _ts(now)
        rows = [
            (
                spreadsheet_id,
                x.lead_key,
                x.event_name,
                x.event_id,
                int(x.seen_at.timestamp()),
                x.row_number,
                t,
                t,
                BASELINE_REASON,
            )
            for x in baseline
        ]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO events (spreadsheet_id, lead_key, event_name, event_id, state, "
                "event_time, row_number, first_planned, updated_at, error) "
                "VALUES (?, ?, ?, ?, 'baseline', ?, ?, ?, ?, ?) "
                "ON CONFLICT (spreadsheet_id, lead_key, event_name) DO NOTHING",
                rows,
            )

    def events(self, spreadsheet_id: str) -> list[LedgerEvent]:
        db = self._connect()
        out = []
        for r in db.execute(
            "SELECT lead_key, event_name, event_id, state, event_time, row_number, lead_status, "
            "stage_index, sent_at, fbtrace_id, error, retry, value, currency, match_strength, "
            "user_data FROM events WHERE spreadsheet_id=? ORDER BY event_time, lead_key",
            (spreadsheet_id,),
        ):
            out.append(
                LedgerEvent(
                    lead_key=r[0],
                    event_name=r[1],
                    event_id=r[2],
                    state=r[3],
                    event_time=r[4],
                    row_number=r[5],
                    lead_status=r[6],
                    stage_index=r[7],
                    sent_at=r[8],
                    fbtrace_id=r[9],
                    error=r[10],
                    retry=bool(r[11]),
                    value=r[12],
                    currency=r[13],
                    match_strength=r[14],
                    user_data=json.loads(r[15]) if r[15] else None,
                )
            )
        return out

    def counts_by_state(self, spreadsheet_id: str) -> dict[str, int]:
        db = self._connect()
        return {
            state: n
            for state, n in db.execute(
                "SELECT state, COUNT(*) FROM events WHERE spreadsheet_id=? GROUP BY state",
                (spreadsheet_id,),
            )
        }

    # -- passes ----------------------------------------------------------------------------
    def start_pass(
        self,
        spreadsheet_id: str,
        tab: str,
        trigger: str,
        dry_run: bool,
        now: datetime,
        full: bool = True,
    ) -> int:
        """`full`: the pass plans every lead of the tab (not one edit's lead)."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO passes (spreadsheet_id, tab, trigger, dry_run, started_at, full) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (spreadsheet_id, tab, trigger, int(dry_run), _ts(now), int(full)),
            )
            return int(cur.lastrowid or 0)

    def finish_pass(
        self, pass_id: int, counts: dict[str, int], now: datetime, error: str | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE passes SET finished_at=?, counts=?, error=? WHERE id=?",
                (_ts(now), json.dumps(counts, sort_keys=True), error, pass_id),
            )

    def last_full_pass(self, spreadsheet_id: str, tab: str) -> datetime | None:
        """When the last completed pass that read every lead of the tab started."""
        db = self._connect()
        row = db.execute(
            "SELECT MAX(started_at) FROM passes WHERE spreadsheet_id=? AND tab=? AND dry_run=0 "
            "AND finished_at IS NOT NULL AND error IS NULL AND full=1",
            (spreadsheet_id, tab),
        ).fetchone()
        return _dt(row[0]) if row and row[0] is not None else None

    def last_pass(self, spreadsheet_id: str, include_dry_run: bool = False) -> dict[str, Any]:
        db = self._connect()
        row = db.execute(
            "SELECT id, tab, trigger, dry_run, started_at, finished_at, counts, error "
            "FROM passes WHERE spreadsheet_id=? AND finished_at IS NOT NULL "
            + ("" if include_dry_run else "AND dry_run=0 ")
            + "ORDER BY id DESC LIMIT 1",
            (spreadsheet_id,),
        ).fetchone()
        if row is None:
            return {}
        return {
            "id": row[0],
            "tab": row[1],
            "trigger": row[2],
            "dry_run": bool(row[3]),
            "started_at": _dt(row[4]).isoformat(),
            "finished_at": _dt(row[5]).isoformat(),
            "counts": json.loads(row[6]) if row[6] else {},
            "error": row[7],
        }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
