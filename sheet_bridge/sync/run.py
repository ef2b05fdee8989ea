"""The one imperative pass: lock, read, plan, mark, send, record, write back, log."""

from __future__ import annotations

import functools
import logging
import os
import shlex
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import sheet_bridge
from sheet_bridge.config import BRIDGE_COLUMNS, LOG_TAB, BridgeConfig, MetaConfig
from sheet_bridge.meta.client import CapiClient
from sheet_bridge.meta.identity import contact_hashes
from sheet_bridge.metrics import META_REQUEST_SECONDS, count_pass
from sheet_bridge.sheets.client import SheetsClient, SheetsError
from sheet_bridge.sheets.table import SheetTable, TableError
from sheet_bridge.sync import stopping
from sheet_bridge.sync.capi_log import LOG_HEADER, LogStream, log_lines
from sheet_bridge.sync.collector import gc_pass, gc_paused, give_back_freed_memory
from sheet_bridge.sync.hashing import IdentityHasher
from sheet_bridge.sync.ledger import (
    PASS_LOST,
    LedgerBackend,
    LedgerError,
    LockLease,
    LockLost,
    RowMemo,
    SheetTab,
    SyncBusy,
    open_ledger,
)
from sheet_bridge.sync.memo import REMEMBERED_OUTCOME, PassRows, Remembered, remember
from sheet_bridge.sync.memo import due_events as memo_due_events
from sheet_bridge.sync.memo import fingerprint as memo_fingerprint
from sheet_bridge.sync.memo import fixed_points as memo_fixed_points
from sheet_bridge.sync.outcomes import (
    RowReport,
    attention_rows,
    format_sent_at,
    said_events,
    shows_sent_or_expired,
    summary_counts,
)
from sheet_bridge.sync.plan import (
    BASELINE_REASON,
    EventRecord,
    LeadHistory,
    LeadRow,
    Observation,
    Plan,
    RowDecision,
    decision_identity,
    expired_reason,
    one_identity_per_pixel,
    plan,
    row_identity,
)
from sheet_bridge.sync.progress import PassProgress, Progress
from sheet_bridge.sync.rows import (
    ColumnLayout,
    bridge_cells,
    column_layout,
    lead_rows,
    time_zone,
)
from sheet_bridge.sync.send import LedgerWrites, RowReports, Sender, Sent
from sheet_bridge.sync.stopping import ServerStopping
from sheet_bridge.sync.writeback import EarlyWrite, changed_cells, header_cells, without

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# How far back a row that lost its CAPI Key is matched to a known lead by e-mail or phone: Meta's
# Conversion Leads optimises for leads that reach the target stage within 28 days
# (developers.facebook.com/documentation/ads-commerce/conversions-api/conversion-leads-integration/
# faq); a lead typed again after that is taken as a new inquiry (docs/identity-and-dates.md).
MATCH_WINDOW = timedelta(days=28)
# A pass's answer keeps at most this many rows needing attention (the API pages them).
ATTENTION_KEPT = 1000
# How a pass reads the sheet: the whole tab (Bridge.read), or some rows of it (an edit's rows,
# sync/edits.py). It gives the table as read, its column layout and the leads to plan.
Reader = Callable[[], tuple[SheetTable, ColumnLayout, list[LeadRow]]]
# Remembered.to_store's answer: (lead key, digest, fingerprint, report) to store, keys to forget.
_Memos = tuple[list[tuple[str, str, str, str]], set[str]]


class SyncError(Exception):
    """The pass could not run; the message says why and what to do."""


class LedgerBehindSheet(SyncError):
    """The sheet shows events sent that the ledger has no record of: sending now could send
    them twice. Nothing was sent; `sheet-bridge adopt` takes them over from the sheet.

    Its message names the config file by name only (it reaches the add-on through the API,
    which never shows a server path); `for_operator` names it as it was given, for the
    command line."""

    def __init__(self, message: str, for_operator: str | None = None) -> None:
        super().__init__(message)
        self.for_operator = for_operator or message


class PassStopped(SyncError):
    """The pass stopped before its end (the server stopping, or its lock taken over) and
    wrote nothing to the sheet; the message says what it did send."""

    def __init__(self, why: Exception, sent: int) -> None:
        super().__init__(
            f"{why}. It sent {sent} event(s) to Meta before it stopped: they are recorded in "
            "the ledger and never sent again. It did not write the sheet: the next pass (or "
            "the one that holds the tab now) writes those rows and sends the rest"
        )
        self.sent = sent


class PassLockLost(PassStopped):
    """The pass lost its tab's lock: another pass took it over."""


def _stopped(why: Exception, sent: int) -> PassStopped:
    return PassLockLost(why, sent) if isinstance(why, LockLost) else PassStopped(why, sent)


def _still_ours(lease: LockLease) -> None:
    """Raises unless this pass still holds its tab's lock and the server is not stopping."""
    lease.check()
    stopping.check()


