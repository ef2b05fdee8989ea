"""The funnel report (pure): ledger events + config + now → weekly counts, rates and advice."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sheet_bridge.config import BridgeConfig, Stage
from sheet_bridge.sync.ledger import LedgerEvent

WEEKS = 8  # weeks shown in the report and the chart
AVERAGE_WEEKS = 4  # complete weeks averaged for the optimisation advice
# docs/insights.md: about 50 conversions per ad set per week leave the learning phase.
LEARNING_PHASE_PER_WEEK = 50
# docs/meta-events.md, docs/insights.md: Conversion Leads fit and the Sales Funnel panel
# need ≥ 200 leads a month.
LEADS_PER_MONTH = 200
MONTH = timedelta(days=30)
# docs/meta-events.md: the target stage is reached within 28 days.
TARGET_WITHIN = timedelta(days=28)
CONVERSION_RANGE = (0.01, 0.40)  # docs/meta-events.md: converting 1–40 % from lead to target
SALES_FUNNEL_DAYS = 7  # docs/insights.md: the panel unlocks after 7 days of data
# docs/event-times.md: > 2 h late costs performance, ≥ 24 h hurts attribution.
LATE = timedelta(hours=2)
VERY_LATE = timedelta(hours=24)
STRENGTHS = ("strong", "good", "weak", "none")

Verdict = Literal["ok", "warn", "info"]
# An event that reached a stage: Meta got it, or it was kept back only for being too old.
_REACHED = ("sent", "expired")


@dataclass(frozen=True)
class Week:
    """One ISO week (Monday 00:00 UTC to the next Monday)."""

    label: str  # "2026-W48"
    start: date
    complete: bool  # False for the week that contains `now`

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "start": self.start.isoformat(), "complete": self.complete}


@dataclass(frozen=True)
class StageStats:
    """One positive stage: what was sent per week, who reached it, how fast, how many go on."""

    event: str
    status: str  # the stage's first status text, as the sales team writes it
    value: float | None  # from the config
    weekly: tuple[int, ...]  # sent per week, oldest week first
    average_per_week: float  # over the last AVERAGE_WEEKS complete weeks
    reached: int  # leads with this stage's event sent or expired
    to_next: int | None  # of those, how many reached the next positive stage
    conversion_to_next: float | None  # to_next / reached; None for the last stage or no leads
    median_hours_from_lead: float | None  # first stage's event_time → this stage's event_time
    median_value_sent: float | None = None  # what Meta got (a row's own value overrides the stage)

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "status": self.status,
            "value": self.value,
            "weekly": list(self.weekly),
            "average_per_week": round(self.average_per_week, 2),
            "reached": self.reached,
            "to_next": self.to_next,
            "conversion_to_next": _round(self.conversion_to_next),
            "median_hours_from_lead": _round(self.median_hours_from_lead, 1),
            "median_value_sent": self.median_value_sent,
        }


@dataclass(frozen=True)
class Advice:
    """One piece of advice and the numbers it rests on."""

    topic: Literal["optimise", "values", "conversion_leads", "sales_funnel"]
    verdict: Verdict
    text: str
    numbers: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "verdict": self.verdict,
            "text": self.text,
            "numbers": dict(self.numbers),
        }


@dataclass(frozen=True)
class SalesFunnelGuide:
    """What to enter in Events Manager's Sales Funnel panel, and whether it is there yet."""

    positive: tuple[str, ...]  # event names, top of the funnel first
    other: tuple[str, ...]  # event names of the negative stages
    unlocked: bool
    days_of_data: float
    leads_last_30_days: int

    def to_json(self) -> dict[str, Any]:
        return {
            "positive": list(self.positive),
            "other": list(self.other),
            "unlocked": self.unlocked,
            "days_of_data": _floor1(self.days_of_data),
            "leads_last_30_days": self.leads_last_30_days,
        }


