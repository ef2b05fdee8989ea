"""The ledger's contract: what a pass, the status panel and the reports need of a ledger.

A lead is identified by (spreadsheet, tab, lead key): two tabs of one spreadsheet (two brands,
two pixels) may share one ledger and never share a row. `LedgerBackend` is the contract both
backends implement (sqlite.py, the embedded default; postgres.py, for replicas); the types
here are what crosses it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sync.plan import (
    BaselineEvent,
    ExpiredEvent,
    LeadHistory,
    PlannedEvent,
)

SCHEMA_VERSION = 5
# Schema 4 (edits settle before they are sent): `edit_queue`, the edits waiting (docs/edits.md).
# Within schema 5 (unreleased): edit_queue's `stamp_before` (what a withdrawn edit puts back in
# Status Changed At) and `withdrawn_at` (set: the edit was changed back before it settled; its
# row stays so a pass knows its times were never a status's), added to any ledger without them.
# Also within schema 5: `log_lines`, per tab the CAPI Log's line count after the tab's last pass
# appended to it (a restored ledger carries its old count: the pass reads the lines past it,
# docs/operations.md "Restoring a ledger"), added to any ledger without it, empty.
# Also within schema 5: `lead_memos`, per lead at rest its row memo (sync/memo.py), and triggers
# on events, transitions and edit_queue that delete a lead's memo whenever anything of that lead
# is written (by any writer, an older sheet-bridge included), added to any ledger without them.
# Schema 5 (one lead, one identity per pixel): which pixel each tab sends to (`tab_pixels`, set
# by every pass), and indexes that find a pixel's leads by Leadgen ID, CAPI Key, e-mail or phone.
# Nothing stored changes: events keep the ids they were sent with.
# Pass records are pruned after each full pass (prune_passes): the newest KEEP_PASSES of a tab
# stay whole; older ones lose their answer (the rows needing attention, ~300 KB for 1,500
# rows) after SUMMARY_DAYS and are deleted after RECORD_DAYS, except the newest full pass
# (whose start bounds the next scan, sync/plan.py).
KEEP_PASSES = 50
SUMMARY_DAYS = 7
RECORD_DAYS = 90
# SQLite: a pass renews its lock every LOCK_LEASE / 4 seconds; a lock not renewed for
# LOCK_LEASE seconds belongs to a process that died (on any host) and is taken over.
# (PostgreSQL needs no lease: the server frees a dead holder's advisory lock.)
LOCK_LEASE = 60.0
# A stored edit or transition whose time lies outside [recorded − 62 days, recorded + 5 min]
# can never give a sendable event (docs/event-times.md: 62 days is Meta's longest window, and future
# times beyond clock skew are refused): it is skipped, never trusted as "first seen".
PLAUSIBLE_AGE = timedelta(days=62)
# A running pass records its progress (and so a heartbeat) at least this often; one whose
# heartbeat is older than PASS_LOST_AFTER ran in a process that died: it is "lost".
PASS_HEARTBEAT = 15.0
PASS_LOST_AFTER = timedelta(minutes=2)
# The error kept on a pass that the next pass of its tab found unfinished. The next pass holds
# the tab's lock, which a live pass never lets go of, so the process that ran this one died
# (or lost its lock, and stops before sending more): it is "lost" at once, not two minutes on.
PASS_LOST = "PassLost"
PASS_PHASES = ("queued", "read", "send", "write", "done")

# Meta's answers a pass has not recorded yet, each (one request's (event, answer) pairs, when
# Meta answered): `mark_sending` records them in the transaction that marks the next request
# (or alone, before the pass reports its progress), so a pass does not commit twice per
# request (docs/ledger.md).
Answered = Sequence[tuple[Sequence[tuple[PlannedEvent, SendOutcome]], datetime]]


class LedgerError(Exception):
    """The ledger cannot be used; the message says why and what to do."""


class SyncBusy(Exception):
    """Another pass holds the tab's lock."""