def capi_client(meta: MetaConfig, access_token: str, **kw: Any) -> CapiClient:
    """The CAPI client for the pixel a bridge config names (`kw` overrides the config): the
    edge that reads our config builds it, so `meta/` never knows the config file."""
    options: dict[str, Any] = {
        "test_event_code": meta.test_event_code,
        "batch_size": meta.batch_size,
        "timeout": meta.timeout_seconds,
        "partner_agent": f"sheet-bridge/{sheet_bridge.__version__}",
        "on_request": META_REQUEST_SECONDS.observe,
    }
    options.update(kw)
    return CapiClient(meta.graph_url, meta.api_version, meta.pixel_id, access_token, **options)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SyncResult:
    spreadsheet_id: str
    tab: str
    dry_run: bool
    trigger: str
    counts: dict[str, int]
    # Every row's report, in sheet order (a full pass's: PassRows).
    rows: Sequence[RowReport]
    events_sent: int = 0
    meta_requests: int = 0
    cells_written: int = 0
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)
    halted: str | None = None  # why Meta refused every request (a setup problem), if it did
    # Rows reported from their memo, not planned (sync/memo.py); not part of the answer, which
    # is the same either way.
    rows_remembered: int = 0

    def to_json(self) -> dict[str, Any]:
        return {**self._head(), "rows": [r.to_json() for r in self.rows]}

    def _head(self) -> dict[str, Any]:
        """to_json without the rows (the summary's: rendering 100,000 rows to drop them cost
        0.4 s)."""
        return {
            **self.counts,
            "spreadsheet_id": self.spreadsheet_id,
            "tab": self.tab,
            "dry_run": self.dry_run,
            "events_sent": self.events_sent,
            "meta_requests": self.meta_requests,
            "cells_written": self.cells_written,
            "seconds": round(self.seconds, 3),
            "notices": self.notices,
        }

    def planned_rows(self) -> Sequence[RowReport]:
        """The rows that may need attention or have logged something: all but those reported
        from their memo (PassRows), which never do."""
        return self.rows.planned if isinstance(self.rows, PassRows) else self.rows

    def summary(self) -> dict[str, Any]:
        """What the pass answers the add-on (and keeps in its ledger record): the counts and
        the rows needing attention, not every row (a first pass has 100,000)."""
        attention = attention_rows(self.planned_rows())
        return {
            **self._head(),
            "halted": self.halted,
            "rows_total": len(self.rows),
            "attention_total": len(attention),
            "attention": [r.to_json() for r in attention[:ATTENTION_KEPT]],
        }


def failure_words(exc: BaseException) -> str:
    """Why a pass could not run, for whoever asks about it (never a path or a secret: the
    ledger's and unexpected errors' details are for the server log)."""
    if isinstance(exc, SyncError):
        return str(exc)
    if isinstance(exc, LedgerError):
        return (
            "the ledger cannot be used, so nothing was sent or written; the backend's log "
            "says why and what to do (nothing was reset)"
        )
    return f"unexpected error ({type(exc).__name__}); see the backend's log"


