"""The one imperative pass: lock, read, plan, mark, send, record, write back, log."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sheet_bridge.config import BRIDGE_COLUMNS, BridgeConfig
from sheet_bridge.meta.client import CapiClient, SendOutcome
from sheet_bridge.sheets.client import SheetsClient, SheetsError
from sheet_bridge.sheets.table import SheetTable, TableError
from sheet_bridge.sync.ledger import Ledger
from sheet_bridge.sync.plan import EventRecord, LeadRow, Plan, RowDecision, plan
from sheet_bridge.sync.report import (
    RowReport,
    format_sent_at,
    record_after,
    render_row,
    summary_counts,
)
from sheet_bridge.sync.rows import ColumnLayout, column_layout, lead_rows, time_zone

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Progress = Callable[[str, int, int], None]
LOG_HEADER = ["Time", "Row", "CAPI Key", "Lead Status", "Event", "Event ID", "Result", "Answer"]


class SyncError(Exception):
    """The pass could not run; the message says why and what to do."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SyncResult:
    spreadsheet_id: str
    tab: str
    dry_run: bool
    trigger: str
    counts: dict[str, int]
    rows: list[RowReport]
    events_sent: int = 0
    meta_requests: int = 0
    cells_written: int = 0
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
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
            "rows": [r.to_json() for r in self.rows],
        }


