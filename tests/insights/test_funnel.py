"""The funnel report on ledgers with known contents: counts, rates, medians, shares and advice
(docs/event-times.md, docs/meta-events.md, docs/insights.md), every number asserted
exactly."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sheet_bridge.config import BridgeConfig
from sheet_bridge.insights.funnel import Advice, FunnelReport, funnel_report
from sheet_bridge.sync.ledger import SqliteLedger
from tests.sync.ledgers import NOW, STAGES, W11, WHERE, LedgerWriter, report_config, week

FUNNEL = ("Lead", "QualifiedLead", "Schedule", "StartTrial", "Purchase")

Build = Callable[..., tuple[LedgerWriter, Callable[..., FunnelReport]]]


@pytest.fixture
def build(tmp_path: Path) -> Build:
    """build(stages=None) → (writer, report): write events, then report(**kw) as of NOW."""

    def make(stages: list[dict[str, Any]] | None = None) -> Any:
        config = report_config(tmp_path, stages)
        ledger = SqliteLedger(config.ledger_location({}))
        writer = LedgerWriter(ledger, config)

        def report(**kw: Any) -> FunnelReport:
            return funnel_report(ledger.events(WHERE), config, NOW, **kw)

        return writer, report

    return make


def advice(report: FunnelReport, topic: str) -> Advice:
    [found] = [a for a in report.advice if a.topic == topic]
    return found


def stage(report: FunnelReport, event: str) -> Any:
    [found] = [s for s in report.stages if s.event == event]
    return found


# ---- weekly counts ------------------------------------------------------------------------


def test_weeks_are_the_last_8_iso_weeks_in_utc_the_current_one_incomplete(build: Build) -> None:
    _, report = build()
    weeks = report().weeks
    assert [w.label for w in weeks] == [f"2026-W{n:02d}" for n in range(4, 12)]
    assert weeks[0].start.isoformat() == "2026-01-19"
    assert weeks[-1].start.isoformat() == "2026-03-09"
    assert [w.complete for w in weeks] == [True] * 7 + [False]


def test_weekly_counts_are_sent_events_by_event_time_per_positive_stage(build: Build) -> None:
    writer, report = build()
    writer.event("old", "Lead", week(3))  # before the window
    writer.event("a", "Lead", week(4))
    writer.event("b", "Lead", week(10))
    writer.event("c", "Lead", week(10))
    writer.event("c", "QualifiedLead", week(10, days=3))
    writer.event("d", "Lead", W11)  # Monday 00:00 UTC belongs to the new week
    writer.event("e", "Lead", week(11, days=1))
    writer.event("f", "Lead", week(10), state="failed")  # never reached Meta
    writer.event("g", "Lead", week(9), state="expired")  # never reached Meta
    writer.event("h", "Disqualified", week(10))
    result = report()
    assert stage(result, "Lead").weekly == (1, 0, 0, 0, 0, 0, 2, 2)
    assert stage(result, "QualifiedLead").weekly == (0, 0, 0, 0, 0, 0, 1, 0)
    assert stage(result, "Purchase").weekly == (0,) * 8
    assert [s.event for s in result.stages] == list(FUNNEL)  # never Contact (send = false)
    assert result.other_sent == {"Disqualified": 1}
    assert result.series()["Lead"] == [1, 0, 0, 0, 0, 0, 2, 2]


# ---- conversion and time to stage ---------------------------------------------------------


def test_conversion_counts_sent_or_expired_stages_between_consecutive_stages(
    build: Build,
) -> None:
    writer, report = build()
    t0 = week(9, days=0)
    writer.event("a", "Lead", t0)
    writer.event("a", "QualifiedLead", t0 + timedelta(hours=10))
    writer.event("a", "Schedule", t0 + timedelta(hours=30))
    writer.event("b", "Lead", t0)
    writer.event("b", "QualifiedLead", t0 + timedelta(hours=20), state="expired")
    writer.event("c", "Lead", t0)
    writer.event("d", "Lead", t0)
    writer.event("e", "Lead", t0, state="failed")  # not reached
    result = report()
    lead, qualified, schedule, trial, purchase = result.stages
    assert (lead.reached, lead.to_next, lead.conversion_to_next) == (4, 2, 0.5)
    assert (qualified.reached, qualified.to_next, qualified.conversion_to_next) == (2, 1, 0.5)
    assert (schedule.reached, schedule.to_next, schedule.conversion_to_next) == (1, 0, 0.0)
    assert (trial.reached, trial.to_next, trial.conversion_to_next) == (0, 0, None)
    assert (purchase.reached, purchase.to_next, purchase.conversion_to_next) == (0, None, None)


def test_median_time_is_from_the_leads_lead_event_to_each_stage(build: Build) -> None:
    writer, report = build()
    t0 = week(9, days=0)
    for lead, hours in (("a", 10), ("b", 20), ("c", 60)):
        writer.event(lead, "Lead", t0 + timedelta(hours=1))
        writer.event(lead, "QualifiedLead", t0 + timedelta(hours=1 + hours))
    writer.event("a", "Schedule", t0 + timedelta(hours=31))
    writer.event("z", "QualifiedLead", t0)  # no Lead event: no time from lead
    result = report()
    assert stage(result, "Lead").median_hours_from_lead is None
    assert stage(result, "QualifiedLead").median_hours_from_lead == 20.0
    assert stage(result, "Schedule").median_hours_from_lead == 30.0
    assert stage(result, "StartTrial").median_hours_from_lead is None


# ---- freshness and identifiers ------------------------------------------------------------


def test_share_sent_more_than_2_and_24_hours_after_the_status_change(build: Build) -> None:
    writer, report = build()
    for i, late in enumerate((0.5, 2, 3, 24, 25)):  # exactly 2 h and 24 h are not "more than"
        writer.event(f"k{i}", "Lead", week(10), sent_after=timedelta(hours=late))
    writer.event("x", "Lead", week(10), sent_after=timedelta(hours=50), state="failed")
    result = report()
    assert (result.sent_events, result.sent_late, result.sent_very_late) == (5, 3, 1)
    assert result.share_late == 0.6
    assert result.share_very_late == 0.2


def test_lead_id_share_and_strength_of_each_leads_latest_event(build: Build) -> None:
    writer, report = build()
    lead_id = "120214563987456"
    writer.event("a", "Lead", week(10), identity={"em": "a@example.com", "lead_id": lead_id})
    writer.event("b", "Lead", week(10), identity={"em": "b@example.com", "lead_id": lead_id})
    writer.event("b", "QualifiedLead", week(10, days=3), identity={"em": "b@example.com"})
    writer.event("c", "Lead", week(10), identity={"fbp": "fb.1.1596403881668.1116446470"})
    result = report()
    assert (result.leads, result.leads_with_lead_id) == (3, 2)
    assert result.share_with_lead_id == 2 / 3
    assert dict(result.strength) == {"strong": 1, "good": 1, "weak": 1, "none": 0}


# ---- what to optimise on (docs/insights.md: ~50 a week) --


def test_lead_at_49_a_week_is_too_low_even_for_lead(build: Build) -> None:
    writer, report = build()
    for n in (7, 8, 9, 10):  # the last 4 complete weeks
        writer.leads(49, week(n), prefix=f"w{n}-")
    writer.leads(10, week(6), prefix="w6-")  # older than the 4 weeks: not averaged
    writer.leads(10, week(11), prefix="w11-")  # this week is not complete: not averaged
    result = report()
    tip = advice(result, "optimise")
    assert stage(result, "Lead").average_per_week == 49.0
    assert tip.verdict == "warn"
    assert tip.numbers["optimise_on"] == "Lead"
    assert tip.numbers["average_per_week"]["Lead"] == 49.0
    assert tip.numbers["weeks"] == ["2026-W07", "2026-W08", "2026-W09", "2026-W10"]
    assert "too low even for Lead" in tip.text
    assert "49.0 a week" in tip.text


def test_lead_at_50_a_week_is_the_event_to_optimise_on(build: Build) -> None:
    writer, report = build()
    for n in (7, 8, 9, 10):
        writer.leads(50, week(n), prefix=f"w{n}-")
    tip = advice(report(), "optimise")
    assert tip.verdict == "ok"
    assert tip.numbers["optimise_on"] == "Lead"
    assert tip.text.startswith("Optimise on Lead: it averaged 50.0 a week")
    assert "QualifiedLead, averaged 0.0" in tip.text


def test_the_deepest_stage_reaching_50_a_week_wins_not_a_deeper_one(build: Build) -> None:
    writer, report = build()
    for n in (7, 8, 9, 10):
        writer.leads(60, week(n), prefix=f"w{n}-")
        writer.leads(50, week(n, days=3), prefix=f"w{n}-", event_name="QualifiedLead")
        writer.leads(49, week(n, days=4), prefix=f"w{n}-", event_name="Schedule")
    tip = advice(report(), "optimise")
    assert tip.numbers["optimise_on"] == "QualifiedLead"
    assert tip.numbers["average_per_week"] == {
        "Lead": 60.0,
        "QualifiedLead": 50.0,
        "Schedule": 49.0,
        "StartTrial": 0.0,
        "Purchase": 0.0,
    }
    assert "Schedule, averaged 49.0 (below 50)" in tip.text


# ---- Conversion Leads fit, Sales Funnel panel (docs/meta-events.md, README) ---------------


def _leads_last_month(writer: LedgerWriter, count: int, qualified: int) -> None:
    """`count` Lead events 3 days to ~11 days ago; the first `qualified` reach QualifiedLead
    48 h later; one more Lead 31 days ago (outside the month)."""
    for i in range(count):
        at = NOW - timedelta(days=3, hours=i)
        writer.event(f"m{i}", "Lead", at)
        if i < qualified:
            writer.event(f"m{i}", "QualifiedLead", at + timedelta(hours=48))
    writer.event("older", "Lead", NOW - timedelta(days=31))


def test_conversion_leads_fit_at_200_leads_a_month(build: Build) -> None:
    writer, report = build()
    _leads_last_month(writer, 200, qualified=20)
    result = report()
    tip = advice(result, "conversion_leads")
    assert result.leads_last_30_days == 200
    assert tip.verdict == "ok"
    assert tip.numbers["fits"] is True
    assert tip.numbers["target_stage"] == "QualifiedLead"
    assert tip.numbers["median_days_to_target"] == 2.0
    # 20 of the 201 leads that reached Lead in the window (the older one included).
    assert tip.numbers["conversion_to_target"] == round(20 / 201, 4)
    assert "200 Lead events in the last 30 days (≥ 200)" in tip.text


def test_conversion_leads_does_not_fit_at_199_leads_a_month(build: Build) -> None:
    writer, report = build()
    _leads_last_month(writer, 199, qualified=20)
    result = report()
    tip = advice(result, "conversion_leads")
    assert result.leads_last_30_days == 199
    assert tip.verdict == "warn"
    assert tip.numbers["fits"] is False
    assert "199 Lead events in the last 30 days (< 200)" in tip.text
    assert result.sales_funnel.unlocked is False


def test_conversion_leads_flags_a_slow_target_and_a_rate_above_40_percent(build: Build) -> None:
    writer, report = build()
    writer.event("a", "Lead", NOW - timedelta(days=29))
    writer.event("a", "QualifiedLead", NOW - timedelta(hours=12))  # 28.5 days later
    writer.event("b", "Lead", NOW - timedelta(days=2))
    tip = advice(report(), "conversion_leads")
    assert tip.numbers["median_days_to_target"] == 28.5
    assert tip.numbers["conversion_to_target"] == 0.5
    assert "reached a median 28.5 days after Lead (over 28)" in tip.text
    assert "1 of 2 leads (50.0%) reached QualifiedLead (outside 1%–40%)" in tip.text


def test_conversion_leads_target_can_be_named(build: Build) -> None:
    writer, report = build()
    writer.event("a", "Lead", NOW - timedelta(days=5))
    writer.event("a", "Schedule", NOW - timedelta(days=4))
    tip = advice(report(target_event="Schedule"), "conversion_leads")
    assert tip.numbers["target_stage"] == "Schedule"
    assert tip.numbers["median_days_to_target"] == 1.0


def test_sales_funnel_lists_positive_stages_in_order_and_negative_ones_as_other(
    build: Build,
) -> None:
    writer, report = build()
    _leads_last_month(writer, 200, qualified=20)
    guide = report().sales_funnel
    assert guide.positive == FUNNEL
    assert guide.other == ("Disqualified",)
    # The first event was sent 31 days ago (+10 min): enough days, and 200 leads a month.
    assert guide.unlocked is True
    assert guide.leads_last_30_days == 200


def test_sales_funnel_stays_locked_before_7_days_of_data(build: Build) -> None:
    writer, report = build()
    for i in range(200):
        writer.event(f"k{i}", "Lead", NOW - timedelta(days=6, hours=23) + timedelta(minutes=i))
    result = report()
    guide = result.sales_funnel
    assert guide.leads_last_30_days == 200
    assert round(guide.days_of_data, 3) == round(6 + 23 / 24 - 10 / 1440, 3)
    assert guide.unlocked is False
    tip = advice(result, "sales_funnel")
    assert tip.verdict == "info"
    assert "7.0 days of data" not in tip.text and "(needs 7)" in tip.text


# ---- values (docs/insights.md: a value with every event, in ratio) --


def test_values_rising_along_the_funnel_are_fine_with_their_ratios(build: Build) -> None:
    _, report = build()
    tip = advice(report(), "values")
    assert tip.verdict == "ok"
    assert tip.numbers["ratio_to_first"] == {
        "Lead": 1.0,
        "QualifiedLead": 10.0,
        "Schedule": 50.0,
        "StartTrial": 200.0,
        "Purchase": 500.0,
    }
    assert "Purchase ×500" in tip.text


def test_values_missing_or_not_rising_are_named(build: Build) -> None:
    stages = [dict(s) for s in STAGES]
    stages[2]["value"] = 1000  # Schedule no more than QualifiedLead
    del stages[3]["value"]  # StartTrial without a value
    _, report = build(stages)
    tip = advice(report(), "values")
    assert tip.verdict == "warn"
    assert tip.numbers["values"]["StartTrial"] is None
    assert "StartTrial has no value" in tip.text
    assert "Schedule (1,000) is not worth more than QualifiedLead (1,000)" in tip.text


def test_values_actually_sent_that_do_not_rise_are_named(build: Build) -> None:
    writer, report = build()
    writer.event("a", "Lead", week(10), value=75000)  # the row's own deal value
    writer.event("a", "QualifiedLead", week(10, days=3))
    tip = advice(report(), "values")
    assert tip.verdict == "warn"
    assert tip.numbers["median_value_sent"] == {"Lead": 75000.0, "QualifiedLead": 1000.0}
    assert "median QualifiedLead 1,000 vs Lead 75,000" in tip.text


# ---- output -------------------------------------------------------------------------------


def test_empty_ledger_reports_zeros_and_says_volume_is_too_low(build: Build) -> None:
    _, report = build()
    result = report()
    assert result.sent_events == 0
    assert result.share_late is None and result.share_with_lead_id is None
    assert advice(result, "optimise").verdict == "warn"
    assert result.sales_funnel.days_of_data == 0.0
    json.dumps(result.to_json())  # serialisable as it is


def test_json_and_text_carry_the_same_numbers(build: Build) -> None:
    writer, report = build()
    writer.event("a", "Lead", week(10), sent_after=timedelta(hours=3))
    writer.event("a", "QualifiedLead", week(10, days=3))
    writer.event("b", "Lead", week(11))
    result = report()
    data = json.loads(json.dumps(result.to_json()))
    assert data["stages"][0]["weekly"] == [0, 0, 0, 0, 0, 0, 1, 1]
    assert data["stages"][0]["conversion_to_next"] == 0.5
    assert data["freshness"] == {
        "sent": 3,
        "later_than_2h": 1,
        "later_than_24h": 0,
        "share_later_than_2h": 0.3333,
        "share_later_than_24h": 0.0,
    }
    assert data["sales_funnel"]["positive"] == list(FUNNEL)
    assert {a["topic"] for a in data["advice"]} == {
        "optimise",
        "values",
        "conversion_leads",
        "sales_funnel",
    }
    text = result.text()
    assert "Lead             0    0    0    0    0    0    1    1" in text
    assert "1 (33.3%) more than 2 h" in text
    assert "  1. Lead" in text and "Other stages: Disqualified" in text


def test_report_needs_an_aware_now() -> None:
    config: BridgeConfig = report_config()
    with pytest.raises(ValueError, match="aware"):
        funnel_report([], config, NOW.replace(tzinfo=None))