class Bridge:
    """One bridge (one sheet tab → one pixel) with its edges injected: the Sheets client, the
    CAPI client (None when no token: dry runs still work), the ledger and the clock."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        sheets: SheetsClient,
        ledger: LedgerBackend,
        capi: CapiClient | None,
        clock: Clock = utc_now,
        lock_wait: float = 5.0,
        before_write_back: Callable[[], None] | None = None,
        hasher: IdentityHasher | None = None,
        row_memos: bool = True,
    ) -> None:
        self.config = config
        self.sheets = sheets
        self.ledger = ledger
        self.capi = capi
        self.clock = clock
        self.lock_wait = lock_wait
        self._before_write_back = before_write_back  # a test seam: a crash after Meta answered
        # Hashes due leads' identities in a worker process on big passes (sync/hashing.py).
        self.hasher = hasher if hasher is not None else IdentityHasher()
        # A full pass leaves out the rows whose memo holds (sync/memo.py); False: every row is
        # planned (the tests compare the two).
        self.row_memos = row_memos
        # A ledger from before tabs were keys: rows no pass record placed become this tab's.
        ledger.claim_legacy_rows(self.sheet_tab)

    @classmethod
    def from_config(
        cls,
        config: BridgeConfig,
        *,
        environ: Mapping[str, str] | None = None,
        ledger: LedgerBackend | None = None,
        **kw: Any,
    ) -> Bridge:
        """The bridge a config describes; `ledger`, when given, is the already open ledger at
        the config's location (bridges sharing one share its connections)."""
        env = environ if environ is not None else os.environ
        token = config.meta.access_token(env)
        base = Path(config.source).parent if config.source != "<memory>" else None
        return cls(
            config,
            sheets=SheetsClient(config.sheets, base_dir=base),
            ledger=ledger if ledger is not None else open_ledger(config.ledger_location(env)),
            capi=capi_client(config.meta, token) if token else None,
            **kw,
        )

    @property
    def spreadsheet_id(self) -> str:
        return self.config.sheets.spreadsheet_id

    @property
    def sheet_tab(self) -> SheetTab:
        """Where this bridge's leads live: every ledger row of theirs is scoped to it."""
        return SheetTab(self.config.sheets.spreadsheet_id, self.config.sheets.tab)

    def record_edit(self, row: int, old: str | None, new: str, at: datetime) -> None:
        """Keep a status edit durably; the next pass (usually the one the edit starts) maps it
        to its lead as a transition, so 3 changes between passes become 3 events."""
        self.ledger.add_edit(self.sheet_tab, row, old, new, at, self.clock())

    def sync(
        self,
        *,
        dry_run: bool = False,
        keys: Collection[str] | None = None,
        rows: Collection[int] | None = None,
        trigger: str = "sync",
        progress: Progress | None = None,
        on_start: Callable[[int], None] | None = None,
        read: Reader | None = None,
        lock_wait: float | None = None,
    ) -> SyncResult:
        """One pass under the tab's lock (SyncBusy when another pass holds it after `lock_wait`
        seconds, the bridge's own wait by default). `on_start`
        learns the pass's ledger id once the lock is held; its progress and answer go to the
        pass's ledger record, where any process can read them. `read`, when given, reads some
        rows instead of the whole tab, and the pass plans the leads it gives against only
        their history: it costs what those rows cost, not the sheet."""
        wait = self.lock_wait if lock_wait is None else lock_wait
        with gc_pass(), self.ledger.lock(self.sheet_tab, wait=wait) as lease:
            now = self.clock()
            self._close_lost_passes(now)
            full = keys is None and rows is None and read is None
            pass_id = self.ledger.start_pass(self.sheet_tab, trigger, dry_run, now, full=full)
            if on_start is not None:
                on_start(pass_id)
            with PassProgress(self.ledger, pass_id, self.clock, progress) as recorded:
                result = self._pass(
                    pass_id, now, dry_run, keys, rows, trigger, recorded, lease, read
                )
            if full and not dry_run:
                self._prune(now)
            return result

    def _prune(self, now: datetime) -> None:
        """Old pass records' answers dropped, older records deleted (ledger/contract.py
        KEEP_PASSES…): a ledger no longer grows by a pass's answer every hour. A ledger that
        cannot be pruned now is pruned after the next pass."""
        try:
            dropped, deleted = self.ledger.prune_passes(self.sheet_tab, now)
        except LedgerError as exc:
            log.warning("could not prune old passes of %s: %s", self.sheet_tab, exc)
            return
        if dropped or deleted:
            log.info(
                "pruned %s: %d old pass answer(s) dropped, %d pass record(s) deleted",
                self.sheet_tab,
                dropped,
                deleted,
            )

    def close_lost_passes(self) -> bool:
        """When a pass of this tab still shows running but nobody holds the tab's lock, its
        process died: record it lost now (a sweep calls this), not when its heartbeat is two
        minutes old. Never waits for the lock; whether one was closed."""
        if self.ledger.running_pass(self.sheet_tab, self.clock()) is None:
            return False
        try:
            with self.ledger.lock(self.sheet_tab, wait=0.0):
                self._close_lost_passes(self.clock())
        except SyncBusy:
            return False  # a live pass holds it
        return True

    def _close_lost_passes(self, now: datetime) -> None:
        """Record as lost every pass of this tab still shown running. This pass holds the
        tab's lock and a live pass never lets go of it, so their process died (SIGKILL, a
        replica or container gone): whoever follows one learns it now, not when its heartbeat
        is two minutes old. What they sent is in the ledger; this pass does the rest."""
        closed: set[int] = set()
        while (stale := self.ledger.running_pass(self.sheet_tab, now)) is not None:
            if stale.id in closed:  # not closable: never loop on it
                break
            closed.add(stale.id)
            log.warning("pass %s on %s was lost (its process stopped)", stale.id, self.sheet_tab)
            self.ledger.finish_pass(stale.id, {}, now, error=PASS_LOST)

    def _pass(
        self,
        pass_id: int,
        now: datetime,
        dry_run: bool,
        keys: Collection[str] | None,
        rows: Collection[int] | None,
        trigger: str,
        progress: Progress,
        lease: LockLease,
        read: Reader | None = None,
    ) -> SyncResult:
        started = time.monotonic()
        cfg, where, ledger = self.config, self.sheet_tab, self.ledger
        last_full = ledger.last_full_pass(where)
        # Only a full pass that writes trusts and stores memos: a preview reports what it
        # would send, which a memo does not hold; a pass of some leads reports only those.
        full = read is None and keys is None and rows is None
        remembered: Remembered | None = None
        stream: LogStream | None = None
        if full:  # a whole tab's read is the largest thing a pass holds: room for it first
            give_back_freed_memory(collect=True)
        try:
            progress("read", 0, 1)
            if full and not dry_run and self.row_memos:
                table, layout, leads, remembered = self._read_remembered(now)
            else:
                table, layout, leads = (read or self.read)()
            progress("read", 1, 1)
            tz = time_zone(table)
            if not dry_run:  # the CAPI Log's lines appended while sending (sync/capi_log.py)
                stream = LogStream(
                    self.sheets, cfg.sheets.tab, lambda: format_sent_at(self.clock(), tz)
                )
            # After typing, only the bridge cells are still needed (for the write-back's
            # diff): the rest of a 100,000-row table is let go before planning.
            written = bridge_cells(table, layout)
            first_row = table.first_row
            del table
            # A stored edit or transition whose time cannot be used is skipped and said once
            # (then dropped), never a crash of this pass and every later one. Finding them
            # scans the tab's whole history: a pass of some rows leaves that to the next full
            # pass (its history of those leads skips them all the same).
            unreadable = ledger.unreadable(where) if read is None else []
            notices = [f"Skipped from the ledger: {u}" for u in unreadable]
            if not dry_run:
                ledger.drop_unreadable(unreadable)
                if read is None:  # a stored edit names a row: only the whole tab places it
                    self._resolve_edits(leads)
            if not dry_run:
                ledger.bind_pixel(where, cfg.meta.pixel_id, now)
            leads = self._restore_keys(leads, now)
            skipped: Mapping[str, tuple[int, object]] = {}
            if remembered is not None:
                leads = remembered.taken_back(leads, cfg, layout)
                skipped = remembered.skipped
            some = read is not None or len(skipped) > len(leads)
            with gc_paused():
                history = ledger.history(where, {r.key for r in leads} if some else None)
            logged, log_read_to, accounted = self._log_behind(leads, history, read is None, skipped)
            self.refuse_if_ledger_behind(written, first_row, layout, leads, history, logged)
            count_log = accounted and not dry_run  # the Log's lines checked are accounted for
            if count_log and log_read_to is not None:
                ledger.set_log_lines(where, log_read_to, now)
            only = set(keys) if keys is not None else None
            if rows is not None:
                wanted = set(rows)
                only = (only or set()) | {r.key for r in leads if r.row_number in wanted}
            # Every pass takes every edit of its tab that is due (docs/edits.md): a pass of
            # some leads plans the due ones it read too (sync/edits.py's reader reads them all).
            due = {q.lead_key for q in ledger.queued_edits(where) if q.due_at <= now}
            if only is not None:
                only |= due
            if read is not None:  # taken only if read (a whole tab holds every lead there is)
                due &= {r.key for r in leads}
            with gc_paused():
                # A due lead's identity is hashed as the sender reaches it (_send_and_record).
                the_plan = plan(
                    leads,
                    cfg,
                    history,
                    now,
                    only_keys=only,
                    last_full_pass=last_full,
                    tz=tz,
                    hash_later=not dry_run,
                )
            del leads, history  # the plan carries what it needs of them
            # The statuses seen, written by the ledger's writer from now on, while the pass
            # checks the pixel's other tabs and builds its first requests (before any mark:
            # 100,000 of them in a first pass, ~0.5 s).
            writes = None
            early: EarlyWrite | None = None
            if not dry_run:
                writes = LedgerWrites(
                    ledger,
                    where,
                    now,
                    functools.partial(self._record_decided, the_plan.observations, (), now),
                )
            try:
                # Before one_identity_per_pixel: a lead whose due events it drops is not at
                # rest.
                fixed = memo_fixed_points(the_plan, due) if remembered is not None else set()
                due_events = memo_due_events(the_plan) if remembered is not None else {}
                one_identity_per_pixel(the_plan, self._held_elsewhere(the_plan))
                memos_of = self._memos_of(remembered, fixed, due_events, written, first_row, layout)
                if not dry_run:
                    early = EarlyWrite(
                        self.sheets,
                        written,
                        first_row,
                        layout,
                        memos_of=memos_of,
                        allowed=functools.partial(_still_ours, lease),
                    )
                result = self._send_and_record(
                    the_plan, tz, dry_run, trigger, progress, now, lease, stream, writes, early
                )
            finally:
                if writes is not None:
                    writes.close()
                if early is not None:  # its rows are left to the write-back if it failed
                    early.wait()
            if early is not None and early.fault is not None:
                raise early.fault  # a fault of ours beside the sending is the pass's
            result.notices[:0] = notices
            del the_plan  # sent: free it before the write-back's buffers
            if not dry_run:
                try:  # by the lock's holder only, and not by a server about to be killed
                    lease.check()
                    stopping.check()
                except (LockLost, ServerStopping) as why:
                    raise _stopped(why, result.events_sent) from None
                # Taken: planned (sent, held or refused by the rules) or not in the sheet.
                ledger.dequeue_edits(where, due, now)
                ledger_jobs: list[Future[None]] = []
                with ThreadPoolExecutor(3, thread_name_prefix="after-send") as pool:
                    made: Future[_Memos] | None = None
                    if remembered is not None and memos_of is not None:  # while Google writes
                        made = pool.submit(
                            self._make_memos, remembered, memos_of, result.rows, early
                        )
                    self._write_back(
                        written,
                        first_row,
                        layout,
                        result,
                        tz,
                        progress,
                        count_log,
                        # Once the write phase is told (not while the ledger's write lock is
                        # held), while the cells to write are worked out and Google writes
                        # them and appends the Log.
                        writing=lambda: ledger_jobs.extend(
                            self._after_send_ledger(pool, made, now)
                        ),
                        stream=stream,
                        early=early,
                    )
                for job in ledger_jobs:  # a fault of ours in them is the pass's
                    job.result()
            if remembered is not None and remembered.skipped:
                self._add_remembered(result, remembered)
        except Exception as exc:
            # A pass the next one already marked lost stays lost (the ledger keeps the mark);
            # its answer says what it sent.
            sent = {"events_sent": exc.sent} if isinstance(exc, PassStopped) else {}
            ledger.finish_pass(
                pass_id,
                {},
                self.clock(),
                error=type(exc).__name__,
                summary={"error": failure_words(exc), **sent},
            )
            count_pass("failed")
            raise
        finally:
            self.hasher.close()
            if stream is not None:
                stream.close()  # an append in flight ends (its lines are in the Log or not)
        result.seconds = time.monotonic() - started
        ledger.finish_pass(
            pass_id, result.counts, self.clock(), error=result.halted, summary=result.summary()
        )
        outcome = "preview" if dry_run else "halted" if result.halted else "done"
        count_pass(outcome, (e[2] for r in result.planned_rows() for e in r.logged))
        log.info(
            "pass %s on %s: %s (%.2f s, %d row(s) from their memo)",
            trigger,
            where,
            result.counts,
            result.seconds,
            result.rows_remembered,
        )
        return result

    # -- row memos (sync/memo.py) ----------------------------------------------------------
    def _read_remembered(
        self, now: datetime
    ) -> tuple[SheetTable, ColumnLayout, list[LeadRow], Remembered]:
        """Read the whole tab and type only the rows whose memo does not hold (the others are
        reported from their memo: `Remembered.skipped`)."""
        # The memos are read from the ledger on a thread of its own while Google sends the tab.
        with ThreadPoolExecutor(1, thread_name_prefix="memo-read") as pool:
            memos = pool.submit(self._memos_and_edits)
            try:
                with gc_paused():
                    table = self.sheets.read_table()
                layout = column_layout(table, self.config)
            except (SheetsError, TableError) as exc:
                raise SyncError(str(exc)) from None
            stored, busy_rows, busy_keys = memos.result()
            del memos  # the future holds the memos too
        with gc_paused():
            remembered = remember(table, self.config, layout, stored, busy_rows, busy_keys)
            del stored  # what typing needs of the memos is in `remembered`: room for the rows
            leads = lead_rows(table, self.config, layout, remembered.leave_out)
        return table, layout, leads, remembered

    def _memos_and_edits(self) -> tuple[dict[str, RowMemo], set[int], set[str]]:
        """The tab's row memos, and the rows and leads with an edit waiting (none of their
        rows may be left out); on the calling thread, which lets go of its connection after."""
        where = self.sheet_tab
        ledger = self.ledger
        try:
            stored = ledger.row_memos(where)
            busy_rows = {e.row_number for e in ledger.pending_edits(where)} if stored else set()
            busy_keys = {q.lead_key for q in ledger.queued_edits(where)} if stored else set()
        finally:
            self.ledger.release_thread()
        return stored, busy_rows, busy_keys

    @staticmethod
    def _add_remembered(result: SyncResult, remembered: Remembered) -> None:
        """The rows left out join the pass's answer in sheet order, as if planned: their
        memo holds the report a plan would give them (decoded once something reads it)."""
        rows = PassRows(list(result.rows), remembered)
        result.rows = rows
        result.counts = summary_counts(rows.planned)
        result.counts[REMEMBERED_OUTCOME] += rows.remembered
        result.rows_remembered = rows.remembered

    @staticmethod
    def _make_memos(
        remembered: Remembered,
        memos_of: Callable[[Sequence[RowReport]], list[tuple[str, str, str, str]]],
        rows: Sequence[RowReport],
        early: EarlyWrite | None = None,
    ) -> _Memos:
        """The memos for the rows at rest once the write-back is done, the others' to delete
        (Remembered.to_store; `rows`: the planned rows' reports; `early`: the memos it made
        are kept, its rows not made again). Made and stored while the sheet is written
        (_after_send_ledger)."""
        made = early.memos if early is not None else []
        if early is not None and early.memo_rows:
            rows = without(rows, early.memo_rows)
        return remembered.to_store([*made, *memos_of(rows)])

    def _memos_of(
        self,
        remembered: Remembered | None,
        fixed: Collection[str],
        due: Mapping[str, int],
        written: Sequence[Sequence[object]],
        first_row: int,
        layout: ColumnLayout,
    ) -> Callable[[Sequence[RowReport]], list[tuple[str, str, str, str]]] | None:
        """What makes the memos of some final rows (Remembered.memos_of, with the
        fingerprint the tab has once the write-back created the bridge's missing headers);
        None when the pass stores none."""
        if remembered is None:
            return None
        after = None
        if layout.new_headers:  # the header as the write-back leaves it
            header = list(remembered.shell.header)
            for col, name in layout.new_headers:
                header += [""] * (col + 1 - len(header))
                header[col] = name
            after = memo_fingerprint(self.config, replace(remembered.shell, header=header))

        def memos_of(rows: Sequence[RowReport]) -> list[tuple[str, str, str, str]]:
            with gc_paused():
                return remembered.memos_of(rows, fixed, due, written, first_row, after)

        return memos_of

    def _after_send_ledger(
        self, pool: ThreadPoolExecutor, made: Future[_Memos] | None, now: datetime
    ) -> list[Future[None]]:
        """Once the pass has sent, while Google writes the sheet, on helper threads: the events
        the pass wrote made searchable by Leadgen ID, e-mail and phone in bulk
        (ledger.index_identities) while the row memos are made, and the memos stored (`made`).
        A ledger with one writer at a time (SQLite) does one after the other on one thread
        (two would take turns by waiting); PostgreSQL stores the memos beside the index."""

        def released(*jobs: Callable[[], None]) -> None:
            try:
                for job in jobs:
                    job()
            finally:
                self.ledger.release_thread()

        jobs: list[Callable[[], None]] = [self._index_identities]
        started: list[Future[None]] = []
        if made is not None:
            store = functools.partial(self._store_memos, made, now)
            if self.ledger.one_writer:
                jobs.append(store)
            else:
                started.append(pool.submit(released, store))
        return [pool.submit(released, *jobs), *started]

    def _index_identities(self) -> None:
        """Searches find the pass's events before they are indexed all the same; an index
        that fails is said, and the next pass indexes them."""
        try:
            self.ledger.index_identities()
        except LedgerError as exc:
            log.warning("the ledger's identity index is behind (the next pass catches up): %s", exc)
        except Exception:  # a fault of ours: said in full, not lost in a future nobody reads
            log.exception("indexing the pass's identities failed (the next pass tries again)")

    def _store_memos(self, made: Future[_Memos], now: datetime) -> None:
        """Memos for the rows at rest, the others' deleted. Stored while Google writes the
        rows' cells, not after: a memo is trusted only for a row that reads as it digests, its
        bridge cells included as the write-back leaves them (sync/memo.py), so a row whose
        cells Google refuses does not match its memo, and the next pass plans it again. A
        ledger that cannot store them costs the next pass its shortcut, nothing else."""
        try:
            store, forget = made.result()
            if not store and not forget:
                return
            self.ledger.store_row_memos(self.sheet_tab, store, forget, now, self.clock())
        except LedgerError as exc:
            log.warning("could not store the row memos of %s: %s", self.sheet_tab, exc)

    def read(self) -> tuple[SheetTable, ColumnLayout, list[LeadRow]]:
        """Read the tab (one API call) and type its rows."""
        return self._typed(self.sheets.read_table)

    def read_rows(self, rows: Iterable[int]) -> tuple[SheetTable, ColumnLayout, list[LeadRow]]:
        """Read the header and these rows only (one API call, whatever the sheet's size) and
        type them; each lead keeps its sheet row number."""
        return self._typed(lambda: self.sheets.read_rows(rows))

    def _typed(
        self, fetch: Callable[[], SheetTable]
    ) -> tuple[SheetTable, ColumnLayout, list[LeadRow]]:
        try:
            with gc_paused():
                table = fetch()
            layout = column_layout(table, self.config)
        except (SheetsError, TableError) as exc:
            raise SyncError(str(exc)) from None
        with gc_paused():
            return table, layout, lead_rows(table, self.config, layout)

    def _restore_keys(self, leads: list[LeadRow], now: datetime) -> list[LeadRow]:
        """A row that lost its CAPI Key (deleted and typed again, or copied into another tab
        of the pixel without its CAPI cells) and has no Leadgen ID is the known lead of this
        pixel with the same e-mail or phone, if one was planned in the last MATCH_WINDOW: it
        takes that lead's key back (docs/identity-and-dates.md)."""
        lost = [r for r in leads if r.derived_key]
        pixel = self.config.meta.pixel_id
        # Hashing phones costs ~0.2 ms a row: a first pass of a new sheet (every row without a
        # key) on a pixel with no recent lead skips it.
        if not lost or not self.ledger.pixel_has_events(pixel, now - MATCH_WINDOW):
            return leads
        contacts_of: dict[int, set[str]] = {}
        for r in lost:
            if r.derived_key and row_identity(r).startswith("key:"):
                found = contact_hashes(r.identity, self.config.meta.default_country)
                if found:
                    contacts_of[r.row_number] = found
        if not contacts_of:
            return leads
        known = self.ledger.pixel_events(
            pixel,
            contacts=set().union(*contacts_of.values()),
            since=now - MATCH_WINDOW,
        )
        if not known:
            return leads
        out = []
        for r in leads:
            mine = contacts_of.get(r.row_number)
            matches = [k for k in known if mine and ({k.em, k.ph} & mine)]
            if matches and not any(k.lead_key == r.key for k in matches):
                latest = max(matches, key=lambda k: k.first_planned)
                r = replace(r, key=latest.lead_key)
            out.append(r)
        return out

    def _held_elsewhere(self, the_plan: Plan) -> dict[tuple[str, str], str]:
        """(identity, event name) → where, for the due leads' events that another row or tab of
        this pixel has sent (or is sending)."""
        # A list, not a set: one key an identity as a rule (a set is ~4 times the size, and a
        # 100,000-lead plan makes one per lead).
        mine: dict[str, list[str]] = {}
        for d in the_plan.decisions:
            identity = decision_identity(d)
            if identity is not None:
                mine.setdefault(identity, []).append(d.lead_key)
        if not mine:
            return {}
        found = self.ledger.pixel_events(
            self.config.meta.pixel_id,
            lead_ids=[int(i[5:]) for i in mine if i.startswith("lead:")],
            keys=[i[4:] for i in mine if i.startswith("key:")],
        )
        held: dict[tuple[str, str], str] = {}
        for p in found:
            if p.state not in ("sent", "sending"):
                continue
            # The lead's identity, or its CAPI Key when this row has no Leadgen ID (a row that
            # took a known lead's key back is that lead, whatever identity it was sent with).
            for identity in {p.identity, f"key:{p.lead_key}"} & mine.keys():
                if p.where == self.sheet_tab and p.lead_key in mine[identity]:
                    continue  # this row's own event
                held[(identity, p.event_name)] = (
                    f"sent from tab {p.tab!r}"
                    if p.where != self.sheet_tab
                    else f"sent as {p.lead_key}"
                )
        return held

    def refuse_if_ledger_behind(
        self,
        written: Sequence[Sequence[object]],
        first_row: int,
        layout: ColumnLayout,
        leads: Sequence[LeadRow],
        history: Mapping[str, LeadHistory],
        logged: Mapping[int, Sequence[str]] | None = None,
    ) -> None:
        """LedgerBehindSheet when rows' CAPI columns name an event sent or expired that this
        tab's ledger has no record of (a ledger emptied, lost, restored from an older backup,
        or rows pasted with another tab's CAPI cells): a pass would send it again. Checked per
        event, not per lead: a backup that knows a lead's Lead but not its Purchase refuses.
        `logged`: the same, found in the CAPI Log's lines the ledger has not counted
        (`_log_behind`), per row."""
        behind = ledger_behind(history, written, first_row, layout, leads, self._funnel_order())
        for row, names in (logged or {}).items():
            behind.setdefault(row, []).extend(n for n in names if n not in behind[row])
        if behind:
            done = "Nothing was sent."
            raise LedgerBehindSheet(
                describe_behind(behind, self.config, done, full_path=False),
                describe_behind(behind, self.config, done),
            )

    def _log_behind(
        self,
        leads: Sequence[LeadRow],
        history: Mapping[str, LeadHistory],
        whole: bool,
        skipped: Mapping[str, tuple[int, object]] | None = None,
    ) -> tuple[dict[int, list[str]], int | None, bool]:
        """Per row, the events its lead's CAPI Log lines below the ledger's count say were sent
        or expired that `history` has no record of; the Log's last line read (None: none); and
        whether the ledger may count the Log's lines up to there and up to this pass's append.

        A ledger restored from a backup carries the count of its day: the lines appended since
        are read (one values.batchGet), whatever the rows' CAPI cells say now (cleared, say).
        Only the leads read are refused on (the ones a pass could send), as in `ledger_behind`.
        `whole`: the pass read the whole tab (lines of leads no longer in it are let go);
        a pass of some rows counts the lines only when the ledger knows every one of this tab
        (else the next full pass does). A ledger that never counted the Log (made before the
        count, or no pass appended yet) reads nothing: its count starts at its next full
        pass's append (docs/operations.md, "Restoring a ledger"). `skipped`: the rows a full
        pass left out (their memo holds), lead key → (row number, cells): read, not planned."""
        counted = self.ledger.log_lines(self.sheet_tab)
        if counted is None:
            return {}, None, whole
        try:
            header, lines = self.sheets.read_log_after(counted, len(LOG_HEADER))
        except SheetsError as exc:
            raise SyncError(f"could not read the {LOG_TAB} tab: {exc}") from None
        col = log_columns(header)
        row_of = {r.key: r.row_number for r in leads}
        left_out = skipped or {}
        row_of.update((key, number) for key, (number, _) in left_out.items())
        tab, events = self.config.sheets.tab, self._funnel_order()
        claimed: list[tuple[str, str]] = []  # (lead key, event) this tab's lines say went
        for line in lines:
            key, event = log_cell(line, col, "CAPI Key"), log_cell(line, col, "Event")
            line_tab = log_cell(line, col, "Tab")
            if (
                key
                and (line_tab == tab or (not line_tab and key in row_of))
                and log_cell(line, col, "Result") in ("sent", "expired")
                and event in events
            ):
                claimed.append((key, event))
        others = {key for key, _ in claimed if key not in row_of}
        # The lines of leads this pass did not read (known, or left to a full pass), and of
        # the rows it left out (read, but their history was not loaded).
        wanted = {key for key, _ in claimed if key in left_out}
        if not whole:
            wanted |= others
        known = {**self.ledger.history(self.sheet_tab, wanted), **history} if wanted else history
        behind: dict[int, list[str]] = {}
        accounted = True
        for key, event in claimed:
            if key in known and event in known[key].events:
                continue
            if key not in row_of:
                accounted = whole
                continue
            names = behind.setdefault(row_of[key], [])
            if event not in names:
                names.append(event)
        # values.get leaves trailing empty rows out and keeps the ones between lines ([]).
        return behind, counted + len(lines) if lines else None, accounted

    def _resolve_edits(self, leads: list[LeadRow]) -> None:
        edits = self.ledger.pending_edits(self.sheet_tab)
        if not edits:
            return
        by_row = {r.row_number: r for r in leads}
        self.ledger.resolve_edits(
            self.sheet_tab,
            [
                (e, by_row[e.row_number].key)
                if e.row_number in by_row and e.new_value.strip()
                else (e, None)
                for e in edits
            ],
        )

    def _send_and_record(
        self,
        the_plan: Plan,
        tz: tzinfo,
        dry_run: bool,
        trigger: str,
        progress: Progress,
        now: datetime,
        lease: LockLease,
        stream: LogStream | None = None,
        writes: LedgerWrites | None = None,
        early: EarlyWrite | None = None,
    ) -> SyncResult:
        """Send what is due, record Meta's answers, and report every row (`stream`: takes each
        row's CAPI Log lines as soon as its report is final; `writes`: the ledger's writer,
        started with the plan's statuses seen; `early`: takes each final report too, and
        writes those final once every request is built).

        The due leads are completed (their identity hashed, their events built) one by one as
        the sender takes them, oldest first: the first requests leave while later leads are
        still being hashed, and Meta's round trips overlap that work at every size."""
        told = [t.add for t in (stream, early) if t is not None]

        def on_final(report: RowReport) -> None:
            for tell in told:
                tell(report)

        reports = RowReports(
            the_plan.decisions,
            self._funnel_order(),
            tz,
            dry_run,
            on_final=on_final if told else None,
        )
        record: Callable[[], None] | None = None
        if not dry_run:
            for d in the_plan.decisions:
                if d.todo is None:
                    self._report_decided(d, reports)
            # The statuses seen are the writer's first write (_pass).
            record = functools.partial(self._record_decided, (), the_plan.decisions, now)
        todo = the_plan.unhashed
        if not dry_run:
            self.hasher.start(len(todo))  # a worker only when there is enough to hash
        completed: list[RowDecision] = []

        def due_leads() -> Iterator[RowDecision]:
            yield from the_plan.leads_to_send  # complete already (none when hashed later)
            for d, hashed in self.hasher.hashed(todo, self.config.meta):
                the_plan.complete(d, hashed)
                reports.expect(d)
                completed.append(d)
                self._report_decided(d, reports)
                if d.events:
                    yield d

        sent = Sent()
        if (todo or the_plan.leads_to_send) and not dry_run:
            meta = self.config.meta
            sender = Sender(
                self._capi_to_send(),
                self.ledger,
                self.sheet_tab,
                reports,
                batch_size=meta.batch_size,
                max_in_flight=meta.max_in_flight,
                clock=self.clock,
                lease=lease,
                progress=progress,
            )
            # Recorded by the ledger's writer before the first request's mark: the requests
            # are built meanwhile (a 100,000-lead first pass records ~0.6 s of statuses seen).
            sender.before(record)
            record = None
            # While the last requests wait for Meta: the rows final by then are written.
            sender.when_built(early.start if early is not None else None)
            estimate = sum(len(d.events) for d in the_plan.leads_to_send)
            estimate += sum(len(d.todo.fresh) for d in todo if d.todo is not None)
            try:
                # The collector off while sending (sync/collector.py): what sending builds
                # (events, answers, reports) holds no cycle, and a full collection walked it
                # all again every ~1.3 s (~2 s of a 100,000-lead first pass).
                with gc_paused():
                    sent = sender.send(due_leads(), now, total=estimate, writes=writes)
            except (LockLost, ServerStopping) as why:
                raise _stopped(why, sender.delivered) from None
            finally:
                self.hasher.close()
            # What completing the leads decided without Meta (too old, no time, no usable
            # identifier): recorded once they are all complete.
            self._record_decided([], completed, now)
        if record is not None:
            if writes is not None:
                writes.flush()  # the statuses seen are in (or their error is raised)
            record()
        rows = reports.finish()
        halted = sent.halted.message if sent.halted else None
        return SyncResult(
            spreadsheet_id=self.spreadsheet_id,
            tab=self.config.sheets.tab,
            dry_run=dry_run,
            trigger=trigger,
            counts=summary_counts(rows),
            rows=rows,
            events_sent=sum(1 for r in rows for e in r.logged if e[2] == "sent"),
            meta_requests=sent.requests,
            notices=[halted] if halted else [],
            halted=halted,
        )

    def _record_decided(
        self, observations: Sequence[Observation], decisions: Sequence[RowDecision], now: datetime
    ) -> None:
        """What the plan decided without Meta: the statuses seen, the events too old to send,
        the stages taken as a baseline (of the decisions complete)."""
        where, ledger = self.sheet_tab, self.ledger
        observed = [(o.lead_key, o.status, o.at, o.source) for o in observations]
        if observed:
            ledger.add_transitions(where, observed, now)
        done = [d for d in decisions if d.todo is None]
        expired = [x for d in done for x in d.expired]
        baseline = [b for d in done for b in d.baseline]
        if expired:
            ledger.record_expired(where, expired, now)
        if baseline:
            ledger.record_baseline(where, baseline, now)

    @staticmethod
    def _report_decided(d: RowDecision, reports: RowReports) -> None:
        for x in d.expired:
            reports.add(
                x.lead_key,
                EventRecord(
                    x.event_name, x.event_id, "expired", x.event_time, error=expired_reason(x)
                ),
            )
        for b in d.baseline:
            seen = int(b.seen_at.timestamp())
            reports.add(
                b.lead_key,
                EventRecord(b.event_name, b.event_id, "baseline", seen, error=BASELINE_REASON),
            )

    def _funnel_order(self) -> dict[str, int]:
        """Event name → funnel index. Built once per pass: config.stage_map builds a new
        StageMap on every access."""
        return {s.event: s.index for s in self.config.stage_map.stages}

    def _capi_to_send(self) -> CapiClient:
        if self.capi is None:
            raise SyncError(
                f"No Meta access token: set the environment variable "
                f"{self.config.meta.access_token_env} (a CAPI token from Events Manager)"
            )
        return self.capi

    def _write_back(
        self,
        written: Sequence[Sequence[object]],
        first_row: int,
        layout: ColumnLayout,
        result: SyncResult,
        tz: tzinfo,
        progress: Progress,
        count_log: bool = False,
        writing: Callable[[], object] | None = None,
        stream: LogStream | None = None,
        early: EarlyWrite | None = None,
    ) -> None:
        """One values.batchUpdate of the bridge cells that changed (those `early` did not
        write), one append to the log (a refusal is said in the result's notices).

        `written` holds each row's bridge cells as read, in BRIDGE_COLUMNS order. `count_log`:
        record the Log's line count after the append (`_log_behind` says when). `writing`:
        called once the write phase is told, before the sheet is written. `stream`: the
        pass's LogStream; the rows whose lines it appended while sending are left out, every
        other row's lines are appended here, row by row. `early`: the rows whose cells it wrote
        (and the headers with them) are left out."""
        if self._before_write_back is not None:
            self._before_write_back()
        progress("write", 0, 1)
        if writing is not None:  # it starts while the cells to write are worked out
            writing()
        rows: Sequence[RowReport] = result.rows
        cells: list[tuple[int, int, object]] = []
        if early is not None and early.done:
            rows = without(rows, early.done)
        if early is None or not early.headers:
            cells += header_cells(layout)
        cells += changed_cells(rows, written, first_row, layout)
        del rows
        result.cells_written = early.cells if early is not None else 0
        try:
            result.cells_written += self.sheets.write_cells(cells)
            del cells
            appended: Collection[int] = ()
            last = None
            if stream is not None:
                stream.close()
                appended, last = stream.appended, stream.last
            left = [r for r in result.rows if r.logged and id(r) not in appended]
            if left:
                lines = log_lines(left, result.tab, format_sent_at(self.clock(), tz))
                last = self.sheets.append_log(lines, LOG_HEADER) or last
            if count_log and last is not None:  # lines this ledger accounts for
                self.ledger.set_log_lines(self.sheet_tab, last, self.clock())
        except SheetsError as exc:
            result.notices.append(
                f"Sent to Meta and recorded in the ledger, but the sheet could not be updated "
                f"({exc}); the next sync writes the rows again, nothing is sent twice"
            )
        progress("write", 1, 1)


