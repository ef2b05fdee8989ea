"""Properties of plan() across passes, edits and every send outcome (issue 7 "Deliver" 3).

tests/sync/test_plan.py already checks, over passes where every planned event is sent, that no
(lead, event name) is planned twice and that events are in funnel order and inside the window.
Here the ledger is harsher, as in production: between passes sales people edit statuses (edit
transitions at any time, some older than the window, some slightly ahead of the clock), and an
event may come back sent, failed for a retry, refused for good, or left `sending` by a crash.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sheet_bridge.sync.plan import EventRecord, LeadHistory, LeadRow, Plan, Transition, plan
from tests.sync.test_plan import CONFIG, EMAIL, NOW, ts

STATUSES = ["", "New", "MQL", "SQL", "Opportunity", "Customer", "Won", "On hold", "Disqualified"]
KEYS = ("a", "b", "c", "d")
MINUTE = timedelta(minutes=1)
WINDOW = timedelta(days=7) - timedelta(minutes=10)  # Meta's 7 days less the planning margin
STAGE = {s.event: s for s in CONFIG.stage_map.stages}
POSITIVE = [s for s in CONFIG.stage_map.positive if s.send]
OUTCOMES = ["sent", "sent", "sent", "retry", "refused", "crash"]

cell = st.tuples(
    st.sampled_from(STATUSES),
    st.one_of(st.none(), st.integers(-10, 9 * 24 * 60)),  # changed, minutes before now
    st.sampled_from([{"em": EMAIL}, {"ph": "+91 98765 43210"}, {"em": "bad", "fn": "A"}]),
)
edit = st.tuples(
    st.sampled_from(KEYS), st.sampled_from(STATUSES[1:]), st.integers(-3, 10 * 24 * 60)
)
one_pass = st.tuples(
    st.integers(0, 2 * 24 * 60),  # minutes since the last pass
    st.tuples(*[cell] * len(KEYS)),
    st.lists(edit, max_size=4),  # edits recorded before this pass
    st.lists(st.sampled_from(OUTCOMES), min_size=20, max_size=20),  # what Meta answers
)


def apply_outcomes(
    history: dict[str, LeadHistory], result: Plan, outcomes: list[str], now: datetime
) -> None:
    """What the ledger keeps after the send: the state each event ended in."""
    for i, event in enumerate(result.events):
        answer = outcomes[i % len(outcomes)]
        state = {"sent": "sent", "crash": "sending"}.get(answer, "failed")
        record = EventRecord(
            event.event_name,
            event.event_id,
            state,  # type: ignore[arg-type]
            event.event_time,
            retry=answer == "retry",
            fingerprint=event.fingerprint,
        )
        old = history.get(event.lead_key, LeadHistory())
        history[event.lead_key] = LeadHistory(
            {**old.events, record.event_name: record}, old.transitions
        )
    for x in result.expired:
        old = history.get(x.lead_key, LeadHistory())
        record = EventRecord(x.event_name, x.event_id, "expired", x.event_time)
        history[x.lead_key] = LeadHistory({**old.events, x.event_name: record}, old.transitions)
    for b in result.baseline:
        old = history.get(b.lead_key, LeadHistory())
        record = EventRecord(b.event_name, b.event_id, "baseline", ts(b.seen_at))
        history[b.lead_key] = LeadHistory({**old.events, b.event_name: record}, old.transitions)
    for seen in result.observations:
        old = history.get(seen.lead_key, LeadHistory())
        moved = [*old.transitions, Transition(seen.status, seen.at, seen.source, now)]
        history[seen.lead_key] = LeadHistory(old.events, tuple(sorted(moved, key=lambda t: t.at)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    created=st.tuples(*[st.one_of(st.none(), st.integers(0, 10 * 24 * 60))] * len(KEYS)),
    passes=st.lists(one_pass, min_size=1, max_size=7),
)
def test_with_edits_failures_and_crashes_nothing_is_sent_twice_and_order_and_window_hold(
    created: tuple[int | None, ...], passes: list[Any]
) -> None:
    now = NOW
    history: dict[str, LeadHistory] = {}
    ids: dict[tuple[str, str], str] = {}
    last_pass: datetime | None = None
    for gap, cells, edits, outcomes in passes:
        now += gap * MINUTE
        for key, status, minutes in edits:
            old = history.get(key, LeadHistory())
            moved = [*old.transitions, Transition(status, now - minutes * MINUTE, "edit", now)]
            history[key] = LeadHistory(old.events, tuple(sorted(moved, key=lambda t: t.at)))
        rows = [
            LeadRow(
                row_number=i + 2,
                key=key,
                status=status,
                status_changed_at=None if changed is None else now - changed * MINUTE,
                created_at=None if created[i] is None else NOW - created[i] * MINUTE,
                identity=identity,
            )
            for i, (key, (status, changed, identity)) in enumerate(zip(KEYS, cells, strict=True))
        ]
        result = plan(rows, CONFIG, history, now, last_full_pass=last_pass)
        for decision in result.decisions:
            lead = history.get(decision.lead_key, LeadHistory())
            known = lead.events
            # Too old to send (docs/event-times.md), or reached before any time could be seen
            # (baseline), counts as accounted for: reported, never sent.
            planned_before: set[str] = {x.event_name for x in decision.expired}
            planned_before |= {b.event_name for b in decision.baseline}
            row = rows[KEYS.index(decision.lead_key)]
            # Observed, never invented: every time comes from the row, the ledger, or a scan
            # that saw the change within the last 24 h (the plan's module docstring).
            observed = {ts(t.at) for t in lead.transitions if t.timed}
            observed |= {ts(min(t, now)) for t in (row.status_changed_at, row.created_at) if t}
            seen = [t.observed for t in lead.transitions] + ([last_pass] if last_pass else [])
            if any(now - t <= timedelta(hours=24) for t in seen):
                observed.add(ts(now))
            for e in decision.events:
                record = known.get(e.event_name)
                # Never twice: what Meta accepted, or what expired, is never planned again.
                assert record is None or record.state in ("sending", "failed", "baseline"), (
                    e,
                    record,
                )
                assert e.event_time in observed or record is not None, (e, observed)
                # A retry or a resend after a crash keeps the event_id Meta may already have.
                key = (e.lead_key, e.event_name)
                assert ids.setdefault(key, e.event_id) == e.event_id, key
                # Inside Meta's window, never in the future, never before the lead existed.
                assert ts(now - WINDOW) <= e.event_time <= ts(now), e
                row = rows[KEYS.index(e.lead_key)]
                if row.created_at is not None:
                    assert e.event_time >= ts(row.created_at), e
                # Funnel order: every earlier stage is in the ledger, expired, or goes first.
                stage = STAGE[e.event_name]
                if not stage.negative:
                    for earlier in POSITIVE[: POSITIVE.index(stage)]:
                        assert earlier.event in known or earlier.event in planned_before, (
                            e.event_name,
                            earlier.event,
                        )
                planned_before.add(e.event_name)
            times = [e.event_time for e in decision.events]
            assert times == sorted(times), decision
        apply_outcomes(history, result, outcomes, now)
        last_pass = now


@settings(max_examples=80, deadline=None)
@given(
    cells=st.tuples(*[cell] * len(KEYS)),
    only=st.sets(st.sampled_from(KEYS)),
)
def test_a_pass_for_some_leads_plans_for_them_exactly_what_the_full_pass_would(
    cells: tuple[Any, ...], only: set[str]
) -> None:
    rows = [
        LeadRow(
            row_number=i + 2,
            key=key,
            status=status,
            status_changed_at=None if changed is None else NOW - changed * MINUTE,
            identity=identity,
        )
        for i, (key, (status, changed, identity)) in enumerate(zip(KEYS, cells, strict=True))
    ]
    full = plan(rows, CONFIG, {}, NOW)
    some = plan(rows, CONFIG, {}, NOW, only_keys=only)
    assert [d.lead_key for d in some.decisions] == [k for k in KEYS if k in only]
    wanted = [e for e in full.events if e.lead_key in only]
    assert [(e.event_id, e.payload) for e in some.events] == [
        (e.event_id, e.payload) for e in wanted
    ]
