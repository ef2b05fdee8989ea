"""What a row says after a pass: its outcome in plain words and its bridge-owned cells."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sync.plan import EventRecord, PlannedEvent, RowDecision

RowOutcome = Literal[
    "sent", "failed", "expired", "invalid", "skipped", "already_sent", "due", "baseline", "pending"
]
SUMMARY_KEYS: tuple[str, ...] = (
    "sent",
    "skipped",
    "expired",
    "baseline",
    "invalid",
    "failed",
    "already_sent",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The words of a CAPI Status cell that `said_events` reads back (sheet-bridge adopt).
_SENT, _FAILED, _EXPIRED, _WARNING = "Sent: ", "Failed: ", "Expired: ", "Warning: "
_BASELINE = "Baseline: "
_PARTS = " · "
# The CLI table's words for one pass (pass_words): sent by it, and at Meta from earlier passes.
_SENT_NOW, _BEFORE = "Sent now: ", "At Meta before: "
_SENT_AT_TEXT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\Z")  # format_sent_at
_OUTCOME_OF_DECISION: dict[str, RowOutcome] = {
    "skipped": "skipped",
    "duplicate": "skipped",
    "invalid": "invalid",
    "expired": "expired",
    "already_sent": "already_sent",
    "moved_back": "already_sent",
    "baseline": "baseline",
    "settling": "pending",
}


@dataclass(slots=True)
class RowReport:
    """One row's result, for the sheet, the API and the CLI table."""

    row: int
    lead_key: str
    status: str
    outcome: RowOutcome
    message: str
    # The lead's events as (name, event id, state, event_time), funnel order. Tuples of shared
    # strings: a 100,000-lead pass keeps ~190,000 of them (as dicts they took ~70 MB).
    event_states: tuple[tuple[str, str, str, int], ...] = ()
    strength: str | None = None
    # The row's bridge cells, in BRIDGE_COLUMNS order (a tuple, not a dict: one per row).
    cells: tuple[str, ...] = ()
    # The events this pass decided for the row (name, event id, state, answer): the CAPI Log.
    logged: tuple[tuple[str, str, str, str], ...] = ()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [
            {"event_name": name, "event_id": event_id, "state": state, "event_time": at}
            for name, event_id, state, at in self.event_states
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "lead_key": self.lead_key,
            "status": self.status,
            "outcome": self.outcome,
            "message": self.message,
            "events": self.events,
            "strength": self.strength,
        }


def record_after(
    event: PlannedEvent, outcome: SendOutcome, now: datetime, notes: str | None
) -> EventRecord:
    """The ledger record an outcome leaves (same fields the ledger stores)."""
    state = {"sent": "sent", "expired": "expired"}.get(outcome.state, "failed")
    return EventRecord(
        event.event_name,
        event.event_id,
        state,  # type: ignore[arg-type]
        event.event_time,
        retry=outcome.state == "not_sent" or outcome.transient,
        fingerprint=event.fingerprint,
        sent_at=now if state == "sent" else None,
        fbtrace_id=outcome.fbtrace_id,
        error=None if state == "sent" else outcome.summary,
        notes=notes,
    )


def answer_words(record: EventRecord) -> str:
    """Meta's answer to an event, as the CAPI Log shows it."""
    if record.error:
        return record.error
    return _accepted_words(record.fbtrace_id)


@functools.lru_cache(maxsize=1024)
def _accepted_words(fbtrace_id: str | None) -> str:
    """Meta accepted the event: one text per request (its events share its fbtrace_id), not
    one per event and row (a 100,000-lead first pass holds ~290,000 of them until written)."""
    return f"ok · fbtrace_id {fbtrace_id}" if fbtrace_id else "ok"


@functools.lru_cache(maxsize=4096)
def _shared(text: str) -> str:
    """One string for the rows whose CAPI Status reads the same ("Sent: Lead, QualifiedLead"),
    not one each: a big pass holds every row's until the write-back."""
    return text


@functools.lru_cache(maxsize=1024)
def format_sent_at(at: datetime, tz: tzinfo) -> str:
    # Cached: the events of one Meta batch share one sent-at time (100,000 rows, ~400 times).
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %z")