def rows_ahead_of(
    history: Mapping[str, LeadHistory],
    written: Sequence[Sequence[object]],
    first_row: int,
    layout: ColumnLayout,
    leads: Sequence[LeadRow],
) -> list[LeadRow]:
    """The leads whose CAPI columns show an event sent or expired and that `history` has no
    event of at all (an empty history: every lead the sheet shows so)."""
    return [
        r
        for r, cells in bridge_cells_of(written, first_row, layout, leads)
        if not (r.key in history and history[r.key].events) and shows_sent_or_expired(cells)
    ]


def adopt_command(config: BridgeConfig, full_path: bool = True) -> str:
    """The command that takes a tab's sent events over from its sheet, with the config's path
    as it was given, or (`full_path` False: words that leave the server) its file name only.
    A config built in memory has neither: FILE."""
    if config.source == "<memory>":
        path = "FILE"
    else:
        path = config.source if full_path else Path(config.source).name
    return f"sheet-bridge adopt --config {shlex.quote(path)}"


def describe_behind(
    behind: Mapping[int, Sequence[str]], config: BridgeConfig, done: str, full_path: bool = True
) -> str:
    """What `ledger_behind` found, in words, with the fix (`adopt_command`); `done`: what was
    (not) done."""
    events = sum(len(names) for names in behind.values())
    rows = sorted(behind)
    shown = ", ".join(str(n) for n in rows[:10]) + (", …" if len(rows) > 10 else "")
    return (
        f"the ledger has no record of {events} event(s) on {len(rows)} row(s) this sheet "
        f"says were sent or expired (tab {config.sheets.tab!r}, rows {shown}): it is "
        "new, emptied or restored from a backup older than the sheet, and a sync now "
        f"would send them to Meta again. {done} Run `{adopt_command(config, full_path)}` to "
        "take them "
        "over from the sheet's CAPI columns and CAPI Log (nothing is sent twice); if those "
        "rows were copied from another tab with their CAPI cells, clear those rows' CAPI "
        "cells instead"
    )


