"""An edit event from the add-on: an observation of rows, judged by the backend, settled, sent.

One `/api/edits` call carries one edit event (a typed cell, a paste, a fill-down, a sort): each
row's status as it is now, the row's CAPI Key when it has one, and the status it replaced when
Apps Script gives it (a one-cell edit's `e.oldValue`; a paste, fill-down or sort carries none).
The backend alone decides what the edit means (docs/edits.md):

- Each row is a lead: the CAPI Key the add-on read, when a row the backend reads now holds it
  (a key in no row read is refused: nothing is recorded for a key the sheet does not show);
  else the row as read now, if its status is still the one reported (else it is `moved`).
- A lead the ledger knows, whose status differs from the last one it recorded: a change at
  the edit's time. A lead the ledger never saw: a change only when the edit carries an old
  value that differs (a person typed it); otherwise it is `seen`, nothing is recorded, and the
  next pass dates it by the pass rules (baseline, Created At, Status Changed At).
- A change settles before it is sent: it is recorded at once (a transition at the edit's time)
  and queued, due `[sync] settle_seconds` later. A change back within that time withdraws it
  (its transitions go, nothing is sent: "New → Customer → New within 40 s", and the answer
  says what the row's Status Changed At held before the add-on stamped the change, to put
  back); a further change within it replaces it. A withdrawn edit's queue row stays, marked:
  a pass never takes a stamp of its times as a status's time (sync/plan.py rule 1a). Every
  pass holds a lead whose edit has not settled (sync/plan.py rule 4) and takes every edit
  that is due; `send_due` is the edit's own pass (the sweep's too).
- Recording needs no lock: an edit is answered without waiting for a pass, or for Meta.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sheet_bridge.config import StageMap, status_key
from sheet_bridge.sheets.table import SheetTable
from sheet_bridge.sync.ledger import EditChange, QueuedEdit
from sheet_bridge.sync.plan import LeadHistory, LeadRow
from sheet_bridge.sync.rows import ColumnLayout
from sheet_bridge.sync.run import Bridge, SyncResult

# The trigger an edit's pass (and the sweep's) is recorded with.
EDIT_TRIGGER = "edit"


@dataclass(frozen=True, slots=True)
class EditedRow:
    """One row of an edit event, as the add-on saw it when the event fired."""

    row: int
    status: str  # the status cell as it is now ("" when blank)
    key: str | None = None  # the row's CAPI Key cell, None when it was blank
    previous: str | None = None  # the status it replaced, when Apps Script said (one cell)
    # Its Status Changed At cell before the add-on stamps it ("" blank; None: not sent).
    stamp: str | None = None


@dataclass
class EditVerdict:
    """What an edit event's rows mean, row by row, and what to record."""

    changed: list[int] = field(default_factory=list)  # a change recorded: the add-on stamps it
    unchanged: list[int] = field(default_factory=list)
    moved: list[int] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)  # a lead never synced: the next pass dates it
    refused: list[int] = field(default_factory=list)  # its key is in no row read
    withdrawn: list[int] = field(default_factory=list)  # changed back before it settled
    # row → the withdrawn edit, when it knows the Status Changed At to put back
    restore: dict[int, QueuedEdit] = field(default_factory=dict)
    record: list[EditChange] = field(default_factory=list)
    pending: dict[int, QueuedEdit] = field(default_factory=dict)  # row → its lead's queued edit
    words: dict[int, str] = field(default_factory=dict)  # row → what became of it