def render_row(
    decision: RowDecision,
    records: Sequence[EventRecord],
    tz: tzinfo,
    *,
    dry_run: bool = False,
) -> RowReport:
    """Build the row's report from its decision and the ledger records after the pass.

    The text depends only on the records, so a pass that changes nothing writes nothing.
    """
    sent = [r for r in records if r.state == "sent"]
    failed = [r for r in records if r.state in ("failed", "sending")]
    expired = [r for r in records if r.state == "expired"]
    baseline = [r for r in records if r.state == "baseline"]
    outcome: RowOutcome
    if decision.outcome == "due":
        if dry_run:
            outcome = "due"
        elif failed:
            outcome = "failed"
        else:
            outcome = "sent"
    else:
        outcome = _OUTCOME_OF_DECISION[decision.outcome]

    parts: list[str] = []
    if dry_run and decision.outcome == "due":
        parts.append("Would send: " + ", ".join(e.event_name for e in decision.events))
        if decision.expired:
            parts.append(_expired_words_planned(decision))
        if decision.baseline:
            parts.append(_baseline_words([b.event_name for b in decision.baseline]))
    elif decision.outcome == "baseline" and not sent and not expired:
        parts.append(f"Baseline: {decision.message}")
    elif decision.outcome in ("due", "already_sent", "expired", "baseline"):
        if sent:
            parts.append(_SENT + ", ".join(r.event_name for r in sent))
        for r in failed:
            again = "will retry next sync" if r.retry else "fix the row to retry"
            parts.append(f"{_FAILED}{r.event_name} ({r.error or 'no answer'}; {again})")
        if expired:
            parts.append(_expired_words(expired, tz))
        if baseline:
            parts.append(_baseline_words([r.event_name for r in baseline]))
        if not parts:
            parts.append(decision.message)
    elif decision.outcome == "settling":
        if sent:  # what Meta already has stays on the row
            parts.append(_SENT + ", ".join(r.event_name for r in sent))
        parts.append(f"Pending: {decision.message}")
    else:
        label = {
            "skipped": "Skipped",
            "duplicate": "Skipped",
            "invalid": "Invalid",
            "moved_back": "No change",
        }[decision.outcome]
        parts.append(f"{label}: {decision.message}")
    notes = decision.warnings if decision.warnings else _notes_of(sent)
    if notes:
        parts.append(_WARNING + "; ".join(notes))
    text = _shared(_PARTS.join(parts))

    # Records come in funnel order and sorted() is stable: among events sent together, the
    # last is the deepest stage.
    by_time = sorted(sent, key=lambda r: (r.sent_at or _EPOCH, r.event_time))
    latest_sent = by_time[-1] if by_time else None
    cells = (  # BRIDGE_COLUMNS order
        decision.lead_key,
        latest_sent.event_id if latest_sent else "",
        text,
        format_sent_at(latest_sent.sent_at, tz) if latest_sent and latest_sent.sent_at else "",
        _response_words(latest_sent, failed),
    )
    if dry_run:
        events = tuple((e.event_name, e.event_id, "due", e.event_time) for e in decision.events)
        events += tuple(
            (x.event_name, x.event_id, "expired", x.event_time) for x in decision.expired
        )
        events += tuple(
            (b.event_name, b.event_id, "baseline", int(b.seen_at.timestamp()))
            for b in decision.baseline
        )
    else:
        events = tuple((r.event_name, r.event_id, r.state, r.event_time) for r in records)
    return RowReport(
        row=decision.row_number,
        lead_key=decision.lead_key,
        status=decision.status,
        outcome=outcome,
        message=text,
        event_states=events,
        strength=decision.match.strength if decision.match else None,
        cells=cells,
    )


def pass_words(report: RowReport) -> str:
    """What this pass did for the row, for the CLI's table: the events it sent now apart from
    those Meta had before. The CAPI Status cell names them all (it is the row's state); a table
    headed by one pass names only what that pass sent, so its "Sent now" lists add up to the
    pass's events_sent."""
    now = [name for name, _, state, _ in report.logged if state == "sent"]
    before = [name for name, _, state, _ in report.event_states if state == "sent"]
    before = [name for name in before if name not in now]
    parts: list[str] = []
    for part in report.message.split(_PARTS):
        if part.startswith(_SENT):
            if now:
                parts.append(_SENT_NOW + ", ".join(now))
            if before:
                parts.append(_BEFORE + ", ".join(before))
        else:
            parts.append(part)
    return _PARTS.join(parts)


