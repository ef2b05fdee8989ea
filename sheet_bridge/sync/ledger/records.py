"""What both ledger backends store and answer, in Python: the rows each contract call writes
and the records built from the rows it reads.

sqlite.py and postgres.py differ in SQL (placeholders, types, locks), not in what a row holds:
keeping the rows here means an event is stored, and read back, the same way on both. Each
producer's docstring gives its column order; the backends' SQL names the columns in it.
Times are stored as seconds since the epoch (float) on both, so the readable-time filter is
one expression (READABLE_AT) and a time reads back exactly as it was written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sync.ledger.contract import (
    KEEP_PASSES,
    PLAUSIBLE_AGE,
    RECORD_DAYS,
    SUMMARY_DAYS,
    AdoptedEvent,
    Answered,
    EditChange,
    LedgerEvent,
    PassRecord,
    PixelEvent,
    QueuedEdit,
    RowMemo,
    SheetTab,
    UnreadableRecord,
    describe_at,
    from_ts,
    to_ts,
)
from sheet_bridge.sync.plan import (
    BASELINE_REASON,
    FUTURE_SKEW,
    BaselineEvent,
    EventRecord,
    ExpiredEvent,
    LeadHistory,
    PlannedEvent,
    Transition,
    expired_reason,
    lead_identity,
)

# A stored time (`at`, recorded at `recorded_at`) a pass can use: a real date, and plausible
# for when it was recorded (PLAUSIBLE_AGE before, FUTURE_SKEW after). NaN and infinities fail
# it on both backends. SQLite also checks the stored types (it keeps whatever it was given).
READABLE_AT = (
    "(at BETWEEN -62135596800 AND 253402300799 "  # 0001-01-01 .. 9999-12-31 UTC
    f"AND at >= recorded_at - {PLAUSIBLE_AGE.total_seconds():.0f} "
    f"AND at <= recorded_at + {FUTURE_SKEW.total_seconds():.0f})"
)

EVENT_COLUMNS = (
    "lead_key, event_name, event_id, state, event_time, row_number, lead_status, stage_index, "
    "sent_at, fbtrace_id, error, retry, value, currency, match_strength, user_data"
)
PASS_COLUMNS = (
    "id, spreadsheet_id, tab, trigger, dry_run, started_at, finished_at, phase, done, total, "
    "COALESCE(heartbeat_at, started_at), counts, error, summary"
)
LAST_PASS_COLUMNS = "id, tab, trigger, dry_run, started_at, finished_at, counts, error"
PIXEL_EVENT_COLUMNS = (
    "e.spreadsheet_id, e.tab, e.lead_key, e.event_name, e.event_id, e.state, e.user_data, "
    "e.first_planned"
)
# Joins an event (e) to its tab's pixel (p, tab_pixels).
PIXEL_OF_EVENT = "p.spreadsheet_id = e.spreadsheet_id AND p.tab = e.tab"
# How a pixel's leads are found (schema 5's indexes): by Leadgen ID, CAPI Key, and the hashed
# e-mail and phone each sent event stored. A cell with several e-mails matches on none.
PIXEL_MATCH_FIELDS = ("lead_id", "em", "ph")


# -- rows written ------------------------------------------------------------------------------


# json.dumps(value, sort_keys=True), without building an encoder per call (once per lead).
_encode_sorted = json.JSONEncoder(sort_keys=True).encode


def row_memos(rows: Iterable[tuple[str, str, str, str]]) -> dict[str, RowMemo]:
    """row_memos: (lead_key, digest, fingerprint, report) rows as memos by lead key, read one
    row at a time. The memos of a tab share a fingerprint or two: one string each, not one per
    memo (100,000 memos: ~8 MB less while the tab's read is held beside them)."""
    shared: dict[str, str] = {}
    return {k: RowMemo(d, shared.setdefault(f, f), r) for k, d, f, r in rows}


def sending_rows(
    where: SheetTab,
    events: Iterable[PlannedEvent],
    strengths: Mapping[str, str],
    notes: Mapping[str, str | None],
    t: float,
) -> Iterator[tuple[object, ...]]:
    """mark_sending: (spreadsheet_id, tab, lead_key, event_name, event_id, event_time,
    row_number, lead_status, stage_index, fingerprint, first_planned, updated_at, value,
    currency, match_strength, user_data, notes).

    A generator: 100,000 leads' user_data JSON never sits in memory all at once. A lead's
    events come together and share one user_data: it is encoded once."""
    sid, tab = where.spreadsheet_id, where.tab
    last_user: object = None
    user_json = ""
    for e in events:
        if e.user_data is not last_user:
            last_user, user_json = e.user_data, _encode_sorted(e.user_data)
        yield (
            sid,
            tab,
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


# Meta's answer → the state stored: anything but sent or expired is a failure.
_STORED_STATE = {"sent": "sent", "expired": "expired"}


def outcome_rows(
    where: SheetTab, results: Iterable[tuple[PlannedEvent, SendOutcome]], t: float
) -> list[tuple[object, ...]]:
    """record_outcomes: (state, sent_at or None, fbtrace_id, error, retry, updated_at,
    spreadsheet_id, tab, lead_key, event_name), the last four naming the event."""
    sid, tab = where.spreadsheet_id, where.tab
    rows: list[tuple[object, ...]] = []
    for e, o in results:
        state = _STORED_STATE.get(o.state, "failed")
        sent = state == "sent"
        rows.append(
            (
                state,
                t if sent else None,
                o.fbtrace_id,
                None if sent else o.summary,
                o.state == "not_sent" or o.transient,
                t,
                sid,
                tab,
                e.lead_key,
                e.event_name,
            )
        )
    return rows


def answered_rows(where: SheetTab, answered: Answered) -> list[tuple[object, ...]]:
    """mark_sending's `answered`: outcome_rows of each request's answers at its own time, in
    the order answered."""
    rows: list[tuple[object, ...]] = []
    for results, at in answered:
        rows += outcome_rows(where, results, to_ts(at))
    return rows


def expired_rows(
    where: SheetTab, expired: Sequence[ExpiredEvent], t: float
) -> list[tuple[object, ...]]:
    """record_expired: (spreadsheet_id, tab, lead_key, event_name, event_id, event_time,
    row_number, first_planned, updated_at, error)."""
    return [
        (
            where.spreadsheet_id,
            where.tab,
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


def baseline_rows(
    where: SheetTab, baseline: Sequence[BaselineEvent], t: float
) -> list[tuple[object, ...]]:
    """record_baseline: the columns of `expired_rows`, event_time being when it was seen."""
    return [
        (
            where.spreadsheet_id,
            where.tab,
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


def adopted_rows(
    where: SheetTab, events: Sequence[AdoptedEvent], t: float
) -> list[tuple[object, ...]]:
    """adopt: (spreadsheet_id, tab, lead_key, event_name, event_id, state, event_time,
    row_number, lead_status, stage_index, first_planned, sent_at, updated_at, error, value,
    currency, match_strength, user_data, fbtrace_id, notes)."""
    return [
        (
            where.spreadsheet_id,
            where.tab,
            a.lead_key,
            a.event_name,
            a.event_id,
            a.state,
            a.event_time,
            a.row_number,
            a.lead_status,
            a.stage_index,
            t,
            to_ts(a.sent_at) if a.sent_at is not None else None,
            t,
            a.error,
            a.value,
            a.currency,
            a.match_strength,
            json.dumps(a.user_data, sort_keys=True) if a.user_data is not None else None,
            a.fbtrace_id,
            a.notes,
        )
        for a in events
    ]


def transition_rows(
    where: SheetTab, items: Iterable[tuple[str, str, datetime, str]], t: float
) -> list[tuple[object, ...]]:
    """add_transitions and resolve_edits: (spreadsheet_id, tab, lead_key, status, at, source,
    recorded_at) from (lead key, status, at, source)."""
    sid, tab = where.spreadsheet_id, where.tab
    return [(sid, tab, k, s, to_ts(at), src, t) for k, s, at, src in items]


# The edit queue (schema 4): one row per lead with an edit waiting to settle or to be sent
# (`withdrawn_at` NULL), or whose last edit was withdrawn (`withdrawn_at` set: the times from
# `since` to `at` were a change that never stood).
QUEUE_COLUMNS = "lead_key, row_number, previous, status, since, at, due_at, stamp_before"
# Only the edits still waiting (queued_edits, dequeue_edits).
LIVE = "withdrawn_at IS NULL"


def edit_change_rows(where: SheetTab, changes: Sequence[EditChange], t: float) -> EditRows:
    """record_edits, in the order to apply them: the withdrawals (spreadsheet_id, tab,
    lead_key, since) of the leads' edit transitions from `since` on; the transitions to add
    (as transition_rows); the leads whose queued edit is withdrawn (withdrawn_at, spreadsheet_id,
    tab, lead_key); the queue rows to write (spreadsheet_id, tab, QUEUE_COLUMNS, recorded_at)."""
    sid, tab = where.spreadsheet_id, where.tab
    queued = [c.queued for c in changes if c.queued is not None]
    return EditRows(
        withdrawn=[
            (sid, tab, c.lead_key, to_ts(c.withdraw_since))
            for c in changes
            if c.withdraw_since is not None
        ],
        transitions=transition_rows(
            where, ((q.lead_key, q.status, q.at, "edit") for q in queued), t
        ),
        dequeued=[(t, sid, tab, c.lead_key) for c in changes if c.queued is None],
        queue=[
            (
                *(sid, tab, q.lead_key, q.row_number, q.previous, q.status),
                *_times(q),
                q.stamp_before,
                t,
            )
            for q in queued
        ],
    )


def _times(q: QueuedEdit) -> tuple[float, float, float]:
    return to_ts(q.since), to_ts(q.at), to_ts(q.due_at)


@dataclass
class EditRows:
    withdrawn: list[tuple[object, ...]]
    transitions: list[tuple[object, ...]]
    dequeued: list[tuple[object, ...]]
    queue: list[tuple[object, ...]]


def queued_edit(row: Sequence[Any]) -> QueuedEdit:
    """From a row of QUEUE_COLUMNS."""
    key, row_number, previous, status, since, at, due_at, stamp_before = row
    return QueuedEdit(
        key,
        int(row_number),
        previous,
        status,
        from_ts(since),
        from_ts(at),
        from_ts(due_at),
        stamp_before,
    )


def counts_json(counts: Mapping[str, int]) -> str:
    return json.dumps(counts, sort_keys=True)


def summary_json(summary: Mapping[str, Any] | None) -> str | None:
    return json.dumps(summary) if summary is not None else None


# -- records read ------------------------------------------------------------------------------


def lead_histories(
    event_rows: Iterable[Sequence[Any]],
    transition_rows: Iterable[Sequence[Any]],
    withdrawn_rows: Iterable[Sequence[Any]] = (),
) -> dict[str, LeadHistory]:
    """history: each lead's events from (lead_key, event_name, event_id, state, event_time,
    retry, fingerprint, sent_at, fbtrace_id, error, notes) rows, its transitions from
    (lead_key, status, at, source, recorded_at) rows in time order, and the times of its
    withdrawn edits from (lead_key, since, at) rows of the edit queue (WITHDRAWN_SQL)."""
    events: dict[str, dict[str, EventRecord]] = {}
    transitions: dict[str, list[Transition]] = {}
    # One per batch sent, one per pass for what a pass observed: convert each once. Inlined,
    # as the lookups below: this runs for every event and transition of the tab on each pass.
    times: dict[float, datetime] = {}
    for key, name, eid, state, etime, retry, fp, sent_at, trace, err, notes in event_rows:
        sent = None
        if sent_at:
            sent = times.get(sent_at)
            if sent is None:
                sent = times[sent_at] = from_ts(sent_at)
        record = EventRecord(name, eid, state, etime, bool(retry), fp, sent, trace, err, notes)
        lead = events.get(key)
        if lead is None:
            events[key] = {name: record}
        else:
            lead[name] = record
    for key, status, at, source, recorded_at in transition_rows:
        when = times.get(at)
        if when is None:
            when = times[at] = from_ts(at)
        seen = times.get(recorded_at)
        if seen is None:
            seen = times[recorded_at] = from_ts(recorded_at)
        seen_list = transitions.get(key)
        if seen_list is None:
            transitions[key] = [Transition(status, when, source, seen)]
        else:
            seen_list.append(Transition(status, when, source, seen))
    withdrawn: dict[str, list[tuple[datetime, datetime]]] = {}
    for key, since, at in withdrawn_rows:
        withdrawn.setdefault(key, []).append((from_ts(since), from_ts(at)))
    histories = {
        k: LeadHistory(lead, tuple(transitions.pop(k, ())), tuple(withdrawn.pop(k, ())))
        for k, lead in events.items()
    }
    for k, seen_list in transitions.items():  # leads with no event yet
        histories[k] = LeadHistory({}, tuple(seen_list), tuple(withdrawn.pop(k, ())))
    for k, times_back in withdrawn.items():
        histories[k] = LeadHistory({}, (), tuple(times_back))
    return histories


def unreadable_edit(row: Sequence[Any]) -> UnreadableRecord:
    """From (id, row_number, new_value, at)."""
    i, row_number, new, at = row
    return UnreadableRecord(
        "pending_edits",
        i,
        f"the edit of row {row_number} to {str(new)[:40]!r} was recorded with an unusable "
        f"time ({describe_at(at)}); it is dropped, and the sheet's status is read as it is now",
    )


def unreadable_transition(row: Sequence[Any]) -> UnreadableRecord:
    """From (id, lead_key, status, at)."""
    i, key, status, at = row
    return UnreadableRecord(
        "transitions",
        i,
        f"the change of lead {key} to {str(status)[:40]!r} is stored with an unusable time "
        f"({describe_at(at)}); it is ignored and dropped",
    )


def ledger_event(r: Sequence[Any]) -> LedgerEvent:
    """From a row of EVENT_COLUMNS."""
    return LedgerEvent(
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


def pass_record(row: Sequence[Any]) -> PassRecord:
    """From a row of PASS_COLUMNS."""
    return PassRecord(
        id=row[0],
        where=SheetTab(row[1], row[2]),
        trigger=row[3],
        dry_run=bool(row[4]),
        started_at=from_ts(row[5]),
        finished_at=from_ts(row[6]) if row[6] is not None else None,
        phase=row[7],
        done=row[8],
        total=row[9],
        heartbeat_at=from_ts(row[10]),
        counts=json.loads(row[11]) if row[11] else None,
        error=row[12],
        summary=json.loads(row[13]) if row[13] else None,
    )


def last_pass_answer(row: Sequence[Any] | None) -> dict[str, Any]:
    """last_pass from a row of LAST_PASS_COLUMNS ({} when there is none)."""
    if row is None:
        return {}
    return {
        "id": row[0],
        "tab": row[1],
        "trigger": row[2],
        "dry_run": bool(row[3]),
        "started_at": from_ts(row[4]).isoformat(),
        "finished_at": from_ts(row[5]).isoformat(),
        "counts": json.loads(row[6]) if row[6] else {},
        "error": row[7],
    }


def pixel_event(row: Sequence[Any]) -> PixelEvent:
    """A row of PIXEL_EVENT_COLUMNS, with the lead's identity worked out as the planner does
    (sync/plan.py lead_identity) from what was sent."""
    sid, tab, key, name, event_id, state, user_json, first_planned = row
    try:
        user = json.loads(user_json) if user_json else {}
    except ValueError:
        user = {}
    if not isinstance(user, dict):
        user = {}
    em, ph = user.get("em"), user.get("ph")
    return PixelEvent(
        sid,
        tab,
        key,
        name,
        event_id,
        state,
        lead_identity(key, user),
        em if isinstance(em, str) else None,
        ph if isinstance(ph, str) else None,
        float(first_planned),
    )


def pixel_searches(
    user_field: Callable[[str], str],
    lead_id: Callable[[int], object],
    *,
    lead_ids: Collection[int],
    keys: Collection[str],
    contacts: Collection[str],
    since: datetime | None,
) -> list[tuple[str, list[object], datetime | None]]:
    """pixel_events' searches, each (SQL expression, values, recorded since): by CAPI Key, by
    Leadgen ID (as the backend's JSON gives it back: `lead_id`), and by e-mail or phone hash;
    those with no values left out."""
    searches: list[tuple[str, list[object], datetime | None]] = [
        ("e.lead_key", list(keys), None),
        (user_field("lead_id"), [lead_id(i) for i in lead_ids], None),
        (user_field("em"), list(contacts), since),
        (user_field("ph"), list(contacts), since),
    ]
    return [s for s in searches if s[1]]


def prune_statements(
    where: SheetTab, now: datetime, placeholder: str, full_pass: str
) -> list[tuple[str, tuple[Any, ...]]]:
    """The two statements of prune_passes and their parameters, in either backend's
    placeholder (`?` or `%s`); `full_pass`: its test for a completed full pass (contract.py
    KEEP_PASSES, SUMMARY_DAYS, RECORD_DAYS). The first drops answers, the second deletes."""
    p = placeholder
    tab = (where.spreadsheet_id, where.tab)
    newest = (
        f"SELECT id FROM passes WHERE spreadsheet_id = {p} AND tab = {p} ORDER BY id DESC LIMIT {p}"
    )
    last_full = (
        f"SELECT COALESCE(MAX(id), -1) FROM passes WHERE spreadsheet_id = {p} AND tab = {p} "
        f"AND {full_pass}"
    )
    old = (
        f"spreadsheet_id = {p} AND tab = {p} AND finished_at IS NOT NULL AND started_at < {p} "
        f"AND id NOT IN ({newest})"
    )
    summaries_before = to_ts(now - timedelta(days=SUMMARY_DAYS))
    records_before = to_ts(now - timedelta(days=RECORD_DAYS))
    return [
        (
            f"UPDATE passes SET summary = NULL WHERE summary IS NOT NULL AND {old}",
            (*tab, summaries_before, *tab, KEEP_PASSES),
        ),
        (
            f"DELETE FROM passes WHERE {old} AND id <> ({last_full})",
            (*tab, records_before, *tab, KEEP_PASSES, *tab),
        ),
    ]
