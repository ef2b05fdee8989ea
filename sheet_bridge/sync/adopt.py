"""sheet-bridge adopt: rebuild a tab's ledger from what the sheet itself says Meta has.

A ledger that is lost, emptied or older than the sheet would make the next pass send every lead
again; the pass refuses instead (run.LedgerBehindSheet). This takes over, for each row whose CAPI
columns say an event was sent, the events its CAPI Status names and the CAPI Log lines of its
CAPI Key (event ids, results, times), so the next pass sends only what the sheet does not show.

Baselines too (stages reached before sheet-bridge saw when: CAPI Log lines with result
`baseline`, the "Baseline:" part of CAPI Status), on every row that shows one: they are recorded
as baselines, never sent. Without them a later change would date those stages at its own time
(docs/event-times.md, rule 3: only a stage the ledger knows was reached earlier stays a
baseline). And the statuses the CAPI Log saw each lead at (its "Lead Status" and "Time"), as
the transitions a pass would have recorded: they tell a stale Status Changed At from a fresh
one and bound a scan's estimate (sync/plan.py, rules 1a and 1d), as they did before the ledger
was lost. Nothing is sent and the sheet is not written; what the ledger already knows is never
changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sheet_bridge.config import BRIDGE_COLUMNS, LOG_TAB
from sheet_bridge.meta.identity import match_keys
from sheet_bridge.sheets.client import SheetsClient, SheetsError, SheetsTabNotFound
from sheet_bridge.sheets.table import SheetTable
from sheet_bridge.sync.ledger import AdoptedEvent
from sheet_bridge.sync.outcomes import said_events
from sheet_bridge.sync.plan import (
    BASELINE_REASON,
    BaselineEvent,
    ExpiredEvent,
    LeadRow,
    PlannedEvent,
    event_id_for,
    plan,
    row_identity,
)
from sheet_bridge.sync.rows import bridge_cells
from sheet_bridge.sync.run import (
    Bridge,
    SyncError,
    bridge_cells_of,
    log_cell,
    log_columns,
    rows_ahead_of,
)

_SENT_AT_FORMAT = "%Y-%m-%d %H:%M:%S %z"  # report.format_sent_at
_EVENT_ID = BRIDGE_COLUMNS.index("CAPI Event ID")
_STATUS = BRIDGE_COLUMNS.index("CAPI Status")
_SENT_AT = BRIDGE_COLUMNS.index("CAPI Sent At")
_RESPONSE = BRIDGE_COLUMNS.index("CAPI Response")
_TRACE = "fbtrace_id "  # report.answer_words: "ok · fbtrace_id …"
# The note an event adopted from a row's cells alone carries (shown in its CAPI Status).
NO_LOG_LINE = "adopted from this row's CAPI cells; no CAPI Log line names it (typed by hand?)"


@dataclass(frozen=True)
class LogLine:
    """One CAPI Log line about one event of one lead."""

    event_id: str
    result: str  # sent / failed / expired / baseline / sending
    at: datetime | None
    answer: str = ""


@dataclass
class LeadLog:
    """What the CAPI Log says of one lead: its last line per event, and each (status, time) a
    pass saw it at."""

    lines: dict[str, LogLine] = field(default_factory=dict)
    seen: set[tuple[str, datetime]] = field(default_factory=set)


@dataclass
class AdoptReport:
    """What adopt took into the ledger, and what it could not, row by row."""

    spreadsheet_id: str
    tab: str
    sent: int = 0  # sent events newly in the ledger
    expired: int = 0  # expired events newly in the ledger
    baseline: int = 0  # baselines newly in the ledger (reached at an unknown time, never sent)
    transitions: int = 0  # statuses the CAPI Log saw leads at, newly in the ledger
    already_known: int = 0  # events the ledger already had (left as they were)
    rows: int = 0  # rows with at least one event adopted or known
    ids_from_log: int = 0
    ids_from_cell: int = 0
    ids_recomputed: int = 0
    log_lines: int = 0  # CAPI Log lines of this tab that were read
    log_missing: bool = False
    not_adopted: list[str] = field(default_factory=list)
    # "row N: Event" for each event adopted from the row's cells alone (no CAPI Log line names
    # it: typed by hand, or its line deleted); the row's CAPI Status then says so.
    without_log_line: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "spreadsheet_id": self.spreadsheet_id,
            "tab": self.tab,
            "sent": self.sent,
            "expired": self.expired,
            "baseline": self.baseline,
            "transitions": self.transitions,
            "already_known": self.already_known,
            "rows": self.rows,
            "event_ids": {
                "from_log": self.ids_from_log,
                "from_cell": self.ids_from_cell,
                "recomputed": self.ids_recomputed,
            },
            "log_lines": self.log_lines,
            "log_missing": self.log_missing,
            "not_adopted": self.not_adopted,
            "without_log_line": self.without_log_line,
        }

    def text(self) -> str:
        lines = [
            f"Adopted from tab {self.tab!r} of spreadsheet {self.spreadsheet_id}: "
            f"{self.sent} sent, {self.expired} expired and {self.baseline} baseline event(s) "
            f"on {self.rows} row(s); {self.already_known} were already in the ledger (left as "
            "they were).",
            f"  Event ids: {self.ids_from_log} from the CAPI Log, {self.ids_from_cell} from "
            f"the CAPI Event ID cell, {self.ids_recomputed} recomputed (no line for them).",
        ]
        if self.baseline:
            lines.append(
                f"  Baselines ({self.baseline}): stages reached before sheet-bridge saw when; "
                "recorded as baselines, never sent (fill Status Changed At with when a row "
                "really changed to have it sent)."
            )
        if self.transitions:
            lines.append(
                f"  {self.transitions} status(es) the CAPI Log saw leads at, kept so a later "
                "change is dated as before."
            )
        if self.log_missing:
            lines.append(
                f"  The spreadsheet has no {LOG_TAB!r} tab: only the rows' CAPI cells were used."
            )
        if self.without_log_line:
            lines.append(
                f"Adopted from the row's cells without a CAPI Log line "
                f"({len(self.without_log_line)}; their rows' CAPI Status says so from the next "
                "sync — check them, the cells may have been typed by hand):"
            )
            lines += [f"  {w}" for w in self.without_log_line[:50]]
            if len(self.without_log_line) > 50:
                lines.append(f"  … and {len(self.without_log_line) - 50} more")
        if self.not_adopted:
            lines.append(f"Not adopted ({len(self.not_adopted)}):")
            lines += [f"  {w}" for w in self.not_adopted[:50]]
            if len(self.not_adopted) > 50:
                lines.append(f"  … and {len(self.not_adopted) - 50} more")
        lines.append(
            "Nothing was sent and the sheet was not changed. The next sync sends only what the "
            "sheet does not show as sent."
        )
        return "\n".join(lines)


def adopt_sheet(bridge: Bridge) -> AdoptReport:
    """Take into the ledger every event the bridge's tab shows as sent or expired (under the
    tab's lock, so no pass runs meanwhile). SyncError when the sheet cannot be read."""
    where = bridge.sheet_tab
    report = AdoptReport(where.spreadsheet_id, where.tab)
    with bridge.ledger.lock(where, wait=bridge.lock_wait):
        table, layout, leads = bridge.read()
        written = bridge_cells(table, layout)
        first_row = table.first_row
        del table
        ahead = {r.key for r in rows_ahead_of({}, written, first_row, layout, leads)}
        log_of, log_end = _log_lines(bridge, report, {r.key for r in leads})
        # A row whose CAPI cells were cleared still has its CAPI Log lines: they say it too.
        ahead |= {
            key
            for key, lead_log in log_of.items()
            if any(line.result in ("sent", "expired") for line in lead_log.lines.values())
        }
        # The rows that show an event sent or expired, and those that show only a baseline.
        claimed = {
            r.key: (r, cells)
            for r, cells in bridge_cells_of(written, first_row, layout, leads)
            if r.key in ahead or _shows_baseline(cells, log_of.get(r.key))
        }
        del written
        now = bridge.clock()
        # What a pass would plan for these rows with no history: event ids, times, hashed
        # identifiers and values, as the pass that sent them computed them.
        the_plan = plan([r for r, _ in claimed.values()], bridge.config, {}, now)
        planned: dict[tuple[str, str], PlannedEvent | ExpiredEvent | BaselineEvent] = {}
        for d in the_plan.decisions:
            planned.update({(e.lead_key, e.event_name): e for e in d.events})
            planned.update({(x.lead_key, x.event_name): x for x in d.expired})
            planned.update({(b.lead_key, b.event_name): b for b in d.baseline})
        known = bridge.ledger.history(where)
        adopted: list[AdoptedEvent] = []
        seen: list[tuple[str, str, datetime]] = []
        for key, (row, cells) in claimed.items():
            log = log_of.get(key, LeadLog())
            found = _adopt_row(bridge, row, cells, log.lines, planned, report, key in ahead)
            had = known.get(key)
            fresh = [a for a in found if had is None or a.event_name not in had.events]
            if found and (had is None or not had.transitions):
                seen += [(key, status, at) for status, at in sorted(log.seen)]
            report.without_log_line += [
                f"row {row.row_number}: {a.event_name}" for a in fresh if a.notes == NO_LOG_LINE
            ]
            report.already_known += len(found) - len(fresh)
            report.rows += bool(found)
            adopted += fresh
        bridge.ledger.adopt(where, adopted, now)
        # A transition is recorded when the ledger learned of it: by the pass that logged it.
        for at in sorted({at for _, _, at in seen}):
            bridge.ledger.add_transitions(
                where, [(k, s, t, "seen") for k, s, t in seen if t == at], at
            )
        if log_end is not None:  # every line of the Log is accounted for now (run._log_behind)
            bridge.ledger.set_log_lines(where, log_end, now)
        report.transitions = len(seen)
        report.sent = sum(1 for a in adopted if a.state == "sent")
        report.expired = sum(1 for a in adopted if a.state == "expired")
        report.baseline = sum(1 for a in adopted if a.state == "baseline")
    return report