def shows_sent_or_expired(cells: Sequence[object]) -> bool:
    """Whether a row's bridge cells (BRIDGE_COLUMNS order) say Meta has one of its events, or
    that one expired: CAPI Status names one, or CAPI Sent At holds a time as format_sent_at
    writes it (render_row fills it only from a sent event; a moved-back row keeps it)."""
    status, sent_at = (*cells, "", "", "", "")[2:4]
    if isinstance(sent_at, str) and _SENT_AT_TEXT.match(sent_at):
        return True
    said = said_events(status if isinstance(status, str) else "")
    return bool(said["sent"] or said["expired"])


def said_events(status_text: str) -> dict[str, list[str]]:
    """The event names a CAPI Status cell names as sent, failed, expired and baseline, and its
    warning (the inverse of render_row's words): {"sent": [...], "failed": [...],
    "expired": [...], "baseline": [...], "warning": [...]}. A row at a baseline with nothing
    sent says "Baseline: <why>" instead of the names: that part names none."""
    said: dict[str, list[str]] = {
        "sent": [], "failed": [], "expired": [], "baseline": [], "warning": []
    }  # fmt: skip
    for part in status_text.split(_PARTS):
        if part.startswith(_SENT):
            said["sent"] += [n.strip() for n in part[len(_SENT) :].split(",") if n.strip()]
        elif part.startswith(_FAILED):
            said["failed"].append(part[len(_FAILED) :].split(" (", 1)[0].strip())
        elif part.startswith(_EXPIRED):
            names = part[len(_EXPIRED) :].split(" (", 1)[0]
            said["expired"] += [n.strip() for n in names.split(",") if n.strip()]
        elif part.startswith(_WARNING):
            said["warning"].append(part[len(_WARNING) :])
        elif part.startswith(_BASELINE) and part.endswith(_BASELINE_TAIL):
            names = part[len(_BASELINE) : -len(_BASELINE_TAIL)]
            said["baseline"] += [n.strip() for n in names.split(",") if n.strip()]
    return said


def _notes_of(sent: Sequence[EventRecord]) -> list[str]:
    for r in reversed(sent):
        if r.notes:
            return [r.notes]
    return []


def _expired_words(expired: Sequence[EventRecord], tz: tzinfo) -> str:
    names = ", ".join(r.event_name for r in expired)
    first = min(expired, key=lambda r: r.event_time)
    at = datetime.fromtimestamp(first.event_time, tz).strftime("%Y-%m-%d")
    return f"{_EXPIRED}{names} (dated {at}, outside Meta's window; not sent)"


_BASELINE_TAIL = " (reached before sheet-bridge saw when; not sent, nothing invented)"


def _baseline_words(names: Sequence[str]) -> str:
    return f"{_BASELINE}{', '.join(names)}{_BASELINE_TAIL}"


def _expired_words_planned(decision: RowDecision) -> str:
    names = ", ".join(x.event_name for x in decision.expired)
    return f"Expired: {names} ({decision.expired[0].limit.days}-day window passed)"


def _response_words(latest: EventRecord | None, failed: Sequence[EventRecord]) -> str:
    if failed:
        return failed[-1].error or ""
    if latest is not None:
        return _accepted_words(latest.fbtrace_id)
    return ""


def summary_counts(reports: Sequence[RowReport]) -> dict[str, int]:
    counts = dict.fromkeys(SUMMARY_KEYS, 0)
    for r in reports:
        counts[r.outcome] = counts.get(r.outcome, 0) + 1
    return counts


# What a person should look at after a pass, most urgent first: Meta refused it, the row is
# wrong, it is too old, it was recorded without being sent, a preview would send it, it was
# left out for a stated reason. Sent and up-to-date rows are counts, not rows.
_ATTENTION_ORDER: dict[str, int] = {
    "failed": 0,
    "invalid": 1,
    "expired": 2,
    "baseline": 3,
    "due": 4,
    "skipped": 5,
}


def needs_attention(report: RowReport) -> bool:
    """A row the sidebar lists (a skipped row only when it says why)."""
    if report.outcome == "skipped":
        return bool(report.message)
    return report.outcome in _ATTENTION_ORDER


def attention_rows(reports: Sequence[RowReport]) -> list[RowReport]:
    """The rows needing attention, most urgent outcome first, then by row."""
    rows = [r for r in reports if needs_attention(r)]
    rows.sort(key=lambda r: (_ATTENTION_ORDER[r.outcome], r.row))
    return rows