@dataclass(frozen=True)
class FunnelReport:
    """Everything the CLI, /api/report and the sidebar panel show."""

    now: datetime
    weeks: tuple[Week, ...]
    stages: tuple[StageStats, ...]
    other_sent: Mapping[str, int]  # negative stages' events sent in the window
    sent_events: int  # every event sent in the window (positive and negative)
    sent_late: int  # … more than 2 h after the status change
    sent_very_late: int  # … more than 24 h after
    leads: int  # leads with an event sent in the window (their identifiers are known)
    leads_with_lead_id: int
    strength: Mapping[str, int]  # leads by the identifier strength of their latest sent event
    leads_last_30_days: int  # first-stage events sent with event_time in the last 30 days
    advice: tuple[Advice, ...]
    sales_funnel: SalesFunnelGuide
    currency: str

    @property
    def share_late(self) -> float | None:
        return _share(self.sent_late, self.sent_events)

    @property
    def share_very_late(self) -> float | None:
        return _share(self.sent_very_late, self.sent_events)

    @property
    def share_with_lead_id(self) -> float | None:
        return _share(self.leads_with_lead_id, self.leads)

    def series(self) -> dict[str, list[int]]:
        """Weekly sent counts per positive stage, funnel order (for the chart)."""
        return {s.event: list(s.weekly) for s in self.stages}

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "window": {
                "from": self.weeks[0].start.isoformat(),
                "weeks": len(self.weeks),
                "time_zone": "UTC",
            },
            "weeks": [w.to_json() for w in self.weeks],
            "stages": [s.to_json() for s in self.stages],
            "other_sent": dict(self.other_sent),
            "freshness": {
                "sent": self.sent_events,
                "later_than_2h": self.sent_late,
                "later_than_24h": self.sent_very_late,
                "share_later_than_2h": _round(self.share_late),
                "share_later_than_24h": _round(self.share_very_late),
            },
            "identifiers": {
                "leads": self.leads,
                "with_lead_id": self.leads_with_lead_id,
                "share_with_lead_id": _round(self.share_with_lead_id),
                "strength": dict(self.strength),
            },
            "leads_last_30_days": self.leads_last_30_days,
            "currency": self.currency,
            "advice": [a.to_json() for a in self.advice],
            "sales_funnel": self.sales_funnel.to_json(),
        }

    def text(self) -> str:
        """The report as the CLI prints it: a table, the numbers, then the advice."""
        return render_text(self)


# ---- building the report ----------------------------------------------------------------