class LockLost(LedgerError):
    """The pass's lock lapsed (SQLite: not renewed within its lease; PostgreSQL: its
    connection ended) and may be someone else's now."""


@dataclass(frozen=True)
class SheetTab:
    """Where leads live: a lead is identified by (spreadsheet, tab, lead key)."""

    spreadsheet_id: str
    tab: str

    def __str__(self) -> str:
        return f"spreadsheet {self.spreadsheet_id} tab {self.tab!r}"


@dataclass(frozen=True)
class PendingEdit:
    id: int
    row_number: int
    old_value: str | None
    new_value: str
    at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class QueuedEdit:
    """A lead's status change from an edit, waiting to settle (docs/edits.md): sent once it
    held until `due_at`, by whichever process or pass takes it first. `since` is the time of
    the first edit not settled yet (a change back within the window withdraws every edit of
    the lead from then on); `previous` is the status that held before it (None: unknown).
    `stamp_before` is the row's Status Changed At cell as it was before the add-on stamped the
    first of those edits ("" blank; None: not sent, an older add-on): what a withdrawal puts
    back."""

    lead_key: str
    row_number: int
    previous: str | None
    status: str
    since: datetime
    at: datetime
    due_at: datetime
    stamp_before: str | None = None


@dataclass(frozen=True)
class EditChange:
    """What one edit does to a lead (record_edits): `withdraw_since` drops the lead's edit
    transitions from that time on (edits not settled, changed back or superseded); then a
    `queued` edit is recorded as a transition at its time and queued, or (None) the lead's
    queued edit is withdrawn: nothing is left to send for it, and its row stays, marked
    withdrawn, so a pass never takes a stamp of its times for a status's time."""

    lead_key: str
    withdraw_since: datetime | None
    queued: QueuedEdit | None


@dataclass(frozen=True)
class UnreadableRecord:
    """A stored edit or transition whose time cannot be used, in words."""

    table: str  # "pending_edits" or "transitions"
    id: int
    what: str

    def __str__(self) -> str:
        return self.what


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


@dataclass(frozen=True)
class PixelEvent:
    """An event the ledger holds for a lead of a pixel, in whichever tab (`pixel_events`):
    enough to know who the lead is (its identity, e-mail and phone hashes) and what Meta has."""

    spreadsheet_id: str
    tab: str
    lead_key: str
    event_name: str
    event_id: str
    state: str
    identity: str
    em: str | None
    ph: str | None
    first_planned: float

    @property
    def where(self) -> SheetTab:
        return SheetTab(self.spreadsheet_id, self.tab)


@dataclass(frozen=True)
class AdoptedEvent:
    """An event the sheet says Meta already has (or that expired), taken into the ledger."""

    lead_key: str
    event_name: str
    event_id: str
    state: str  # "sent" or "expired"
    event_time: int
    row_number: int
    lead_status: str
    stage_index: int | None
    sent_at: datetime | None
    value: float | None = None
    currency: str | None = None
    match_strength: str | None = None
    user_data: Mapping[str, object] | None = None
    error: str | None = None
    fbtrace_id: str | None = None
    notes: str | None = None  # the row's warning when it was sent


class RowMemo(NamedTuple):
    """A lead's row memo (sync/memo.py): the digest of its row as read, the fingerprint of
    the config and sheet settings it was decided under, and its report (memo.encode_report)."""

    digest: str
    fingerprint: str
    report: str


@dataclass(frozen=True)
class PassRecord:
    """A pass as the ledger keeps it, so any replica can say how it is going."""

    id: int
    where: SheetTab
    trigger: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None
    phase: str  # one of PASS_PHASES
    done: int
    total: int
    heartbeat_at: datetime
    counts: dict[str, int] | None
    error: str | None
    summary: dict[str, Any] | None  # what the pass answers its caller, once it finished

    def state(self, now: datetime) -> str:
        """running, done, failed, or lost (its process stopped heart-beating)."""
        if self.finished_at is not None:
            if self.error == PASS_LOST:
                return "lost"
            # A pass that could not run leaves {"error": words} as its answer; a record from
            # before passes kept answers has only the error's name.
            failed = "error" in self.summary if self.summary is not None else bool(self.error)
            return "failed" if failed else "done"
        return "lost" if now - self.heartbeat_at > PASS_LOST_AFTER else "running"


