"""The pure sync plan: which events each lead row owes Meta, when, with which id, and why not
(docs/event-times.md, docs/meta-events.md, docs/deduplication.md)."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sheet_bridge.config import BridgeConfig, parse_config
from sheet_bridge.meta.identity import match_keys
from sheet_bridge.sync.plan import (
    EventRecord,
    LeadHistory,
    LeadRow,
    Plan,
    RowDecision,
    Transition,
    event_id_for,
    plan,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
SHEET = "sheet-1"
TAB = "Leads"  # the config's tab (the default)
PIXEL = "1234567890"
EMAIL = "asha@example.com"
FUNNEL = ["Lead", "QualifiedLead", "Schedule", "StartTrial", "Purchase"]

STAGES: list[dict[str, Any]] = [
    {"status": "New", "event": "Lead", "value": 100},
    {"status": "MQL", "event": "QualifiedLead", "custom": True, "value": 1000, "currency": "EUR"},
    {"status": "SQL", "event": "Schedule", "value": 5000},
    {"status": "Opportunity", "event": "StartTrial"},
    {"status": ["Customer", "Won"], "event": "Purchase", "value": 50000},
    {"status": "On hold", "event": "Contact", "send": False},
    {"status": "Disqualified", "event": "Disqualified", "custom": True, "negative": True},
]


def make_config(
    action_source: str = "system_generated", stages: list[dict[str, Any]] | None = None
) -> BridgeConfig:
    return parse_config(
        {
            "sheets": {
                "spreadsheet_id": SHEET,
                "credentials": "anonymous",
                "api_endpoint": "http://127.0.0.1:8085",
            },
            "meta": {
                "pixel_id": "1234567890",
                "action_source": action_source,
                "lead_event_source": "Acme CRM sheet",
                "default_country": "IN",
                "currency": "INR",
            },
            "columns": {
                "status": "Lead Status",
                "status_changed_at": "Status Changed At",
                "created_at": "Created At",
                "email": "Email",
            },
            "stages": STAGES if stages is None else stages,
        }
    )


CONFIG = make_config()


def ago(days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
    return NOW - timedelta(days=days, hours=hours, minutes=minutes)


def ts(at: datetime) -> int:
    return int(at.timestamp())


def lead(
    status: str = "New",
    changed: datetime | None = None,
    created: datetime | None = None,
    key: str = "L1",
    row: int = 2,
    identity: dict[str, object] | None = None,
    **more: Any,
) -> LeadRow:
    return LeadRow(
        row_number=row,
        key=key,
        status=status,
        status_changed_at=changed,
        created_at=created,
        identity={"em": EMAIL} if identity is None else identity,
        **more,
    )


def sent(*names: str, state: str = "sent", **more: Any) -> LeadHistory:
    events = {
        n: EventRecord(n, event_id_for(PIXEL, "key:L1", n), state, ts(ago(days=1)), **more)  # type: ignore[arg-type]
        for n in names
    }
    return LeadHistory(events=events)


def decide(
    row: LeadRow,
    history: LeadHistory | None = None,
    config: BridgeConfig = CONFIG,
    now: datetime = NOW,
) -> RowDecision:
    result = plan([row], config, {row.key: history} if history else {}, now)
    [decision] = result.decisions
    return decision


def names(decision: RowDecision) -> list[str]:
    return [e.event_name for e in decision.events]


# ---- the time window (docs/event-times.md) -------------------------------------------------------


def test_change_6_days_23_hours_old_is_sent() -> None:
    decision = decide(lead("New", changed=ago(days=6, hours=23)))
    assert decision.outcome == "due"
    assert names(decision) == ["Lead"]
    assert decision.events[0].event_time == ts(ago(days=6, hours=23))


def test_change_7_days_old_is_marked_expired_and_not_sent() -> None:
    decision = decide(lead("New", changed=ago(days=7)))
    assert decision.outcome == "expired"
    assert decision.events == []
    [expired] = decision.expired
    assert expired.event_name == "Lead"
    assert expired.age == timedelta(days=7)
    assert expired.limit == timedelta(days=7)
    assert "7 days old" in decision.message
    assert "up to 7 days old" in decision.message


def test_change_inside_metas_window_but_inside_the_10_minute_margin_is_expired() -> None:
    decision = decide(lead("New", changed=ago(days=6, hours=23, minutes=55)))
    assert decision.outcome == "expired"
    assert decision.events == []
    assert "6 days 23 h old" in decision.message
    assert "up to 7 days old" in decision.message


def test_change_exactly_at_the_planning_edge_is_still_sent() -> None:
    decision = decide(lead("New", changed=ago(days=7) + timedelta(minutes=10)))
    assert names(decision) == ["Lead"]


def test_physical_store_change_61_days_old_is_sent() -> None:
    decision = decide(lead("New", changed=ago(days=61)), config=make_config("physical_store"))
    assert decision.outcome == "due"
    assert names(decision) == ["Lead"]
    assert decision.events[0].payload["action_source"] == "physical_store"


def test_physical_store_change_63_days_old_is_expired_saying_the_62_day_limit() -> None:
    decision = decide(lead("New", changed=ago(days=63)), config=make_config("physical_store"))
    assert decision.outcome == "expired"
    assert decision.events == []
    assert "63 days old" in decision.message
    assert "up to 62 days old" in decision.message


def test_stale_first_stage_does_not_sink_the_fresh_later_stages() -> None:
    decision = decide(lead("Customer", changed=ago(hours=1), created=ago(days=10)))
    assert decision.outcome == "due"
    assert names(decision) == FUNNEL[1:]
    assert [x.event_name for x in decision.expired] == ["Lead"]
    assert "10 days old" in decision.message


# ---- jumps: every stage, in funnel order, at observed times (docs/meta-events.md) --


def test_jump_from_new_to_customer_sends_every_stage_in_funnel_order() -> None:
    changed, created = ago(hours=2), ago(days=3)
    decision = decide(lead("Customer", changed=changed, created=created))
    assert names(decision) == FUNNEL
    times = [e.event_time for e in decision.events]
    # Lead at the lead's creation; the stages jumped over at the observed change, never earlier.
    assert times == [ts(created)] + [ts(changed)] * 4


def test_jump_without_created_at_uses_the_observed_change_time_for_every_stage() -> None:
    changed = ago(hours=5)
    decision = decide(lead("Opportunity", changed=changed))
    assert names(decision) == FUNNEL[:4]
    assert {e.event_time for e in decision.events} == {ts(changed)}


def test_first_stage_without_change_time_uses_created_at() -> None:
    created = ago(days=2)
    decision = decide(lead("New", created=created))
    assert decision.events[0].event_time == ts(created)


def test_a_stamp_at_a_withdrawn_edits_time_is_not_the_status_time() -> None:
    """docs/edits.md: a Status Changed At the add-on wrote for an edit changed back before it
    settled, and could not put back, dates nothing; any other stamp still does."""
    click = ago(minutes=10)
    withdrawn = LeadHistory(withdrawn=((click - timedelta(seconds=20), click),))
    created = ago(days=2)

    at_click = decide(lead("New", changed=click, created=created), withdrawn)
    in_between = decide(lead("New", changed=click - timedelta(seconds=5)), withdrawn)
    later = decide(lead("New", changed=click + timedelta(seconds=1)), withdrawn)

    assert [e.event_time for e in at_click.events] == [ts(created)]  # Created At, not the click
    assert "changed back before it settled" in " ".join(at_click.warnings)
    assert in_between.outcome == "baseline"  # no time left to defend
    assert "changed back before it settled" in in_between.message
    assert [e.event_time for e in later.events] == [ts(click + timedelta(seconds=1))]


def test_status_never_seen_before_without_times_is_a_baseline_recorded_and_never_sent() -> None:
    row = lead("SQL")
    result = plan([row], CONFIG, {}, NOW)
    [decision] = result.decisions
    assert decision.outcome == "baseline"
    assert decision.events == []
    assert [b.event_name for b in decision.baseline] == ["Lead", "QualifiedLead", "Schedule"]
    assert "fill Status Changed At" in decision.message
    assert [(o.lead_key, o.status, o.at, o.source) for o in result.observations] == [
        ("L1", "SQL", NOW, "seen")
    ]


def test_history_transitions_give_each_intermediate_stage_its_observed_time() -> None:
    # Three status changes between two passes: Meta expects three events (docs/meta-events.md).
    history = LeadHistory(
        events=sent("Lead").events,
        transitions=[
            Transition("New", ago(days=3)),
            Transition("MQL", ago(days=2)),
            Transition("sql", ago(days=1)),
            Transition("Opportunity", ago(hours=2)),
        ],
    )
    decision = decide(lead("Opportunity", changed=ago(hours=2)), history)
    assert names(decision) == ["QualifiedLead", "Schedule", "StartTrial"]
    assert [e.event_time for e in decision.events] == [
        ts(ago(days=2)),
        ts(ago(days=1)),
        ts(ago(hours=2)),
    ]


def test_history_transitions_are_used_when_the_row_has_no_change_time() -> None:
    history = LeadHistory(
        transitions=[Transition("MQL", ago(days=2)), Transition("SQL", ago(days=1))]
    )
    decision = decide(lead("SQL", created=ago(days=4)), history)
    assert names(decision) == ["Lead", "QualifiedLead", "Schedule"]
    assert [e.event_time for e in decision.events] == [
        ts(ago(days=4)),
        ts(ago(days=2)),
        ts(ago(days=1)),
    ]


# ---- invalid and clamped times ------------------------------------------------------------


def test_change_before_the_lead_was_created_is_invalid() -> None:
    decision = decide(lead("SQL", changed=ago(days=2), created=ago(days=1)))
    assert decision.outcome == "invalid"
    assert decision.events == []
    assert "before Created At" in decision.message


def test_change_more_than_5_minutes_in_the_future_is_invalid() -> None:
    decision = decide(lead("New", changed=NOW + timedelta(minutes=6)))
    assert decision.outcome == "invalid"
    assert decision.events == []
    assert "in the future" in decision.message
    assert "Status Changed At" in decision.message


def test_change_3_minutes_in_the_future_is_clamped_to_now() -> None:
    decision = decide(lead("New", changed=NOW + timedelta(minutes=3)))
    assert decision.outcome == "due"
    assert decision.events[0].event_time == ts(NOW)


def test_unreadable_time_cell_makes_the_row_invalid_with_its_words() -> None:
    row = lead("New", time_problems=("Status Changed At 'yesterday' is not a date",))
    decision = decide(row)
    assert decision.outcome == "invalid"
    assert "'yesterday' is not a date" in decision.message


# ---- backwards, negative, unmapped, not sent ----------------------------------------------


def test_move_backwards_after_everything_was_sent_sends_nothing_and_says_moved_back() -> None:
    decision = decide(lead("SQL", changed=ago(hours=1)), sent(*FUNNEL))
    assert decision.outcome == "moved_back"
    assert decision.events == []
    assert "moved back" in decision.message
    assert "Customer" in decision.message


def test_move_backwards_below_a_sent_purchase_sends_nothing() -> None:
    decision = decide(lead("SQL", changed=ago(hours=1), created=ago(days=2)), sent("Purchase"))
    assert decision.events == [], names(decision)
    assert "moved back" in decision.message


def test_negative_stage_sends_only_itself_and_never_backfills() -> None:
    decision = decide(lead("Disqualified", changed=ago(hours=1), created=ago(days=1)))
    assert names(decision) == ["Disqualified"]
    assert decision.events[0].event_time == ts(ago(hours=1))


def test_negative_stage_after_progress_sends_only_itself() -> None:
    decision = decide(lead("Disqualified", changed=ago(hours=1)), sent("Lead", "QualifiedLead"))
    assert names(decision) == ["Disqualified"]


def test_unmapped_status_is_skipped_naming_it_and_the_configured_ones() -> None:
    decision = decide(lead("Ghosted", changed=ago(hours=1)))
    assert decision.outcome == "skipped"
    assert decision.events == []
    assert "'Ghosted'" in decision.message
    assert "New, MQL, SQL, Opportunity, Customer, Won, On hold, Disqualified" in decision.message


def test_status_with_send_false_is_skipped() -> None:
    decision = decide(lead(" on HOLD ", changed=ago(hours=1)))
    assert decision.outcome == "skipped"
    assert decision.events == []
    assert "send = false" in decision.message


def test_empty_status_is_skipped() -> None:
    decision = decide(lead("  ", changed=ago(hours=1)))
    assert decision.outcome == "skipped"
    assert decision.events == []


def test_status_is_matched_trimmed_and_case_folded() -> None:
    assert names(decide(lead("  customer ", changed=ago(hours=1)))) == FUNNEL


def test_refused_event_name_in_config_skips_the_row_with_the_suggestion() -> None:
    stages = [{"status": "New", "event": "INITIAL_LEAD"}, *STAGES[1:]]
    decision = decide(lead("New", changed=ago(hours=1)), config=make_config(stages=stages))
    assert decision.outcome == "skipped"
    assert decision.events == []
    assert "Did you mean 'Lead'?" in decision.message


def test_refused_event_name_is_never_sent_as_a_backfilled_stage() -> None:
    stages = [{"status": "New", "event": "INITIAL_LEAD"}, *STAGES[1:]]
    decision = decide(lead("SQL", changed=ago(hours=1)), config=make_config(stages=stages))
    assert "INITIAL_LEAD" not in names(decision)


# ---- identifiers --------------------------------------------------------------------------


def test_row_with_only_first_name_and_gender_is_invalid_saying_what_to_add() -> None:
    decision = decide(lead("New", changed=ago(hours=1), identity={"fn": "Asha", "ge": "F"}))
    assert decision.outcome == "invalid"
    assert decision.events == []
    assert "add an e-mail, a phone number or the Leadgen ID" in decision.message


def test_row_without_identifiers_is_invalid_saying_what_to_add() -> None:
    decision = decide(lead("New", changed=ago(hours=1), identity={}))
    assert decision.outcome == "invalid"
    assert decision.events == []
    assert "add an e-mail, a phone number or the Leadgen ID" in decision.message


def test_row_whose_only_email_is_unusable_is_invalid_with_the_field_warning() -> None:
    decision = decide(lead("New", changed=ago(hours=1), identity={"em": "asha at example"}))
    assert decision.outcome == "invalid"
    assert any("Email" in w and "not an e-mail address" in w for w in decision.warnings)
    assert all("asha at example" not in w for w in decision.warnings)


def test_bad_phone_is_a_warning_while_the_email_still_goes() -> None:
    decision = decide(lead("New", changed=ago(hours=1), identity={"em": EMAIL, "ph": "12"}))
    assert names(decision) == ["Lead"]
    assert len(decision.warnings) == 1
    assert decision.match is not None and decision.match.strength == "good"


# ---- duplicates ---------------------------------------------------------------------------


def test_second_row_with_the_same_lead_key_is_a_duplicate_and_not_sent() -> None:
    rows = [lead("New", changed=ago(hours=1), row=2), lead("SQL", changed=ago(hours=1), row=7)]
    result = plan(rows, CONFIG, {}, NOW)
    first, second = result.decisions
    assert names(first) == ["Lead"]
    assert second.outcome == "duplicate"
    assert second.events == []
    assert "row 2" in second.message
    assert [e.row_number for e in result.events] == [2]


# ---- event ids (docs/deduplication.md) --


def test_event_id_is_deterministic_across_runs() -> None:
    row = lead("Customer", changed=ago(hours=1))
    first = [e.event_id for e in decide(row).events]
    again = [e.event_id for e in decide(row).events]
    assert first == again
    assert len(set(first)) == len(FUNNEL)


def test_event_id_is_the_documented_stable_string() -> None:
    decision = decide(lead("SQL", changed=ago(hours=1)))
    for event in decision.events:
        assert event.event_id == event_id_for(PIXEL, "key:L1", event.event_name)
    # Stable across machines, tabs and versions: the digest of pixel, lead identity and event.
    digest = hashlib.sha256(b"1234567890\x1fkey:L1\x1fSchedule").hexdigest()[:32]
    assert decision.events[-1].event_id == f"sb.{digest}"


def test_event_id_differs_per_lead_per_event_and_per_pixel() -> None:
    ids = {
        event_id_for(PIXEL, "key:L1", "Lead"),
        event_id_for(PIXEL, "key:L2", "Lead"),
        event_id_for(PIXEL, "key:L1", "Schedule"),
        event_id_for("999", "key:L1", "Lead"),
        event_id_for(PIXEL, "lead:123456789012345", "Lead"),
    }
    assert len(ids) == 5


def test_event_id_follows_the_leadgen_id_before_the_key() -> None:
    """One lead, one identity per pixel (docs/identity-and-dates.md): the same Leadgen ID under
    two CAPI Keys (two tabs, or a row re-added) gives the same event ids."""
    one = decide(lead("SQL", changed=ago(hours=1), identity={"lead_id": "123456789012345"}))
    other = decide(
        lead("SQL", changed=ago(hours=1), identity={"lead_id": "123456789012345"}, key="L9")
    )
    assert [e.event_id for e in one.events] == [e.event_id for e in other.events]
    assert one.events[0].event_id == event_id_for(PIXEL, "lead:123456789012345", "Lead")


def test_pixel_event_id_is_reused_for_the_lead_event_only() -> None:
    row = lead("SQL", changed=ago(hours=1), pixel_event_id="px-42")
    events = decide(row).events
    assert [e.event_id for e in events] == [
        "px-42",
        event_id_for(PIXEL, "key:L1", "QualifiedLead"),
        event_id_for(PIXEL, "key:L1", "Schedule"),
    ]
    assert events[0].payload["event_id"] == "px-42"


# ---- the ledger's history -----------------------------------------------------------------


def test_event_already_sent_is_not_planned_again() -> None:
    decision = decide(lead("MQL", changed=ago(hours=1)), sent("Lead"))
    assert names(decision) == ["QualifiedLead"]


def test_row_whose_events_were_all_sent_is_already_sent() -> None:
    decision = decide(lead("MQL", changed=ago(hours=1)), sent("Lead", "QualifiedLead"))
    assert decision.outcome == "already_sent"
    assert decision.events == []


def test_event_left_sending_is_planned_again_with_the_same_event_id() -> None:
    history = LeadHistory(
        events={"Lead": EventRecord("Lead", "interrupted-id", "sending", ts(ago(hours=1)))}
    )
    [event] = decide(lead("New", changed=ago(hours=1)), history).events
    assert event.event_id == "interrupted-id"
    assert event.resend is True


def test_fresh_event_is_not_a_resend() -> None:
    [event] = decide(lead("New", changed=ago(hours=1))).events
    assert event.resend is False


def test_expired_event_is_never_planned_again() -> None:
    decision = decide(lead("New", changed=ago(hours=1)), sent("Lead", state="expired"))
    assert decision.events == []
    assert decision.outcome == "expired"


def test_failed_event_marked_for_retry_is_planned_again() -> None:
    history = LeadHistory(
        events={"Lead": EventRecord("Lead", "failed-id", "failed", ts(ago(hours=1)), retry=True)}
    )
    [event] = decide(lead("New", changed=ago(hours=1)), history).events
    assert event.event_id == "failed-id"


def test_failed_event_not_retried_until_the_row_changes() -> None:
    row = lead("New", changed=ago(hours=1))
    [first] = decide(row).events
    history = LeadHistory(
        events={
            "Lead": EventRecord(
                "Lead", first.event_id, "failed", first.event_time, fingerprint=first.fingerprint
            )
        }
    )
    unchanged = decide(row, history)
    assert unchanged.events == []
    assert unchanged.outcome == "invalid"
    assert "refused by Meta before" in unchanged.message

    fixed = decide(replace(row, identity={"em": "asha.fixed@example.com"}), history)
    assert names(fixed) == ["Lead"]
    assert fixed.events[0].event_id == first.event_id


# ---- payload (docs/meta-errors.md, docs/meta-events.md) --


def test_payload_is_a_conversion_leads_event_with_the_raw_status() -> None:
    decision = decide(lead(" mql ", changed=ago(hours=1), created=ago(days=1)))
    lead_event, qualified = decision.events
    payload = qualified.payload
    assert payload["event_name"] == "QualifiedLead"
    assert payload["event_time"] == ts(ago(hours=1))
    assert type(payload["event_time"]) is int
    assert payload["event_id"] == qualified.event_id
    assert payload["action_source"] == "system_generated"
    assert payload["custom_data"] == {
        "lead_status": "mql",
        "event_source": "crm",
        "lead_event_source": "Acme CRM sheet",
        "value": 1000,
        "currency": "EUR",  # the stage's currency beats [meta] currency
    }
    user_data = payload["user_data"]
    assert isinstance(user_data, dict)
    assert user_data["em"] == hashlib.sha256(EMAIL.encode()).hexdigest()
    assert "country" not in user_data  # no Country cell, no phone: no country is claimed
    assert match_keys(user_data).strength == "good"
    # The Lead event: stage value, [meta] currency.
    assert lead_event.payload["custom_data"]["value"] == 100  # type: ignore[index]
    assert lead_event.payload["custom_data"]["currency"] == "INR"  # type: ignore[index]


def test_row_value_and_currency_override_the_current_stage_only() -> None:
    decision = decide(lead("MQL", changed=ago(hours=1), value=250.0, currency="USD"))
    lead_event, qualified = (e.payload["custom_data"] for e in decision.events)
    assert qualified["value"] == 250.0  # type: ignore[index]
    assert qualified["currency"] == "USD"  # type: ignore[index]
    # The backfilled Lead carries its own stage value, not the row's deal value.
    assert lead_event["value"] == 100  # type: ignore[index]


def test_row_value_without_currency_takes_the_stage_then_meta_currency() -> None:
    decision = decide(lead("MQL", changed=ago(hours=1), value=250.0))
    currencies = [e.payload["custom_data"]["currency"] for e in decision.events]  # type: ignore[index]
    assert currencies == ["INR", "EUR"]


def test_stage_without_value_sends_neither_value_nor_currency() -> None:
    decision = decide(lead("Opportunity", changed=ago(hours=1)), sent(*FUNNEL[:3]))
    [event] = decision.events
    custom = event.payload["custom_data"]
    assert isinstance(custom, dict)
    assert "value" not in custom and "currency" not in custom


def test_action_source_comes_from_the_config() -> None:
    decision = decide(lead("New", changed=ago(hours=1)), config=make_config("phone_call"))
    assert decision.events[0].payload["action_source"] == "phone_call"


# ---- the plan as a whole ------------------------------------------------------------------


def test_plan_events_are_oldest_lead_first_and_funnel_order_within_a_lead() -> None:
    rows = [
        lead("SQL", changed=ago(hours=1), key="recent", row=2),
        lead("MQL", changed=ago(days=3), key="old", row=3),
        lead("New", changed=ago(days=1), key="middle", row=4),
    ]
    result = plan(rows, CONFIG, {}, NOW)
    assert [(e.lead_key, e.event_name) for e in result.events] == [
        ("old", "Lead"),
        ("old", "QualifiedLead"),
        ("middle", "Lead"),
        ("recent", "Lead"),
        ("recent", "QualifiedLead"),
        ("recent", "Schedule"),
    ]


def test_plan_counts_outcomes() -> None:
    rows = [
        lead("New", changed=ago(hours=1), key="a", row=2),
        lead("Ghosted", key="b", row=3),
        lead("New", changed=ago(days=9), key="c", row=4),
        lead("New", key="a", row=5),
    ]
    counts = plan(rows, CONFIG, {}, NOW).counts()
    assert counts == {"due": 1, "skipped": 1, "expired": 1, "duplicate": 1}


def test_only_keys_restricts_the_plan_to_those_leads() -> None:
    rows = [lead("New", changed=ago(hours=1), key=k, row=i) for i, k in enumerate("abc", 2)]
    result = plan(rows, CONFIG, {}, NOW, only_keys={"b"})
    assert [d.lead_key for d in result.decisions] == ["b"]


def test_plan_is_pure_same_inputs_same_plan() -> None:
    rows = [
        lead("Customer", changed=ago(hours=3), created=ago(days=2), key=f"k{i}") for i in range(5)
    ]
    first = plan(rows, CONFIG, {}, NOW)
    again = plan(rows, CONFIG, {}, NOW)
    assert [e.payload for e in first.events] == [e.payload for e in again.events]


# ---- properties over many passes ----------------------------------------------------------

_STATUSES = ["", "New", "MQL", "SQL", "Opportunity", "Customer", "On hold", "Disqualified", "?"]
_KEYS = ("k0", "k1", "k2")
_MINUTE = timedelta(minutes=1)
_FUNNEL_INDEX = {s.event: s.index for s in CONFIG.stage_map.stages}
_cell = st.tuples(
    st.sampled_from(_STATUSES),
    st.one_of(st.none(), st.integers(-8, 9 * 24 * 60)),  # minutes before this pass's now
    st.sampled_from([{"em": EMAIL}, {"ph": "+91 98765 43210"}, {"fn": "A", "ge": "f"}]),
)
_pass = st.tuples(st.integers(0, 3 * 24 * 60), st.tuples(*[_cell] * len(_KEYS)))


def _record(history: dict[str, LeadHistory], result: Plan) -> None:
    """What the ledger does after a pass: planned events become sent, observations become
    transitions."""
    for event in result.events:
        old = history.get(event.lead_key, LeadHistory())
        record = EventRecord(event.event_name, event.event_id, "sent", event.event_time)
        history[event.lead_key] = LeadHistory(
            {**old.events, event.event_name: record}, old.transitions
        )
    for seen in result.observations:
        old = history.get(seen.lead_key, LeadHistory())
        transitions = [*old.transitions, Transition(seen.status, seen.at)]
        history[seen.lead_key] = LeadHistory(old.events, transitions)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    created=st.tuples(*[st.one_of(st.none(), st.integers(0, 10 * 24 * 60))] * len(_KEYS)),
    passes=st.lists(_pass, min_size=1, max_size=8),
)
def test_across_passes_no_event_is_planned_twice_and_every_event_is_in_order_and_window(
    created: tuple[int | None, ...], passes: list[tuple[int, tuple[Any, ...]]]
) -> None:
    now = NOW
    history: dict[str, LeadHistory] = {}
    planned: set[tuple[str, str]] = set()
    window = timedelta(days=7) - timedelta(minutes=10)  # Meta's 7 days less our margin
    for gap, cells in passes:
        now += gap * _MINUTE
        rows = [
            LeadRow(
                row_number=i + 2,
                key=key,
                status=status,
                status_changed_at=None if minutes is None else now - minutes * _MINUTE,
                created_at=None if created[i] is None else NOW - created[i] * _MINUTE,
                identity=identity,
            )
            for i, (key, (status, minutes, identity)) in enumerate(zip(_KEYS, cells, strict=True))
        ]
        result = plan(rows, CONFIG, history, now)
        for decision in result.decisions:
            indexes = [_FUNNEL_INDEX[e.event_name] for e in decision.events]
            assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
            times = [e.event_time for e in decision.events]
            assert times == sorted(times), decision
        for event in result.events:
            key = (event.lead_key, event.event_name)
            assert key not in planned, f"{key} planned twice"
            planned.add(key)
            assert ts(now - window) <= event.event_time <= ts(now), event
        _record(history, result)


def test_fingerprints_are_the_payloads_whatever_order_leads_are_planned_in() -> None:
    """A fingerprint is stored in the ledger and compared with a later pass's: it stays the
    SHA-256 of the payload's sorted items as text, though a lead's events share the text of
    their user_data (worked out once per lead)."""
    rows = [
        lead("Customer", ago(days=1), key=f"L{i}", row=i + 2, identity={"em": f"p{i}@x.co"})
        for i in range(3)
    ]
    decisions = plan(rows, CONFIG, {}, NOW).decisions
    events = [e for d in decisions for e in d.events]
    assert len(events) == 15 and len({id(e.user_data) for e in events}) == 3
    again = [e for d in reversed(plan(rows, CONFIG, {}, NOW).decisions) for e in d.events]
    for event in [*events, *again]:
        text = repr(sorted(event.payload.items()))
        assert event.fingerprint == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert len({e.fingerprint for e in events}) == 15