def funnel_report(
    events: Sequence[LedgerEvent],
    config: BridgeConfig,
    now: datetime,
    *,
    target_event: str | None = None,
) -> FunnelReport:
    """Build the report from the ledger's events (Ledger.events) as of `now` (aware).

    Weekly counts, conversion, medians, freshness and identifiers cover the last 8 ISO weeks
    (UTC) by event_time; leads a month counts the last 30 days. `target_event` picks the
    Conversion Leads target stage; by default the stage the optimisation advice chose, or
    the stage after the first when that is the first.
    """
    if now.tzinfo is None:
        raise ValueError("funnel_report() needs an aware `now`")
    now = now.astimezone(UTC)
    stage_map = config.stage_map
    positive = [s for s in stage_map.positive if s.send]
    negative = [s for s in stage_map.stages if s.negative and s.send]
    if not positive:
        raise ValueError("the config sends no positive stage")
    weeks = _weeks(now)
    window_start = datetime.combine(weeks[0].start, datetime.min.time(), UTC)
    in_window = [
        e for e in events if window_start.timestamp() <= e.event_time <= now.timestamp() + 300
    ]
    sent = [e for e in in_window if e.state == "sent"]

    # Reached: per stage, the lead keys and the event_time each reached it at.
    reached: dict[str, dict[str, int]] = {s.event: {} for s in [*positive, *negative]}
    for e in in_window:
        if e.state in _REACHED and e.event_name in reached:
            reached[e.event_name][e.lead_key] = e.event_time

    first = positive[0]
    stats: list[StageStats] = []
    for i, stage in enumerate(positive):
        weekly = [0] * len(weeks)
        for e in sent:
            if e.event_name == stage.event:
                weekly[_week_index(weeks, e.event_time)] += 1
        complete = weekly[-1 - AVERAGE_WEEKS : -1]
        here = reached[stage.event]
        to_next: int | None = None
        rate: float | None = None
        if i + 1 < len(positive):
            nxt = reached[positive[i + 1].event]
            to_next = sum(1 for k in here if k in nxt)
            rate = _share(to_next, len(here))
        median: float | None = None
        if stage is not first:
            starts = reached[first.event]
            gaps = [t - starts[k] for k, t in here.items() if k in starts]
            median = statistics.median(gaps) / 3600 if gaps else None
        stats.append(
            StageStats(
                event=stage.event,
                status=stage.label,
                value=stage.value,
                weekly=tuple(weekly),
                average_per_week=sum(complete) / AVERAGE_WEEKS,
                reached=len(here),
                to_next=to_next,
                conversion_to_next=rate,
                median_hours_from_lead=median,
                median_value_sent=_median(
                    [e.value for e in sent if e.event_name == stage.event and e.value is not None]
                ),
            )
        )

    late = sum(
        1 for e in sent if e.sent_at is not None and e.sent_at - e.event_time > LATE.total_seconds()
    )
    very_late = sum(
        1
        for e in sent
        if e.sent_at is not None and e.sent_at - e.event_time > VERY_LATE.total_seconds()
    )

    latest: dict[str, LedgerEvent] = {}
    with_lead_id: set[str] = set()
    for e in sent:
        if e.user_data and "lead_id" in e.user_data:
            with_lead_id.add(e.lead_key)
        prior = latest.get(e.lead_key)
        if prior is None or (e.sent_at or 0, e.event_time) >= (
            prior.sent_at or 0,
            prior.event_time,
        ):
            latest[e.lead_key] = e
    strength = dict.fromkeys(STRENGTHS, 0)
    for e in latest.values():
        key = e.match_strength if e.match_strength in strength else "none"
        strength[key] += 1

    month_start = (now - MONTH).timestamp()
    leads_30 = sum(
        1
        for e in events
        if e.event_name == first.event
        and e.state == "sent"
        and month_start <= e.event_time <= now.timestamp() + 300
    )
    first_sent = min((e.sent_at for e in events if e.state == "sent" and e.sent_at), default=None)
    days_of_data = (now.timestamp() - first_sent) / 86400 if first_sent is not None else 0.0

    guide = SalesFunnelGuide(
        positive=tuple(s.event for s in positive),
        other=tuple(s.event for s in negative),
        unlocked=days_of_data >= SALES_FUNNEL_DAYS and leads_30 >= LEADS_PER_MONTH,
        days_of_data=days_of_data,
        leads_last_30_days=leads_30,
    )
    complete_weeks = [w.label for w in weeks[-1 - AVERAGE_WEEKS : -1]]
    optimise = _optimise_advice(stats, complete_weeks)
    chosen = optimise.numbers.get("optimise_on")
    if target_event is None:
        target_event = chosen if chosen and chosen != first.event else None
        if target_event is None and len(positive) > 1:
            target_event = positive[1].event
    advice = (
        optimise,
        _values_advice(positive, stats, config.meta.currency),
        _conversion_leads_advice(stats, target_event, leads_30, reached, first.event),
        _sales_funnel_advice(guide),
    )
    return FunnelReport(
        now=now,
        weeks=weeks,
        stages=tuple(stats),
        other_sent={s.event: sum(1 for e in sent if e.event_name == s.event) for s in negative},
        sent_events=len(sent),
        sent_late=late,
        sent_very_late=very_late,
        leads=len(latest),
        leads_with_lead_id=len(with_lead_id),
        strength=strength,
        leads_last_30_days=leads_30,
        advice=advice,
        sales_funnel=guide,
        currency=config.meta.currency,
    )