def judge(
    edited: Sequence[EditedRow],
    at: datetime,
    now: datetime,
    current: Mapping[int, LeadRow],
    history: Mapping[str, LeadHistory],
    queued: Mapping[str, QueuedEdit],
    stages: StageMap,
    settle: timedelta,
) -> EditVerdict:
    """Sort an edit's rows (module docstring). `current` is each edited row as read now (a
    blank row is absent), `history` and `queued` the ledger's view of the leads involved.
    Pure: the caller records `record`."""
    verdict = EditVerdict()
    queue = dict(queued)  # this edit's own changes included (a key given twice)
    last: dict[str, str | None] = {}
    by_key = {r.key: r for r in current.values()}
    for e in edited:
        here = current.get(e.row)
        status = e.status.strip()
        if e.key is not None:
            lead_row = by_key.get(e.key)
            if lead_row is None:
                verdict.refused.append(e.row)
                verdict.words[e.row] = (
                    f"CAPI Key {e.key[:40]!r} is in none of the rows read: nothing recorded"
                )
                continue
        elif here is not None and status_key(here.status) == status_key(status):
            lead_row = here
        else:
            # No key, and the row shows another status now: whatever the edit was about has
            # moved away (or the row was cleared); the next pass's scan sees it.
            (verdict.unchanged if not status and here is None else verdict.moved).append(e.row)
            continue
        lead = lead_row.key
        if not status:  # a blank status is never a stage, so never a change
            verdict.unchanged.append(e.row)
            continue
        q = queue.get(lead)
        if q is not None and q.due_at > now:  # an edit of the lead still settling
            if status_key(status) == status_key(q.status):
                verdict.unchanged.append(e.row)
                verdict.pending[e.row] = q
            elif q.previous is not None and status_key(status) == status_key(q.previous):
                verdict.withdrawn.append(e.row)
                if q.stamp_before is not None:
                    verdict.restore[e.row] = q
                verdict.record.append(EditChange(lead, q.since, None))
                del queue[lead]
                last[lead] = status
                took = max(0, round((at - q.since).total_seconds()))
                verdict.words[e.row] = (
                    f"{q.previous} → {q.status} → {status} within {took} s: nothing sent"
                )
            else:
                # The same unsettled change, gone further: it keeps where it started (the
                # status before it, its first time, the stamp before it).
                change = QueuedEdit(
                    lead,
                    lead_row.row_number,
                    q.previous,
                    status,
                    q.since,
                    at,
                    at + settle,
                    q.stamp_before,
                )
                _changed(verdict, e.row, EditChange(lead, q.since, change), queue, last)
            continue
        before = last[lead] if lead in last else _last_known(lead, history, stages)
        if e.previous is not None and status_key(e.previous) == status_key(status):
            verdict.unchanged.append(e.row)  # retyped as it was
        elif before is not None:
            if _same(before, status, history.get(lead), stages):
                verdict.unchanged.append(e.row)
            else:
                change = QueuedEdit(
                    lead, lead_row.row_number, before, status, at, at, at + settle, e.stamp
                )
                _changed(verdict, e.row, EditChange(lead, None, change), queue, last)
        elif e.previous is not None and e.previous.strip():
            # A lead the ledger never saw, typed from one status to another by a person.
            prev = e.previous.strip()
            change = QueuedEdit(
                lead, lead_row.row_number, prev, status, at, at, at + settle, e.stamp
            )
            _changed(verdict, e.row, EditChange(lead, None, change), queue, last)
        else:
            verdict.seen.append(e.row)
            verdict.words[e.row] = (
                "a lead not synced yet, with no old value: seen, not a change; the next sync "
                "dates it from Status Changed At or Created At, or takes it as a baseline"
            )
    return verdict


def _changed(
    verdict: EditVerdict,
    row: int,
    change: EditChange,
    queue: dict[str, QueuedEdit],
    last: dict[str, str | None],
) -> None:
    assert change.queued is not None
    verdict.changed.append(row)
    verdict.record.append(change)
    verdict.pending[row] = change.queued
    queue[change.lead_key] = change.queued
    last[change.lead_key] = change.queued.status