def ledger_behind(
    history: Mapping[str, LeadHistory],
    written: Sequence[Sequence[object]],
    first_row: int,
    layout: ColumnLayout,
    leads: Sequence[LeadRow],
    events: Collection[str],
) -> dict[int, list[str]]:
    """Per row number, the events of `events` (this config's) its CAPI Status names as sent or
    expired that `history` has no record of; a lead with no event in `history` whose CAPI
    Sent At holds a time counts too (its event names may be gone from the status)."""
    behind: dict[int, list[str]] = {}
    # A sheet holds few distinct CAPI Status texts (one per stage reached, mostly): each is
    # parsed once (100,000 rows: 0.2 s parsed row by row).
    named_in: dict[str, tuple[str, ...]] = {}
    for r, cells in bridge_cells_of(written, first_row, layout, leads):
        known = history[r.key].events if r.key in history else {}
        status = cells[_STATUS_CELL]
        text = status if isinstance(status, str) else ""
        named = named_in.get(text)
        if named is None:
            said = said_events(text)
            named = named_in[text] = (*said["sent"], *said["expired"])
        missing = [n for n in named if n in events and n not in known]
        if missing:
            behind[r.row_number] = missing
        elif not known and shows_sent_or_expired(cells):
            behind[r.row_number] = list(named) or ["(an event; the row shows a CAPI Sent At)"]
    return behind


