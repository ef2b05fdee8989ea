"""An edit event from the add-on: which rows really changed, recorded by lead, sent at once.

One `/api/edits` call carries one edit event (a typed cell, a paste, a fill-down, a sort): each
row's status as it is now and the row's CAPI Key when it has one. Apps Script gives no old
values for a multi-cell edit, so the add-on cannot tell which rows changed; the backend can:

- Each row is a lead: the CAPI Key the add-on read (the lead keeps it through sorts), else the
  row as read now, but only when its status is still the one reported (else the row holds
  something else since: it is `moved`, nothing is recorded, the next pass's scan sees it).
- A row whose key no longer sits at that row number (sorted since) is recorded for its key,
  never for the lead that sits there now, and reported `moved` (sent by the next pass, which
  finds the lead wherever it is).
- The reported status is compared with the last one the ledger knows for that lead (its latest
  transition). Only a different status is a change: a transition at the edit's time, source
  "edit" (the most trusted time, sync/plan.py rule 1b). A blank status is never a stage, so
  never a change.
- The changed leads still where the add-on saw them are sent at once by a pass that reads the
  header and the edited rows only (one values.batchGet), plans them against their own history
  and writes their cells: an edit costs what it changes, not the sheet.
- While another pass holds the tab, the changes are recorded all the same and answered
  `queued`: that pass or the next one sends them. An edit is never lost to a busy tab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sheet_bridge.config import StageMap, status_key
from sheet_bridge.sheets.table import SheetTable
from sheet_bridge.sync.ledger import SyncBusy
from sheet_bridge.sync.plan import LeadHistory, LeadRow
from sheet_bridge.sync.rows import ColumnLayout
from sheet_bridge.sync.run import Bridge, LedgerBehindSheet, SyncError, SyncResult

# The trigger an edit's pass is recorded with; a pass of another trigger running on the tab
# (a sync of every lead, minutes long) is not waited for.
EDIT_TRIGGER = "edit"


@dataclass(frozen=True, slots=True)
class EditedRow:
    """One row of an edit event, as the add-on saw it when the event fired."""

    row: int
    status: str  # the status cell as it is now ("" when blank)
    key: str | None = None  # the row's CAPI Key cell, None when it was blank
    previous: str | None = None  # the old single-cell form's old value, when it sent one


NewTransition = tuple[str, str, datetime, str]  # (lead key, status, at, source) to record


@dataclass
class EditVerdict:
    """Which rows changed, and what that means for the ledger and for this pass."""

    changed: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    moved: list[int] = field(default_factory=list)
    record: list[NewTransition] = field(default_factory=list)
    send: list[LeadRow] = field(default_factory=list)  # changed leads still at their rows


def judge(
    edited: Sequence[EditedRow],
    at: datetime,
    current: Mapping[int, LeadRow],
    history: Mapping[str, LeadHistory],
    stages: StageMap,
) -> EditVerdict:
    """Sort an edit's rows into changed, unchanged and moved (module docstring).

    `current` is each edited row as read now (a blank row is absent), `history` the ledger's
    view of every lead involved. Pure: the caller records `record` and sends `send`.
    """
    verdict = EditVerdict()
    known: dict[str, str] = {}  # statuses this edit already recorded (a key given twice)
    for e in edited:
        here = current.get(e.row)
        status = e.status.strip()
        if e.key is not None:
            lead = e.key
            in_place = here is not None and here.key == e.key
        elif here is not None and status_key(here.status) == status_key(status):
            lead, in_place = here.key, True
        else:
            # No key, and the row shows another status now: whatever the edit was about has
            # moved away (or the row was cleared); the next pass's scan sees it.
            (verdict.unchanged if not status and here is None else verdict.moved).append(e.row)
            continue
        changed = (
            bool(status)
            and (e.previous is None or status_key(e.previous) != status_key(status))
            and not _known_as(lead, status, known, history, stages)
        )
        if changed:
            verdict.record.append((lead, status, at, "edit"))
            known[lead] = status
        if not in_place:
            verdict.moved.append(e.row)
        elif changed:
            verdict.changed.append(e.row)
            assert here is not None
            verdict.send.append(here)
        else:
            verdict.unchanged.append(e.row)
    return verdict


def _known_as(
    lead: str,
    status: str,
    known: Mapping[str, str],
    history: Mapping[str, LeadHistory],
    stages: StageMap,
) -> bool:
    """Whether `status` is what the ledger last knew of the lead: its latest transition's
    status. A lead with events but no transitions (taken over by `sheet-bridge adopt`) is known
    at the deepest stage it has an event of; a lead with neither is new: any status is news."""
    if lead in known:
        return status_key(known[lead]) == status_key(status)
    past = history.get(lead)
    if past is None:
        return False
    latest = max(past.transitions, key=lambda t: t.observed, default=None)
    if latest is not None:
        return status_key(latest.status) == status_key(status)
    reached = [s for s in stages.stages if s.send and s.event in past.events]
    stage = stages.lookup(status)
    return bool(reached) and stage is not None and stage.index == reached[-1].index


@dataclass
class EditOutcome:
    verdict: EditVerdict
    queued: bool  # another pass held the tab: recorded, sent by that pass or the next
    result: SyncResult | None = None  # the edit's own pass, when it ran
    notice: str | None = None  # recorded, but why nothing could be sent now


class _Edit:
    """One edit event's read: the header and its rows, judged and recorded under whatever
    lock the caller holds (the pass's, or none while another pass holds the tab)."""

    def __init__(self, bridge: Bridge, edited: Sequence[EditedRow], at: datetime) -> None:
        self.bridge = bridge
        self.edited = edited
        self.at = at
        self.verdict: EditVerdict | None = None

    def read(self) -> tuple[SheetTable, ColumnLayout, list[LeadRow]]:
        """A pass's Reader: read, judge, record the changes; give the leads to send now."""
        bridge = self.bridge
        table, layout, leads = bridge.read_rows(e.row for e in self.edited)
        current = {r.row_number: r for r in leads}
        involved = {e.key for e in self.edited if e.key} | {r.key for r in leads}
        history = bridge.ledger.history(bridge.sheet_tab, involved)
        verdict = judge(self.edited, self.at, current, history, bridge.config.stage_map)
        bridge.ledger.add_transitions(bridge.sheet_tab, verdict.record, bridge.clock())
        self.verdict = verdict
        return table, layout, verdict.send


def apply_edit(bridge: Bridge, edited: Sequence[EditedRow], at: datetime) -> EditOutcome:
    """Record what an edit event really changed, and send it now unless the tab is busy.

    Raises SyncError when the sheet cannot be read (nothing was recorded then)."""
    edit = _Edit(bridge, edited, at)
    running = bridge.ledger.running_pass(bridge.sheet_tab, bridge.clock())
    if running is None or running.trigger == EDIT_TRIGGER:
        # Another edit's pass is short: wait for it (the bridge's lock wait), then send.
        try:
            result = bridge.sync(trigger=EDIT_TRIGGER, read=edit.read)
        except SyncBusy:
            pass
        except SyncError as exc:
            if edit.verdict is None:
                raise  # the sheet could not be read: nothing was recorded
            words = str(exc)
            if isinstance(exc, LedgerBehindSheet):
                words = f"nothing was sent: {words}"
            return EditOutcome(edit.verdict, queued=False, notice=words)
        else:
            assert edit.verdict is not None
            return EditOutcome(edit.verdict, queued=False, result=result)
    # A pass holds the tab (it may run for minutes): record now, without its lock. It, or
    # the next pass, plans these leads against the transitions recorded here.
    edit.read()
    assert edit.verdict is not None
    return EditOutcome(edit.verdict, queued=True)