class LockLease:
    """A held lock on one tab, for as long as the pass runs (SQLite renews it from a heartbeat
    thread; postgres.py's subclass asks the server whether its lock is still held)."""

    def __init__(self, where: SheetTab, lease: float) -> None:
        self.where = where
        self.lease = lease
        self.lost = False

    def check(self) -> None:
        """Before anything irreversible (a POST to Meta): stop if the lock lapsed."""
        if self.lost:
            raise LockLost(
                f"the pass lost its lock on {self.where} (the ledger could not be written for "
                f"{self.lease:.0f} s) and stopped before sending more; run the sync again"
            )


class LedgerBackend(Protocol):
    """What a pass, the status panel and the reports need of a ledger (SQLite or PostgreSQL).

    Every method is scoped to one SheetTab; nothing of one tab is visible from another."""

    # True: one write transaction at a time (SQLite): writes from several threads wait for
    # each other, so a pass makes them one after the other; False (PostgreSQL): side by side.
    one_writer: bool

    def claim_legacy_rows(self, where: SheetTab) -> int: ...
    def bind_pixel(self, where: SheetTab, pixel_id: str, now: datetime) -> None: ...
    def tabs_of_pixel(self, pixel_id: str) -> list[SheetTab]: ...
    def log_lines(self, where: SheetTab) -> int | None: ...
    def set_log_lines(self, where: SheetTab, lines: int, now: datetime) -> None: ...
    def pixel_has_events(self, pixel_id: str, since: datetime) -> bool: ...
    def pixel_events(
        self,
        pixel_id: str,
        *,
        lead_ids: Collection[int] = (),
        keys: Collection[str] = (),
        contacts: Collection[str] = (),
        since: datetime | None = None,
    ) -> list[PixelEvent]: ...
    # What pixel_events searches, brought up to date with the events written since the last
    # call, in bulk (after a pass has sent); how many of the backend's notes it took (none:
    # nothing to do). With `most`: one transaction of at most that many notes (the oldest),
    # a slice a pass's ledger writer takes while it has nothing else to do (sync/send.py).
    # pixel_events finds every event whether or not this ran.
    def index_identities(self, most: int | None = None) -> int: ...
    def lock(
        self, where: SheetTab, wait: float, lease: float = LOCK_LEASE
    ) -> contextlib.AbstractContextManager[LockLease]: ...
    def history(
        self, where: SheetTab, keys: Collection[str] | None = None
    ) -> dict[str, LeadHistory]: ...
    def unreadable(self, where: SheetTab) -> list[UnreadableRecord]: ...
    def drop_unreadable(self, records: Sequence[UnreadableRecord]) -> None: ...
    def add_transitions(
        self, where: SheetTab, items: Iterable[tuple[str, str, datetime, str]], now: datetime
    ) -> None: ...
    def add_edit(
        self,
        where: SheetTab,
        row_number: int,
        old_value: str | None,
        new_value: str,
        at: datetime,
        now: datetime,
    ) -> int: ...
    def pending_edits(self, where: SheetTab) -> list[PendingEdit]: ...
    def record_edits(
        self, where: SheetTab, changes: Sequence[EditChange], now: datetime
    ) -> None: ...
    def queued_edits(
        self, where: SheetTab, keys: Collection[str] | None = None
    ) -> list[QueuedEdit]: ...
    def dequeue_edits(self, where: SheetTab, keys: Collection[str], now: datetime) -> None: ...
    def resolve_edits(
        self, where: SheetTab, resolved: Sequence[tuple[PendingEdit, str | None]]
    ) -> None: ...
    def mark_sending(
        self,
        where: SheetTab,
        events: Sequence[PlannedEvent],
        strengths: Mapping[str, str],
        notes: Mapping[str, str | None],
        now: datetime,
        answered: Answered = (),
    ) -> None:
        """Before a request leaves: its `events` exist, with their final event ids, as
        `sending`. In the same transaction and first, `answered` (earlier requests' answers)
        is recorded as `record_outcomes` would: once it returns, both are committed, and if
        it fails, neither is. `events` may be empty (only the answers are written: what a
        pass flushes when it stops)."""
        ...

    def unmark_sending(
        self, where: SheetTab, events: Sequence[PlannedEvent], marked_at: datetime
    ) -> None:
        """Take back the marks `mark_sending(…, now=marked_at)` made for `events`, each one the
        ledger held no record of before (`PlannedEvent.first`), whose request never left: their
        records are deleted while still `sending` from that mark alone (attempts 1, planned at
        `marked_at`). A record another pass has marked since, or any answer, is kept."""
        ...

    def record_outcomes(
        self,
        where: SheetTab,
        results: Sequence[tuple[PlannedEvent, SendOutcome]],
        now: datetime,
    ) -> None: ...
    def record_expired(
        self, where: SheetTab, expired: Sequence[ExpiredEvent], now: datetime
    ) -> None: ...
    def record_baseline(
        self, where: SheetTab, baseline: Sequence[BaselineEvent], now: datetime
    ) -> None: ...
    def adopt(self, where: SheetTab, events: Sequence[AdoptedEvent], now: datetime) -> int: ...
    def events(self, where: SheetTab) -> list[LedgerEvent]: ...
    def counts_by_state(self, where: SheetTab) -> dict[str, int]: ...
    def start_pass(
        self, where: SheetTab, trigger: str, dry_run: bool, now: datetime, full: bool = True
    ) -> int: ...
    def pass_progress(
        self, pass_id: int, phase: str, done: int, total: int, now: datetime
    ) -> None: ...
    def finish_pass(
        self,
        pass_id: int,
        counts: dict[str, int],
        now: datetime,
        error: str | None = None,
        summary: Mapping[str, Any] | None = None,
    ) -> None: ...
    def get_pass(self, pass_id: int) -> PassRecord | None: ...
    def running_pass(self, where: SheetTab, now: datetime) -> PassRecord | None: ...
    def recent_passes(
        self, where: SheetTab, limit: int, trigger: str | None = None
    ) -> list[PassRecord]: ...
    def last_meta_pass(self, where: SheetTab) -> PassRecord | None: ...
    def last_full_pass(self, where: SheetTab) -> datetime | None: ...
    def last_pass(self, where: SheetTab, include_dry_run: bool = False) -> dict[str, Any]: ...
    def prune_passes(self, where: SheetTab, now: datetime) -> tuple[int, int]: ...
    def close(self) -> None: ...
    # What the calling thread holds, let go before the thread ends (SQLite: its connection, whose
    # closing may write the WAL into the file; PostgreSQL: nothing, its pool is shared).
    def release_thread(self) -> None: ...
    # Row memos (sync/memo.py): stored at the end of a full pass, deleted by the ledger itself
    # whenever anything of their lead is written.
    def row_memos(self, where: SheetTab) -> dict[str, RowMemo]: ...
    def store_row_memos(
        self,
        where: SheetTab,
        memos: Sequence[tuple[str, str, str, str]],
        forget: Collection[str],
        since: datetime,
        now: datetime,
    ) -> None: ...


def to_ts(at: datetime) -> float:
    return at.timestamp()


def from_ts(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def describe_at(value: object) -> str:
    """A stored time as words for a notice (it may be any type SQLite kept)."""
    if isinstance(value, int | float) and math.isfinite(value):
        with contextlib.suppress(OverflowError, OSError, ValueError):
            return from_ts(value).strftime("%Y-%m-%d %H:%M UTC")
        return "a time outside the calendar"
    return f"{str(value)[:40]!r}"