def _shows_baseline(cells: Sequence[object], log: LeadLog | None) -> bool:
    """Whether a row's CAPI Status or its CAPI Log lines name a baseline."""
    if log is not None and any(line.result == "baseline" for line in log.lines.values()):
        return True
    return bool(said_events(str(cells[_STATUS] or ""))["baseline"])


def _adopt_row(
    bridge: Bridge,
    row: LeadRow,
    cells: Sequence[object],
    log: Mapping[str, LogLine],
    planned: Mapping[tuple[str, str], PlannedEvent | ExpiredEvent | BaselineEvent],
    report: AdoptReport,
    shows_sent: bool = True,
) -> list[AdoptedEvent]:
    """The events one row shows as sent, expired or baseline, funnel order. `shows_sent`: its
    CAPI columns say an event was sent or expired (else it shows only baselines)."""
    stages = bridge.config.stage_map.stages
    order = {s.event: s.index for s in stages}
    said = said_events(str(cells[_STATUS] or ""))
    sent = set(said["sent"]) | {n for n, line in log.items() if line.result == "sent"}
    expired = (set(said["expired"]) | {n for n, x in log.items() if x.result == "expired"}) - sent
    baseline = (set(said["baseline"]) | {n for n, x in log.items() if x.result == "baseline"}) - (
        sent | expired
    )
    unknown = sorted(n for n in sent | expired | baseline if n not in order)
    if unknown:
        report.not_adopted.append(
            f"row {row.row_number}: {', '.join(unknown)} is not an event of this config's "
            "stages; left out"
        )
    sent -= set(unknown)
    expired -= set(unknown)
    baseline -= set(unknown)
    for name in said["failed"]:
        if name not in sent:
            report.not_adopted.append(
                f"row {row.row_number}: {name} failed or got no answer; the next sync sends it "
                "(with the same event id when the CAPI Log has it)"
                if name in log
                else f"row {row.row_number}: {name} failed or got no answer; the next sync sends it"
            )
    if not sent and not expired and shows_sent:
        report.not_adopted.append(
            f"row {row.row_number}: its CAPI columns say sent, but neither CAPI Status nor the "
            "CAPI Log names the event; check the row, then clear its CAPI cells to send it "
            "again or leave the refusal in place"
        )
        return []
    cell_id = str(cells[_EVENT_ID] or "").strip()
    cell_sent_at = _sent_at(cells[_SENT_AT])
    cell_trace = _trace(str(cells[_RESPONSE] or ""))
    notes = "; ".join(said["warning"]) or None
    deepest = max(sent, key=lambda n: order[n]) if sent else None
    out = []
    for name in sorted(sent | expired | baseline, key=lambda n: order[n]):
        line = log.get(name)
        plan_of = planned.get((row.key, name))
        if name in baseline:
            out.append(_baseline(bridge, row, name, line, plan_of, order[name], report))
            continue
        if isinstance(plan_of, BaselineEvent):
            plan_of = None  # the sheet says what became of it: its own time is not known
        if line is not None and line.event_id:
            event_id = line.event_id
            report.ids_from_log += 1
        elif name == deepest and cell_id:
            event_id = cell_id  # the cell shows the latest event sent: the deepest stage
            report.ids_from_cell += 1
        else:
            event_id = plan_of.event_id if plan_of is not None else _recompute(bridge, row, name)
            report.ids_recomputed += 1
        # The row's CAPI Sent At is when its latest event was sent; the log's Time is when the
        # pass wrote its lines, a little later: the cell for the latest pass's events, so the
        # row reads the same, and the log's earlier Time for an event an earlier pass sent (so
        # the latest event stays the one the CAPI Event ID cell shows).
        logged_at = line.at if line is not None else None
        sent_at = min((t for t in (cell_sent_at, logged_at) if t is not None), default=None)
        trace = _trace(line.answer) if line is not None else None
        event_time = (
            plan_of.event_time
            if plan_of is not None
            else int((sent_at or bridge.clock()).timestamp())
        )
        if sent_at is not None:
            event_time = min(event_time, int(sent_at.timestamp()))  # never after it was sent
        user_data = plan_of.user_data if isinstance(plan_of, PlannedEvent) else None
        out.append(
            AdoptedEvent(
                lead_key=row.key,
                event_name=name,
                event_id=event_id,
                state="sent" if name in sent else "expired",
                event_time=event_time,
                row_number=row.row_number,
                lead_status=row.status.strip(),
                stage_index=order[name],
                sent_at=sent_at if name in sent else None,
                value=plan_of.value if isinstance(plan_of, PlannedEvent) else None,
                currency=plan_of.currency if isinstance(plan_of, PlannedEvent) else None,
                match_strength=match_keys(user_data).strength if user_data else None,
                user_data=user_data,
                error=None if name in sent else "expired (adopted from the sheet)",
                fbtrace_id=trace or (cell_trace if name == deepest else None),
                notes=notes if line is not None or report.log_missing else NO_LOG_LINE,
            )
        )
    return out