def _weeks(now: datetime) -> tuple[Week, ...]:
    today = now.date()
    monday = today - timedelta(days=today.weekday())
    out = []
    for back in range(WEEKS - 1, -1, -1):
        start = monday - timedelta(weeks=back)
        year, week, _ = start.isocalendar()
        out.append(Week(f"{year}-W{week:02d}", start, complete=back > 0))
    return tuple(out)


def _week_index(weeks: Sequence[Week], event_time: int) -> int:
    day = datetime.fromtimestamp(event_time, UTC).date()
    index = (day - weeks[0].start).days // 7
    return min(max(index, 0), len(weeks) - 1)


def _floor1(days: float) -> float:
    """Days to one decimal, rounded down: 6.95 days is not yet "7.0 days of data"."""
    return math.floor(days * 10) / 10


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# ---- advice -------------------------------------------------------------------------------


def _optimise_advice(stats: Sequence[StageStats], complete_weeks: Sequence[str]) -> Advice:
    """Optimise on the deepest stage that reaches ~50 a week, not deeper (docs/insights.md)."""
    averages = {s.event: s.average_per_week for s in stats}
    period = (
        f"the last {AVERAGE_WEEKS} complete weeks ({complete_weeks[0]} to {complete_weeks[-1]})"
    )
    deep_enough = [s for s in stats if s.average_per_week >= LEARNING_PHASE_PER_WEEK]
    numbers: dict[str, Any] = {
        "threshold_per_week": LEARNING_PHASE_PER_WEEK,
        "weeks": list(complete_weeks),
        "average_per_week": {k: round(v, 2) for k, v in averages.items()},
        "optimise_on": None,
    }
    per_ad_set = (
        f"Meta needs about {LEARNING_PHASE_PER_WEEK} conversions per ad set per week to leave the "
        "learning phase; these counts are for the whole pixel, so divide by your ad sets."
    )
    if not deep_enough:
        first = stats[0]
        numbers["optimise_on"] = first.event
        return Advice(
            "optimise",
            "warn",
            f"Volume is too low even for {first.event}: it averaged "
            f"{first.average_per_week:.1f} a week over {period}, below "
            f"{LEARNING_PHASE_PER_WEEK}. Keep optimising on {first.event} (the stage with the most "
            "volume), use fewer ad sets, and do not move deeper yet. " + per_ad_set,
            numbers,
        )
    best = deep_enough[-1]
    numbers["optimise_on"] = best.event
    words = (
        f"Optimise on {best.event}: it averaged {best.average_per_week:.1f} a week over {period}"
    )
    index = stats.index(best)
    if index + 1 < len(stats):
        deeper = stats[index + 1]
        words += (
            f"; the next stage, {deeper.event}, averaged {deeper.average_per_week:.1f} "
            f"(below {LEARNING_PHASE_PER_WEEK}), so going deeper would starve the algorithm"
        )
    return Advice("optimise", "ok", words + ". " + per_ad_set, numbers)


