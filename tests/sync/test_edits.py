"""sync/edits.py judge(): which rows of an edit event changed, which moved, which were only
seen or refused, which were changed back before they settled, and which lead each change
belongs to, without a sheet or a ledger (the rules in the module docstring, docs/edits.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sheet_bridge.config import parse_config
from sheet_bridge.local.demo_leads import DEMO_STAGES
from sheet_bridge.sync.edits import EditedRow, EditVerdict, judge
from sheet_bridge.sync.ledger import QueuedEdit
from sheet_bridge.sync.plan import EventRecord, LeadHistory, LeadRow, Transition

AT = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)
EARLIER = AT - timedelta(days=2)
# The least a config holds (a local emulator's endpoint, a pixel, the status column).
MINIMAL: dict[str, Any] = {
    "sheets": {
        "spreadsheet_id": "s",
        "tab": "Leads",
        "credentials": "anonymous",
        "api_endpoint": "http://127.0.0.1:9",
    },
    "meta": {"pixel_id": "1"},
    "columns": {"status": "Lead Status"},
    "stages": DEMO_STAGES,
}
STAGES = parse_config(MINIMAL).stage_map


def lead(row: int, key: str, status: str) -> LeadRow:
    return LeadRow(row_number=row, key=key, status=status)


def at_status(status: str) -> LeadHistory:
    return LeadHistory(transitions=(Transition(status, EARLIER, "seen", EARLIER),))


def judged(
    edited: Sequence[EditedRow],
    current: Mapping[int, LeadRow],
    history: Mapping[str, LeadHistory],
    queued: Mapping[str, QueuedEdit] | None = None,
    *,
    now: datetime = AT,
    settle: timedelta = timedelta(0),
) -> EditVerdict:
    return judge(edited, AT, now, current, history, queued or {}, STAGES, settle)


def recorded(verdict: EditVerdict) -> list[tuple[str, str, datetime]]:
    """The transitions an edit records: (lead, status, at)."""
    return [(c.lead_key, c.queued.status, c.queued.at) for c in verdict.record if c.queued]


def test_a_keyed_row_still_in_place_is_changed_only_when_its_status_is_new_to_the_ledger() -> None:
    current = {2: lead(2, "kA", "MQL"), 3: lead(3, "kB", "New")}
    history = {"kA": at_status("New"), "kB": at_status("new ")}  # same status, other case

    verdict = judged([EditedRow(2, "MQL", "kA"), EditedRow(3, "New", "kB")], current, history)

    assert (verdict.changed, verdict.unchanged, verdict.moved) == ([2], [3], [])
    assert recorded(verdict) == [("kA", "MQL", AT)]


def test_a_key_in_no_row_read_is_refused_and_nothing_is_recorded() -> None:
    """Issue 20: a key the sheet does not show where the backend read is refused (a sort
    moved the lead away, or the caller sent any key at all)."""
    current = {2: lead(2, "kB", "New")}  # kA's row now holds kB
    history = {"kA": at_status("New"), "kB": at_status("New")}

    verdict = judged([EditedRow(2, "MQL", "kA"), EditedRow(3, "MQL", "junk")], current, history)

    assert (verdict.changed, verdict.refused, verdict.record) == ([], [2, 3], [])


def test_a_row_without_key_showing_another_status_now_is_moved_and_nothing_is_recorded() -> None:
    current = {2: lead(2, "Lderived", "New")}

    verdict = judged([EditedRow(2, "MQL", None)], current, {})

    assert (verdict.changed, verdict.moved, verdict.record) == ([], [2], [])


def test_a_row_without_key_showing_its_status_is_the_lead_read_there_now() -> None:
    current = {4: lead(4, "Lderived", "SQL")}
    history = {"Lderived": at_status("MQL")}

    verdict = judged([EditedRow(4, "SQL", None)], current, history)

    assert verdict.changed == [4]
    assert recorded(verdict) == [("Lderived", "SQL", AT)]


def test_blank_statuses_and_cleared_rows_are_never_changes() -> None:
    current = {2: lead(2, "kA", "")}
    history = {"kA": at_status("MQL")}

    verdict = judged([EditedRow(2, "", "kA"), EditedRow(3, "", None)], current, history)

    assert (verdict.changed, verdict.unchanged, verdict.moved, verdict.record) == (
        [],
        [2, 3],
        [],
        [],
    )


def test_a_lead_the_ledger_never_saw_without_an_old_value_is_seen_not_changed() -> None:
    """Issue 20: a paste, sort or fill-down over leads never synced is no change."""
    current = {2: lead(2, "kNew", "Customer"), 3: lead(3, "kOther", "MQL")}

    verdict = judged([EditedRow(2, "Customer", "kNew"), EditedRow(3, "MQL", None)], current, {})

    assert (verdict.changed, verdict.seen, verdict.record) == ([], [2, 3], [])
    assert "seen, not a change" in verdict.words[2]


def test_a_lead_the_ledger_never_saw_typed_from_another_status_is_a_change_recorded_once() -> None:
    current = {2: lead(2, "kNew", "MQL"), 9: lead(9, "kNew", "MQL")}

    verdict = judged(
        [EditedRow(2, "MQL", "kNew", previous="New"), EditedRow(9, "MQL", "kNew")], current, {}
    )

    assert verdict.changed == [2]
    assert verdict.unchanged == [9]
    assert recorded(verdict) == [("kNew", "MQL", AT)]
    assert verdict.pending[2].previous == "New"


def test_an_adopted_lead_with_events_but_no_transitions_is_known_at_its_deepest_stage() -> None:
    events = {
        name: EventRecord(name, f"id-{name}", "sent", int(EARLIER.timestamp()))
        for name in ("Lead", "QualifiedLead")
    }
    history = {"kA": LeadHistory(events=events), "kB": LeadHistory(events=events)}
    current = {2: lead(2, "kA", "MQL"), 3: lead(3, "kB", "SQL")}

    verdict = judged([EditedRow(2, "MQL", "kA"), EditedRow(3, "SQL", "kB")], current, history)

    assert (verdict.changed, verdict.unchanged) == ([3], [2])


def test_the_old_one_row_form_with_the_same_old_and_new_value_is_no_change() -> None:
    current = {2: lead(2, "kA", "MQL")}

    verdict = judged([EditedRow(2, "MQL", None, previous="MQL")], current, {})

    assert (verdict.changed, verdict.unchanged, verdict.record) == ([], [2], [])


SETTLE = timedelta(seconds=120)


def settling(status: str, previous: str, since: datetime) -> QueuedEdit:
    return QueuedEdit("kA", 2, previous, status, since, since, since + SETTLE)


def test_a_change_back_before_the_edit_settled_withdraws_it_and_says_so() -> None:
    since = AT - timedelta(seconds=40)
    current = {2: lead(2, "kA", "New")}
    history = {"kA": LeadHistory(transitions=(Transition("Customer", since, "edit", since),))}

    verdict = judged(
        [EditedRow(2, "New", "kA", previous="Customer")],
        current,
        history,
        {"kA": settling("Customer", "New", since)},
        settle=SETTLE,
    )

    assert (verdict.changed, verdict.withdrawn) == ([], [2])
    assert [(c.lead_key, c.withdraw_since, c.queued) for c in verdict.record] == [
        ("kA", since, None)
    ]
    assert verdict.words[2] == "New → Customer → New within 40 s: nothing sent"


def test_another_change_before_the_edit_settled_replaces_it_from_the_status_that_held() -> None:
    since = AT - timedelta(seconds=30)
    current = {2: lead(2, "kA", "SQL")}

    verdict = judged(
        [EditedRow(2, "SQL", "kA")],
        current,
        {"kA": at_status("New")},
        {"kA": settling("Customer", "New", since)},
        settle=SETTLE,
    )

    assert verdict.changed == [2]
    (change,) = verdict.record
    assert change.withdraw_since == since  # the mis-click's transition goes
    # The change keeps where it started: a change back withdraws it from the mis-click on.
    assert change.queued == QueuedEdit("kA", 2, "New", "SQL", since, AT, AT + SETTLE)


def test_an_edit_that_settled_is_the_status_that_held_for_the_next_one() -> None:
    since = AT - timedelta(seconds=300)  # due 3 minutes ago, not sent yet
    current = {2: lead(2, "kA", "New")}
    history = {"kA": LeadHistory(transitions=(Transition("Customer", since, "edit", since),))}

    verdict = judged(
        [EditedRow(2, "New", "kA")],
        current,
        history,
        {"kA": settling("Customer", "New", since)},
        settle=SETTLE,
    )

    assert (verdict.changed, verdict.withdrawn) == ([2], [])
    assert recorded(verdict) == [("kA", "New", AT)]
