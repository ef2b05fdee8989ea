"""sync/edits.py judge(): which rows of an edit event changed, which moved, and which lead each
change belongs to, without a sheet or a ledger (the rules in the module docstring)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sheet_bridge.config import parse_config
from sheet_bridge.local.demo_leads import DEMO_STAGES
from sheet_bridge.sync.edits import EditedRow, judge
from sheet_bridge.sync.plan import EventRecord, LeadHistory, LeadRow, Transition

AT = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)
EARLIER = AT - timedelta(days=2)
STAGES = parse_config(
    {
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
).stage_map


def lead(row: int, key: str, status: str) -> LeadRow:
    return LeadRow(row_number=row, key=key, status=status)


def at_status(status: str) -> LeadHistory:
    return LeadHistory(transitions=(Transition(status, EARLIER, "seen", EARLIER),))


def test_a_keyed_row_still_in_place_is_changed_only_when_its_status_is_new_to_the_ledger() -> None:
    current = {2: lead(2, "kA", "MQL"), 3: lead(3, "kB", "New")}
    history = {"kA": at_status("New"), "kB": at_status("new ")}  # same status, other case

    verdict = judge(
        [EditedRow(2, "MQL", "kA"), EditedRow(3, "New", "kB")], AT, current, history, STAGES
    )

    assert (verdict.changed, verdict.unchanged, verdict.moved) == ([2], [3], [])
    assert verdict.record == [("kA", "MQL", AT, "edit")]
    assert verdict.send == [current[2]]


def test_a_keyed_row_sorted_away_is_recorded_for_its_key_and_never_sent_from_the_row() -> None:
    current = {2: lead(2, "kB", "New")}  # kA's row now holds kB
    history = {"kA": at_status("New"), "kB": at_status("New")}

    verdict = judge([EditedRow(2, "MQL", "kA")], AT, current, history, STAGES)

    assert (verdict.changed, verdict.unchanged, verdict.moved) == ([], [], [2])
    assert verdict.record == [("kA", "MQL", AT, "edit")]
    assert verdict.send == []


def test_a_row_without_key_showing_another_status_now_is_moved_and_nothing_is_recorded() -> None:
    current = {2: lead(2, "Lderived", "New")}

    verdict = judge([EditedRow(2, "MQL", None)], AT, current, {}, STAGES)

    assert (verdict.changed, verdict.moved, verdict.record) == ([], [2], [])


def test_a_row_without_key_showing_its_status_is_the_lead_read_there_now() -> None:
    current = {4: lead(4, "Lderived", "SQL")}
    history = {"Lderived": at_status("MQL")}

    verdict = judge([EditedRow(4, "SQL", None)], AT, current, history, STAGES)

    assert verdict.changed == [4]
    assert verdict.record == [("Lderived", "SQL", AT, "edit")]


def test_blank_statuses_and_cleared_rows_are_never_changes() -> None:
    current = {2: lead(2, "kA", "")}
    history = {"kA": at_status("MQL")}

    verdict = judge([EditedRow(2, "", "kA"), EditedRow(3, "", None)], AT, current, history, STAGES)

    assert (verdict.changed, verdict.unchanged, verdict.moved, verdict.record) == (
        [],
        [2, 3],
        [],
        [],
    )


def test_a_lead_the_ledger_never_saw_is_changed_and_the_same_key_twice_is_recorded_once() -> None:
    current = {2: lead(2, "kNew", "MQL"), 9: lead(9, "kNew", "MQL")}

    verdict = judge(
        [EditedRow(2, "MQL", "kNew"), EditedRow(9, "MQL", "kNew")], AT, current, {}, STAGES
    )

    assert verdict.changed == [2]
    assert verdict.unchanged == [9]
    assert verdict.record == [("kNew", "MQL", AT, "edit")]


def test_an_adopted_lead_with_events_but_no_transitions_is_known_at_its_deepest_stage() -> None:
    events = {
        name: EventRecord(name, f"id-{name}", "sent", int(EARLIER.timestamp()))
        for name in ("Lead", "QualifiedLead")
    }
    history = {"kA": LeadHistory(events=events), "kB": LeadHistory(events=events)}
    current = {2: lead(2, "kA", "MQL"), 3: lead(3, "kB", "SQL")}

    verdict = judge(
        [EditedRow(2, "MQL", "kA"), EditedRow(3, "SQL", "kB")], AT, current, history, STAGES
    )

    assert (verdict.changed, verdict.unchanged) == ([3], [2])


def test_the_old_one_row_form_with_the_same_old_and_new_value_is_no_change() -> None:
    current = {2: lead(2, "kA", "MQL")}

    verdict = judge([EditedRow(2, "MQL", None, previous="MQL")], AT, current, {}, STAGES)

    assert (verdict.changed, verdict.unchanged, verdict.record) == ([], [2], [])