def _values_advice(positive: Sequence[Stage], stats: Sequence[StageStats], currency: str) -> Advice:
    """A value with every event, in ratio along the funnel: lead 100, SQL 50,000
    (docs/insights.md)."""
    values = {s.event: s.value for s in positive}
    base = positive[0].value
    ratios = {
        s.event: (round(s.value / base, 2) if base and s.value is not None else None)
        for s in positive
    }
    problems: list[str] = []
    missing = [s.event for s in positive if s.value is None]
    if missing:
        problems.append(
            f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no value, so Meta "
            "gets none for it; set value = … in its [[stages]]"
        )
    priced = [s for s in positive if s.value is not None]
    for lower, higher in itertools.pairwise(priced):
        assert lower.value is not None and higher.value is not None
        if higher.value <= lower.value:
            problems.append(
                f"{higher.event} ({_money(higher.value)}) is not worth more than {lower.event} "
                f"({_money(lower.value)}); deeper stages should be worth more"
            )
    shown = ", ".join(
        f"{s.event} {_money(s.value)}" if s.value is not None else f"{s.event} (none)"
        for s in positive
    )
    # What Meta actually got: a row's own value cell overrides the stage's for that event.
    sent = {s.event: s.median_value_sent for s in stats if s.median_value_sent is not None}
    observed = list(sent.items())
    for (low_name, low), (high_name, high) in itertools.pairwise(observed):
        if high <= low:
            problems.append(
                f"the values sent so far do not rise: median {high_name} {_money(high)} vs "
                f"{low_name} {_money(low)} (rows' own value cells override the stage values)"
            )
            break
    numbers = {
        "currency": currency,
        "values": values,
        "ratio_to_first": ratios,
        "median_value_sent": sent,
    }
    if problems:
        return Advice(
            "values",
            "warn",
            f"Stage values ({currency}): {shown}. " + "; ".join(problems) + ".",
            numbers,
        )
    ratio_words = ", ".join(f"{k} ×{v:g}" for k, v in ratios.items() if v is not None)
    return Advice(
        "values",
        "ok",
        f"Stage values rise along the funnel ({currency}): {shown} (ratio to the first: "
        f"{ratio_words}). Once values flow, a value-based bid strategy can aim at the valuable "
        "leads.",
        numbers,
    )


def _conversion_leads_advice(
    stats: Sequence[StageStats],
    target: str | None,
    leads_30: int,
    reached: Mapping[str, Mapping[str, int]],
    first_event: str,
) -> Advice:
    """≥ 200 leads a month, target reached within 28 days, converting 1–40 %
    (docs/meta-events.md)."""
    by_event = {s.event: s for s in stats}
    volume_ok = leads_30 >= LEADS_PER_MONTH
    numbers: dict[str, Any] = {
        "leads_last_30_days": leads_30,
        "min_leads_per_month": LEADS_PER_MONTH,
        "target_stage": target,
        "median_days_to_target": None,
        "max_days_to_target": TARGET_WITHIN.days,
        "conversion_to_target": None,
        "conversion_range": list(CONVERSION_RANGE),
    }
    checks = [
        f"{leads_30} {first_event} events in the last 30 days "
        f"({'≥' if volume_ok else '<'} {LEADS_PER_MONTH})"
    ]
    speed_ok = rate_ok = False
    if target is not None and target in by_event and target != first_event:
        stage = by_event[target]
        if stage.median_hours_from_lead is not None:
            days = stage.median_hours_from_lead / 24
            numbers["median_days_to_target"] = round(days, 1)
            speed_ok = days <= TARGET_WITHIN.days
            checks.append(
                f"{target} reached a median {days:.1f} days after {first_event} "
                f"({'within' if speed_ok else 'over'} {TARGET_WITHIN.days})"
            )
        else:
            checks.append(f"no lead has reached {target} yet, so its timing is unknown")
        leads = reached[first_event]
        converted = sum(1 for k in reached[target] if k in leads)
        rate = _share(converted, len(leads))
        if rate is not None:
            numbers["conversion_to_target"] = round(rate, 4)
            low, high = CONVERSION_RANGE
            rate_ok = low <= rate <= high
            checks.append(
                f"{converted} of {len(leads)} leads ({rate:.1%}) reached {target} "
                f"({'inside' if rate_ok else 'outside'} {low:.0%}–{high:.0%})"
            )
        else:
            checks.append(f"no {first_event} events yet, so the conversion rate is unknown")
    else:
        checks.append("no target stage deeper than the first is configured")
    fits = volume_ok and speed_ok and rate_ok
    numbers["fits"] = fits
    head = (
        "Conversion Leads fits: "
        if fits
        else "Conversion Leads does not fit yet (Meta asks ≥ 200 leads a month, the target "
        "stage within 28 days and 1–40 % converting): "
    )
    return Advice(
        "conversion_leads", "ok" if fits else "warn", head + "; ".join(checks) + ".", numbers
    )