def _baseline(
    bridge: Bridge,
    row: LeadRow,
    name: str,
    line: LogLine | None,
    plan_of: PlannedEvent | ExpiredEvent | BaselineEvent | None,
    stage_index: int,
    report: AdoptReport,
) -> AdoptedEvent:
    """A stage the row shows as a baseline, as record_baseline keeps it: never sent, its time
    when it was seen (the CAPI Log line's, else now: adopt sees it now)."""
    if line is not None and line.event_id:
        event_id = line.event_id
        report.ids_from_log += 1
    else:
        event_id = plan_of.event_id if plan_of is not None else _recompute(bridge, row, name)
        report.ids_recomputed += 1
    seen = line.at if line is not None and line.at is not None else bridge.clock()
    return AdoptedEvent(
        lead_key=row.key,
        event_name=name,
        event_id=event_id,
        state="baseline",
        event_time=int(seen.timestamp()),
        row_number=row.row_number,
        lead_status=row.status.strip(),
        stage_index=stage_index,
        sent_at=None,
        error=BASELINE_REASON,
    )


def _recompute(bridge: Bridge, row: LeadRow, name: str) -> str:
    return event_id_for(bridge.config.meta.pixel_id, row_identity(row), name)


def _log_lines(
    bridge: Bridge, report: AdoptReport, keys: set[str]
) -> tuple[dict[str, LeadLog], int | None]:
    """The CAPI Log's last line per (lead key, event) of this tab's leads, and the Log's last
    row (None: no Log). A line names its tab (the "Tab" column); older lines without one
    count when their CAPI Key is this tab's."""
    sheets = bridge.sheets
    log_sheet = SheetsClient(
        bridge.config.sheets.model_copy(update={"tab": LOG_TAB}),
        sheets.service,
        sleep=sheets.sleep,
        max_attempts=sheets.max_attempts,
    )
    try:
        table = log_sheet.read_table()
    except SheetsTabNotFound:
        report.log_missing = True
        return {}, None
    except SheetsError as exc:
        raise SyncError(f"could not read the {LOG_TAB} tab: {exc}") from None
    end = table.first_row + len(table.rows) - 1
    return _lines_of(table, bridge.config.sheets.tab, keys, report), end