_STATUS_CELL = BRIDGE_COLUMNS.index("CAPI Status")


def bridge_cells_of(
    written: Sequence[Sequence[object]],
    first_row: int,
    layout: ColumnLayout,
    leads: Sequence[LeadRow],
) -> Iterator[tuple[LeadRow, Sequence[object]]]:
    """Each lead with its bridge cells as read (BRIDGE_COLUMNS order). Cells where a CAPI
    column is still to be created (stray cells right of the header) are not the bridge's:
    they read as empty."""
    missing = {BRIDGE_COLUMNS.index(h) for _, h in layout.new_headers}
    width = len(BRIDGE_COLUMNS)
    for r in leads:
        i = r.row_number - first_row
        if not 0 <= i < len(written) or not (row := written[i]):
            continue  # no bridge cell at all: it says nothing (the usual new row)
        if missing or len(row) < width:
            row = [("" if j in missing or j >= len(row) else row[j]) for j in range(width)]
        yield r, row


def log_columns(header: Sequence[object]) -> dict[str, int]:
    """Each LOG_HEADER column's index in a CAPI Log whose first row is `header`: where that
    row names it, else its place in LOG_HEADER (a Log whose header was lost)."""
    names = [str(h) for h in header]
    return {name: names.index(name) if name in names else i for i, name in enumerate(LOG_HEADER)}


def log_cell(line: Sequence[object], col: Mapping[str, int], name: str) -> str:
    """One cell of a CAPI Log line, as text (empty when the line stops before it)."""
    i = col[name]
    return str(line[i]).strip() if i < len(line) and line[i] is not None else ""