def _sales_funnel_advice(guide: SalesFunnelGuide) -> Advice:
    """docs/insights.md: the panel unlocks after 7 days and ≥ 200 leads a month."""
    order = " → ".join(guide.positive)
    other = ", ".join(guide.other) or "none"
    facts = (
        f"{_floor1(guide.days_of_data):.1f} days of data (needs {SALES_FUNNEL_DAYS}), "
        f"{guide.leads_last_30_days} leads in the last 30 days (needs {LEADS_PER_MONTH})"
    )
    numbers = {
        "days_of_data": _floor1(guide.days_of_data),
        "min_days": SALES_FUNNEL_DAYS,
        "leads_last_30_days": guide.leads_last_30_days,
        "min_leads_per_month": LEADS_PER_MONTH,
        "unlocked": guide.unlocked,
    }
    if guide.unlocked:
        text = (
            f"The Sales Funnel panel should be unlocked ({facts}). In Events Manager mark as "
            f"positive stages, top to bottom: {order}; mark as other: {other}."
        )
        return Advice("sales_funnel", "ok", text, numbers)
    text = (
        f"The Sales Funnel panel is not expected yet ({facts}). When it unlocks, mark as "
        f"positive stages, top to bottom: {order}; mark as other: {other}."
    )
    return Advice("sales_funnel", "info", text, numbers)


# ---- text -------------------------------------------------------------------------------


def _money(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _hours(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.1f} h" if value < 48 else f"{value / 24:.1f} d"


def render_text(report: FunnelReport) -> str:
    weeks = report.weeks
    name_width = max(12, *(len(s.event) for s in report.stages))
    head = f"{'Stage':<{name_width}} " + " ".join(f"{w.label[-3:]:>4}" for w in weeks)
    head += f"  {'avg/wk':>6}  {'reached':>7}  {'→ next':>7}  {'median from lead':>16}"
    lines = [
        f"Funnel report, {report.now:%Y-%m-%d %H:%M} UTC: events sent per ISO week "
        f"({weeks[0].label} to {weeks[-1].label}, the last one so far), by event_time",
        "",
        head,
        "-" * len(head),
    ]
    for s in report.stages:
        cells = " ".join(f"{n:>4}" for n in s.weekly)
        lines.append(
            f"{s.event:<{name_width}} {cells}  {s.average_per_week:>6.1f}  {s.reached:>7}  "
            f"{_pct(s.conversion_to_next):>7}  {_hours(s.median_hours_from_lead):>16}"
        )
    if report.other_sent:
        other = ", ".join(f"{k} {v}" for k, v in report.other_sent.items())
        lines.append(f"Other (negative) stages sent: {other}")
    lines += [
        "",
        f"avg/wk: over the last {AVERAGE_WEEKS} complete weeks. → next: share of the leads that "
        "reached the stage (sent or expired) that reached the next one.",
        "",
        f"Freshness: {report.sent_events} events sent; {report.sent_late} "
        f"({_pct(report.share_late)}) more than 2 h after the status change, "
        f"{report.sent_very_late} ({_pct(report.share_very_late)}) more than 24 h "
        "(Meta: performance drops past 2 h, attribution suffers past 24 h).",
        f"Identifiers: {report.leads_with_lead_id} of {report.leads} leads "
        f"({_pct(report.share_with_lead_id)}) carry a lead_id; strength "
        + ", ".join(f"{k} {v}" for k, v in report.strength.items())
        + ".",
        "",
        "Advice",
    ]
    marks = {"ok": "ok  ", "warn": "WARN", "info": "info"}
    for a in report.advice:
        lines.append(f"  {marks[a.verdict]} {a.text}")
    guide = report.sales_funnel
    lines += [
        "",
        "Sales Funnel (Events Manager), positive stages top to bottom:",
        *(f"  {i}. {name}" for i, name in enumerate(guide.positive, 1)),
        "Other stages: " + (", ".join(guide.other) or "none"),
    ]
    return "\n".join(lines)