def _lines_of(
    table: SheetTable, tab: str, keys: set[str], report: AdoptReport
) -> dict[str, LeadLog]:
    col = log_columns(table.header)
    out: dict[str, LeadLog] = {}
    for line in table.rows:

        def cell(name: str, line: list[object] = line) -> str:
            return log_cell(line, col, name)

        key, line_tab = cell("CAPI Key"), cell("Tab")
        if key not in keys or (line_tab and line_tab != tab):
            continue
        report.log_lines += 1
        event, at = cell("Event"), _sent_at(cell("Time"))
        lead = out.setdefault(key, LeadLog())
        status = cell("Lead Status")
        if status and at is not None:
            lead.seen.add((status, at))  # the pass that wrote the line saw the lead so
        known = lead.lines.get(event)
        if known is not None and known.result == "sent":
            continue  # a sent event is never decided again; a later line cannot undo it
        lead.lines[event] = LogLine(cell("Event ID"), cell("Result"), at, cell("Answer"))
    return out


def _trace(answer: str) -> str | None:
    """Meta's fbtrace_id in an "ok · fbtrace_id …" answer (CAPI Log or CAPI Response)."""
    if not answer.startswith("ok") or _TRACE not in answer:
        return None
    return answer.split(_TRACE, 1)[1].strip() or None


def _sent_at(cell: object) -> datetime | None:
    try:
        return datetime.strptime(str(cell).strip(), _SENT_AT_FORMAT)
    except ValueError:
        return None