def _same(before: str, status: str, past: LeadHistory | None, stages: StageMap) -> bool:
    """Whether `status` is what the ledger last knew: the same status, or for a lead known only
    by its events (adopted) a status of the same stage."""
    if status_key(before) == status_key(status):
        return True
    if past is None or past.transitions:
        return False
    a, b = stages.lookup(before), stages.lookup(status)
    return a is not None and b is not None and a.index == b.index


def _last_known(lead: str, history: Mapping[str, LeadHistory], stages: StageMap) -> str | None:
    """The last status the ledger knew of the lead: its latest transition's. A lead with events
    but no transitions (taken over by `sheet-bridge adopt`) is known at the deepest stage it
    has an event of; a lead with neither is not known (None)."""
    past = history.get(lead)
    if past is None:
        return None
    latest = max(past.transitions, key=lambda t: t.observed, default=None)
    if latest is not None:
        return latest.status
    reached = [s for s in stages.stages if s.send and s.event in past.events]
    return reached[-1].statuses[0] if reached else None


Read = tuple[SheetTable, ColumnLayout, list[LeadRow]]


@dataclass
class EditOutcome:
    verdict: EditVerdict
    settle: timedelta
    read: Read  # the header and the edited rows, as the edit read them


def apply_edit(bridge: Bridge, edited: Sequence[EditedRow], at: datetime) -> EditOutcome:
    """Read the edited rows (one call), judge them and record what they changed, without any
    lock and without sending: `send_due` sends what is due. Raises SyncError when the sheet
    cannot be read (nothing was recorded then)."""
    where, ledger = bridge.sheet_tab, bridge.ledger
    read = bridge.read_rows(e.row for e in edited)
    leads = read[2]
    current = {r.row_number: r for r in leads}
    involved = {r.key for r in leads}
    history = ledger.history(where, involved)
    queued = {q.lead_key: q for q in ledger.queued_edits(where, involved)}
    settle = timedelta(seconds=bridge.config.sync.settle_seconds)
    now = bridge.clock()
    verdict = judge(edited, at, now, current, history, queued, bridge.config.stage_map, settle)
    ledger.record_edits(where, verdict.record, now)
    return EditOutcome(verdict, settle, read)


def due_edits(bridge: Bridge) -> list[QueuedEdit]:
    """The tab's queued edits that have settled, as of the bridge's clock."""
    now = bridge.clock()
    return [q for q in bridge.ledger.queued_edits(bridge.sheet_tab) if q.due_at <= now]


def send_due(
    bridge: Bridge, *, lock_wait: float = 0.0, read_just_now: Read | None = None
) -> SyncResult | None:
    """Send the tab's edits that are due, in a pass that reads their rows only (the whole tab
    when one of those leads moved since). None when nothing is due; SyncBusy when another
    pass holds the tab after `lock_wait` seconds (it, or the next sweep, takes them).
    `read_just_now`: the rows an edit read a moment ago, used when they hold every due lead
    (an edit sent at once costs one read)."""
    due = due_edits(bridge)
    if not due:
        return None
    keys = {q.lead_key for q in due}
    whole: list[set[str]] = []  # the keys the whole tab holds, when it had to be read

    def read() -> Read:
        if read_just_now is not None and keys <= {r.key for r in read_just_now[2]}:
            table, layout, leads = read_just_now
            return table, layout, [r for r in leads if r.key in keys]
        table, layout, leads = bridge.read_rows(q.row_number for q in due)
        if keys <= {r.key for r in leads}:
            return table, layout, [r for r in leads if r.key in keys]
        table, layout, leads = bridge.read()  # sorted or moved since: find them wherever
        whole.append({r.key for r in leads})
        return table, layout, [r for r in leads if r.key in keys]

    result = bridge.sync(trigger=EDIT_TRIGGER, read=read, keys=keys, lock_wait=lock_wait)
    if whole:  # a lead no longer in the sheet: nothing to send, ever
        bridge.ledger.dequeue_edits(bridge.sheet_tab, keys - whole[0], bridge.clock())
    return result