class Bridge:
    """One bridge (one sheet tab → one pixel) with its edges injected: the Sheets client, the
    CAPI client (None when no token: dry runs still work), the ledger and the clock."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        sheets: SheetsClient,
        ledger: Ledger,
        capi: CapiClient | None,
        clock: Clock = utc_now,
        lock_wait: float = 5.0,
        before_write_back: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.sheets = sheets
        self.ledger = ledger
        self.capi = capi
        self.clock = clock
        self.lock_wait = lock_wait
        self._before_write_back = before_write_back  # a test seam: a crash after Meta answered

    @classmethod
    def from_config(
        cls,
        config: BridgeConfig,
        *,
        environ: Mapping[str, str] | None = None,
        user_token: str | None = None,
        **kw: Any,
    ) -> Bridge:
        env = environ if environ is not None else os.environ
        token = config.meta.access_token(env)
        base = Path(config.source).parent if config.source != "<memory>" else None
        return cls(
            config,
            sheets=SheetsClient(config.sheets, user_token=user_token, base_dir=base),
            ledger=Ledger(config.ledger_path(env)),
            capi=CapiClient.from_config(config.meta, token) if token else None,
            **kw,
        )

    @property
    def spreadsheet_id(self) -> str:
        return self.config.sheets.spreadsheet_id

    def record_edit(self, row: int, old: str | None, new: str, at: datetime) -> None:
        """Keep a status edit durably; the next pass (usually the one the edit starts) maps it
        to its lead as a transition, so 3 changes between passes become 3 events."""
        sheet = self.config.sheets
        self.ledger.add_edit(sheet.spreadsheet_id, sheet.tab, row, old, new, at, self.clock())

    def sync(
        self,
        *,
        dry_run: bool = False,
        keys: Collection[str] | None = None,
        rows: Collection[int] | None = None,
        trigger: str = "sync",
        progress: Progress | None = None,
    ) -> SyncResult:
        """One pass under the spreadsheet's lock (SyncBusy when another pass holds it)."""
        with self.ledger.lock(self.spreadsheet_id, wait=self.lock_wait):
            return self._pass(dry_run, keys, rows, trigger, progress or (lambda *a: None))

    def _pass(
        self,
        dry_run: bool,
        keys: Collection[str] | None,
        rows: Collection[int] | None,
        trigger: str,
        progress: Progress,
    ) -> SyncResult:
        started = time.monotonic()
        cfg, sid, ledger = self.config, self.spreadsheet_id, self.ledger
        now = self.clock()
        pass_id = ledger.start_pass(sid, cfg.sheets.tab, trigger, dry_run, now)
        try:
            progress("read", 0, 1)
            table, layout, leads = self.read()
            progress("read", 1, 1)
            if not dry_run:
                self._resolve_edits(leads, now)
            only = set(keys) if keys is not None else None
            if rows is not None:
                wanted = set(rows)
                only = (only or set()) | {r.key for r in leads if r.row_number in wanted}
            with gc_paused():
                the_plan = plan(leads, cfg, ledger.history(sid), now, only_keys=only)
            result, after = self._send_and_record(the_plan, table, dry_run, trigger, progress, now)
            del the_plan  # sent: free it before the write-back's buffers
            if not dry_run:
                self._write_back(table, layout, result, after, progress)
        except Exception as exc:
            ledger.finish_pass(pass_id, {}, self.clock(), error=type(exc).__name__)
            raise
        result.seconds = time.monotonic() - started
        ledger.finish_pass(pass_id, result.counts, self.clock())
        log.info("pass %s on %s: %s (%.2f s)", trigger, sid, result.counts, result.seconds)
        return result

    def read(self) -> tuple[SheetTable, ColumnLayout, list[LeadRow]]:
        """Read the tab (one API call) and type its rows."""
        try:
            with gc_paused():
                table = self.sheets.read_table()
            layout = column_layout(table, self.config)
        except (SheetsError, TableError) as exc:
            raise SyncError(str(exc)) from None
        with gc_paused():
            return table, layout, lead_rows(table, self.config, layout)

    def _resolve_edits(self, leads: list[LeadRow], now: datetime) -> None:
        edits = self.ledger.pending_edits(self.spreadsheet_id, self.config.sheets.tab)
        if not edits:
            return
        by_row = {r.row_number: r for r in leads}
        transitions = [
            (by_row[e.row_number].key, e.new_value, e.at, "edit")
            for e in edits
            if e.row_number in by_row and e.new_value.strip()
        ]
        self.ledger.resolve_edits(self.spreadsheet_id, [e.id for e in edits], transitions, now)

    def _send_and_record(
        self,
        the_plan: Plan,
        table: SheetTable,
        dry_run: bool,
        trigger: str,
        progress: Progress,
        now: datetime,
    ) -> tuple[SyncResult, dict[tuple[str, str], EventRecord]]:
        """Send what is due; the result, and the ledger record of every event this pass
        decided (sent, failed or expired), for the CAPI Log."""
        sid, ledger = self.spreadsheet_id, self.ledger
        events = the_plan.events
        after: dict[tuple[str, str], EventRecord] = {}
        meta_requests = 0
        if not dry_run:
            ledger.add_transitions(
                sid, [(o.lead_key, o.status, o.at, "scan") for o in the_plan.observations], now
            )
            ledger.record_expired(sid, the_plan.expired, now)
            for x in the_plan.expired:
                after[(x.lead_key, x.event_name)] = EventRecord(
                    x.event_name, x.event_id, "expired", x.event_time
                )
        for d in the_plan.decisions:
            if any(e.resend for e in d.events):
                d.warnings.append(
                    "an earlier sync was interrupted before Meta's answer was recorded; sent "
                    "again with the same event id, so Meta can deduplicate it"
                )
        notes = {
            d.lead_key: "; ".join(d.warnings) or None
            for d in the_plan.decisions
            if d.outcome != "duplicate"  # a later row with the same key must not erase them
        }
        tz = time_zone(table)
        # Built once per pass: config.stage_map builds a new StageMap on every access.
        order = {s.event: s.index for s in self.config.stage_map.stages}
        decisions = the_plan.decisions
        reports: list[RowReport | None] = [None] * len(decisions)
        if events and not dry_run:
            if self.capi is None:
                raise SyncError(
                    f"No Meta access token: set the environment variable "
                    f"{self.config.meta.access_token_env} (a CAPI token from Events Manager)"
                )
            strengths = {d.lead_key: d.match.strength for d in decisions if d.match is not None}
            ledger.mark_sending(sid, events, strengths, notes, now)
            # A lead's report is written as soon as its last event has Meta's answer, and its
            # planned events (payload parts, hashed identifiers) are let go: the plan shrinks
            # while the reports grow, instead of both being held whole at the end.
            waiting = {d.lead_key: [i, len(d.events)] for i, d in enumerate(decisions) if d.events}
            queue = deque(events)
            total = len(events)
            del events
            size = self.config.meta.batch_size
            before = self.capi.requests_made
            halted: SendOutcome | None = None
            while queue:
                chunk = [queue.popleft() for _ in range(min(size, len(queue)))]
                if halted is not None:
                    # DOMAIN.md §4: a rejected token (190) or a setup error stops the pass; the
                    # other batches would fail alike. They stay due for the next pass.
                    outcomes = [halted] * len(chunk)
                else:
                    outcomes = self.capi.send([e.payload for e in chunk])
                    halted = next((o for o in outcomes if o.state == "not_sent"), None)
                sent_at = self.clock()
                ledger.record_outcomes(sid, list(zip(chunk, outcomes, strict=True)), sent_at)
                with gc_paused():
                    for e, o in zip(chunk, outcomes, strict=True):
                        after[(e.lead_key, e.event_name)] = record_after(
                            e, o, sent_at, notes.get(e.lead_key)
                        )
                        wait = waiting[e.lead_key]
                        wait[1] -= 1
                        if wait[1] == 0:
                            d = decisions[wait[0]]
                            reports[wait[0]] = self._report(d, after, tz, dry_run, order)
                            d.events.clear()
                del chunk, outcomes
                progress("send", total - len(queue), total)
            meta_requests = self.capi.requests_made - before
        with gc_paused():
            done = [
                r if r is not None else self._report(d, after, tz, dry_run, order)
                for r, d in zip(reports, decisions, strict=True)
            ]
        del reports
        result = SyncResult(
            spreadsheet_id=sid,
            tab=self.config.sheets.tab,
            dry_run=dry_run,
            trigger=trigger,
            counts=summary_counts(done),
            rows=done,
            events_sent=sum(1 for r in after.values() if r.state == "sent"),
            meta_requests=meta_requests,
        )
        return result, after

    def _report(
        self,
        decision: RowDecision,
        after: Mapping[tuple[str, str], EventRecord],
        tz: Any,
        dry_run: bool,
        order: Mapping[str, int],
    ) -> RowReport:
        records = {r.event_name: r for r in decision.records}
        names = [e.event_name for e in decision.events] + [x.event_name for x in decision.expired]
        for name in names:
            if (decision.lead_key, name) in after:
                records[name] = after[(decision.lead_key, name)]
        ordered = sorted(records.values(), key=lambda r: order.get(r.event_name, 99))
        return render_row(decision, ordered, tz, dry_run=dry_run)

    def _write_back(
        self,
        table: SheetTable,
        layout: ColumnLayout,
        result: SyncResult,
        after: Mapping[tuple[str, str], EventRecord],
        progress: Progress,
    ) -> None:
        """One values.batchUpdate of the bridge cells that changed, one append to the log."""
        cells: list[tuple[int, int, object]] = [(1, col, name) for col, name in layout.new_headers]
        with gc_paused():
            for report in result.rows:
                i = report.row - table.first_row
                current = table.rows[i] if 0 <= i < len(table.rows) else []
                for name, value in zip(BRIDGE_COLUMNS, report.cells, strict=True):
                    col = layout.bridge[name]
                    old = current[col] if col < len(current) else ""
                    if str(old if old is not None else "") != value:
                        cells.append((report.row, col, value))
        if self._before_write_back is not None:
            self._before_write_back()
        progress("write", 0, 1)
        try:
            result.cells_written = self.sheets.write_cells(cells)
            del cells
            if after:
                stamp = format_sent_at(self.clock(), time_zone(table))
                self.sheets.append_log(_log_rows(result, after, stamp), LOG_HEADER)
        except SheetsError as exc:
            result.notices.append(
                f"Sent to Meta and recorded in the ledger, but the sheet could not be updated "
                f"({exc}); the next sync writes the rows again, nothing is sent twice"
            )
        progress("write", 1, 1)


def _log_rows(
    result: SyncResult, after: Mapping[tuple[str, str], EventRecord], stamp: str
) -> Iterator[list[object]]:
    """The CAPI Log rows of a pass: one per event it decided, row by row, funnel order."""
    for report in result.rows:
        for name, *_ in report.event_states:
            rec = after.get((report.lead_key, name))
            if rec is None:
                continue
            answer = rec.error or (f"ok · fbtrace_id {rec.fbtrace_id}" if rec.fbtrace_id else "ok")
            yield [
                stamp,
                report.row,
                report.lead_key,
                report.status,
                rec.event_name,
                rec.event_id,
                rec.state,
                answer,
            ]


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a pass builds or walks its big structures.

    A 100,000-lead pass holds millions of small objects (cells, records, reports); each full
    collection walks them all and finds nothing, as these phases make no reference cycles
    (measured: about half of a no-change pass went to the collector). Reference counting still
    frees everything at once. Sending to Meta stays outside any pause: the HTTP client leaves
    cycles behind that hold request bodies. Pauses from several threads nest; the collector
    resumes (if it was on) when the last one ends.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        _gc_pauses += 1
        if _gc_pauses == 1:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()
