"""The pure sync plan: lead rows + config + ledger history + now → what to send, and why not.

No network, clock or randomness in here: `now` and the history are arguments, so the same
inputs always give the same plan (DESIGN.md "Data flow", step 2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from sheet_bridge.config import IDENTITY_COLUMNS, BridgeConfig, Stage, StageMap, status_key
from sheet_bridge.meta.events import classify_event_name, planning_window, send_window
from sheet_bridge.meta.identity import (
    FIELD_NAMES,
    FieldProblem,
    MatchKeys,
    hash_user_data,
    match_keys,
)
from sheet_bridge.meta.payload import build_event

# DOMAIN.md §5: no documented tolerance for future times; we clamp small clock skew to now.
FUTURE_SKEW = timedelta(minutes=5)

EventState = Literal["sending", "sent", "failed", "expired"]
Outcome = Literal["due", "skipped", "expired", "invalid", "already_sent", "moved_back", "duplicate"]


@dataclass(frozen=True, slots=True)
class LeadRow:
    """One lead as read from the sheet, cells already typed (times aware, identity raw)."""

    row_number: int
    key: str
    status: str
    status_changed_at: datetime | None = None
    created_at: datetime | None = None
    identity: Mapping[str, object] = field(default_factory=dict)  # Meta keys → raw cells
    pixel_event_id: str | None = None
    value: float | None = None
    currency: str | None = None
    # Cells that could not be read, in words; a time problem makes the row invalid.
    time_problems: tuple[str, ...] = ()
    field_problems: tuple[FieldProblem, ...] = ()


@dataclass(frozen=True, slots=True)
class EventRecord:
    """What the ledger knows of one (lead, event name)."""

    event_name: str
    event_id: str
    state: EventState
    event_time: int
    retry: bool = False  # failed, but a later pass may succeed (transient, or token)
    fingerprint: str | None = None  # of the payload that failed: retried when it changes
    sent_at: datetime | None = None
    fbtrace_id: str | None = None
    error: str | None = None
    notes: str | None = None  # warnings about the row when it was sent (fields dropped)


@dataclass(frozen=True, slots=True)
class Transition:
    """A status the lead was seen to take, and when (from an edit or a scan)."""

    status: str
    at: datetime


@dataclass(frozen=True, slots=True)
class LeadHistory:
    events: Mapping[str, EventRecord] = field(default_factory=dict)
    transitions: Sequence[Transition] = ()


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One event to send: where it comes from, its identity in the ledger, and its payload."""

    row_number: int
    lead_key: str
    stage: Stage
    event_name: str
    event_id: str
    event_time: int
    # What build_event needs besides the name, time and id. The payload dict is built only
    # when sent (a 100,000-lead first pass plans ~190,000 events: holding every payload at
    # once cost ~150 MB); a lead's events share one user_data dict.
    user_data: dict[str, object]
    lead_status: str
    action_source: str
    lead_event_source: str
    value: float | None = None
    currency: str | None = None
    resend: bool = False  # left `sending` by an interrupted pass: same event_id again
    # Of the payload: a failed event is retried once its row changes (derived, not passed).
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", payload_fingerprint(self.payload))

    @property
    def payload(self) -> dict[str, object]:
        """The CAPI event, as sent (built on each access; nothing mutates it)."""
        return build_event(
            event_name=self.event_name,
            event_time=self.event_time,
            event_id=self.event_id,
            action_source=self.action_source,
            user_data=self.user_data,
            lead_status=self.lead_status,
            lead_event_source=self.lead_event_source,
            value=self.value,
            currency=self.currency,
        )


@dataclass(frozen=True, slots=True)
class ExpiredEvent:
    row_number: int
    lead_key: str
    event_name: str
    event_id: str
    event_time: int
    age: timedelta
    limit: timedelta


def expired_reason(expired: ExpiredEvent) -> str:
    """Why an expired event was never sent, as the ledger and the CAPI Log keep it."""
    return f"older than Meta's {expired.limit.days}-day window when planned"


@dataclass(frozen=True, slots=True)
class Observation:
    """A status the plan saw for the first time; the run records it as a transition."""

    lead_key: str
    status: str
    at: datetime


@dataclass(slots=True)
class RowDecision:
    row_number: int
    lead_key: str
    status: str
    outcome: Outcome
    message: str
    events: list[PlannedEvent] = field(default_factory=list)
    expired: list[ExpiredEvent] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    match: MatchKeys | None = None
    # What the ledger holds for this lead's stages, funnel order (for the row's CAPI columns).
    records: list[EventRecord] = field(default_factory=list)


@dataclass(slots=True)
class Plan:
    decisions: list[RowDecision]
    observations: list[Observation]

    @property
    def events(self) -> list[PlannedEvent]:
        """Every event to send, oldest lead first (nearest the window edge), funnel order
        within a lead."""
        by_row = [d for d in self.decisions if d.events]
        by_row.sort(key=lambda d: (min(e.event_time for e in d.events), d.row_number))
        return [e for d in by_row for e in d.events]

    @property
    def expired(self) -> list[ExpiredEvent]:
        return [x for d in self.decisions for x in d.expired]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.decisions:
            out[d.outcome] = out.get(d.outcome, 0) + 1
        return out


def event_id_for(spreadsheet_id: str, tab: str, lead_key: str, event_name: str) -> str:
    """Deterministic: the same lead (spreadsheet, tab, lead key) and event name give the same id
    on every run and machine; a lead copied into another tab is another lead."""
    digest = hashlib.sha256(f"{spreadsheet_id}\x1f{tab}\x1f{lead_key}\x1f{event_name}".encode())
    return "sb." + digest.hexdigest()[:32]


def payload_fingerprint(payload: Mapping[str, object]) -> str:
    """Identifies the content of a payload, so a failed event is retried once its row changes."""
    return hashlib.sha256(repr(sorted(payload.items())).encode()).hexdigest()[:16]


def _cut(text: str, limit: int = 60) -> str:
    """A cell quoted in a status message, cut short: a cell holds up to 50,000 characters, and
    so does the CAPI Status cell the message goes to (Google refuses a longer one)."""
    return text if len(text) <= limit else text[:limit] + "…"


def describe_time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M")


def describe_age(age: timedelta) -> str:
    days = age.days
    hours = age.seconds // 3600
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    return f"{hours} h {age.seconds % 3600 // 60} min"


class _Planner:
    def __init__(self, config: BridgeConfig, history: Mapping[str, LeadHistory], now: datetime):
        self.config = config
        self.stages: StageMap = config.stage_map
        self.history = history
        self.now = now
        meta = config.meta
        self.action_source = meta.action_source
        self.window = planning_window(meta.action_source)
        self.meta_window = send_window(meta.action_source)
        self.refused = {
            s.index: classify_event_name(s.event, s.custom)
            for s in self.stages.stages
            if classify_event_name(s.event, s.custom).verdict == "refused"
        }
        headers = config.columns
        self.header_for = {
            key: headers.get(logical, FIELD_NAMES.get(key, key))
            for logical, key in IDENTITY_COLUMNS.items()
        }
        for logical in ("value", "currency"):
            self.header_for[logical] = headers.get(logical, logical)
        # The deepest positive stage sending each event name (a name may serve several).
        self.positive_by_event: dict[str, Stage] = {}
        for s in self.stages.positive:
            known = self.positive_by_event.get(s.event)
            if known is None or s.index > known.index:
                self.positive_by_event[s.event] = s
        self._due_of: dict[int, tuple[Stage, ...]] = {}
        self.observations: list[Observation] = []
        self.shared_pixel_ids: set[str] = set()

    # -- one row ---------------------------------------------------------------------------
    def decide(self, row: LeadRow) -> RowDecision:
        status = row.status.strip()

        def skip(message: str, outcome: Outcome = "skipped") -> RowDecision:
            return RowDecision(row.row_number, row.key, status, outcome, message)

        if not status:
            return skip("no status yet: nothing to send")
        stage = self.stages.lookup(status)
        if stage is None:
            configured = ", ".join(self.stages.configured_statuses())
            return skip(
                f"status {_cut(status)!r} is not in the stage map (configured: {configured}); "
                "fix the cell or add it to [[stages]] in the config"
            )
        if not stage.send:
            return skip(f"status {_cut(status)!r} is never sent (send = false in the config)")
        due = self._due_stages(stage)
        refused = [self.refused[s.index] for s in due if s.index in self.refused]
        if refused:
            # Never send a name Meta ignores, not even as a backfilled earlier stage.
            return skip(f"not sent: {refused[0].message}")

        history = self.history.get(row.key, LeadHistory())
        records = [history.events[s.event] for s in due if s.event in history.events]
        pending = [s for s in due if self._needs_sending(history.events.get(s.event))]
        highest = self._highest_reached(history)
        moved_back = highest is not None and not stage.negative and highest.index > stage.index
        if not pending or moved_back:
            return self._nothing_due(row, status, stage, highest, records)

        if row.time_problems:
            decision = skip("not sent: " + "; ".join(row.time_problems), "invalid")
            decision.records = records
            return decision
        times = self._event_times(row, stage, pending, history)
        if isinstance(times, str):
            decision = skip(times, "invalid")
            decision.records = records
            return decision

        decision = RowDecision(row.row_number, row.key, status, "due", "")
        decision.records = records
        fresh: list[tuple[Stage, datetime]] = []
        for s in pending:
            at = times[s.index]
            age = self.now - at
            record = history.events.get(s.event)
            event_id = record.event_id if record else self._event_id(row, s)
            if age > self.window:
                decision.expired.append(
                    ExpiredEvent(
                        row.row_number,
                        row.key,
                        s.event,
                        event_id,
                        int(at.timestamp()),
                        age,
                        self.meta_window,
                    )
                )
            else:
                fresh.append((s, at))

        if not fresh:
            decision.outcome = "expired"
            decision.message = self._expired_message(decision.expired)
            return decision

        identity = hash_user_data(row.identity, self.config.meta.default_country)
        problems = [*row.field_problems, *identity.problems]
        decision.warnings = [self._describe_problem(p) for p in problems]
        decision.match = match_keys(identity.user_data)
        if not decision.match.sendable:
            decision.outcome = "invalid"
            have = ", ".join(FIELD_NAMES[k] for k in decision.match.keys) or "nothing usable"
            decision.message = (
                f"not sent: Meta needs a stronger identifier (this row has {have}); "
                "add an e-mail, a phone number or the Leadgen ID"
            )
            decision.expired = []
            return decision

        for s, at in fresh:
            record = history.events.get(s.event)
            value = row.value if row.value is not None else s.value
            currency = row.currency or s.currency or self.config.meta.currency
            event = PlannedEvent(
                row.row_number,
                row.key,
                s,
                s.event,
                record.event_id if record else self._event_id(row, s),
                int(at.timestamp()),
                identity.user_data,
                status,
                self.action_source,
                self.config.meta.lead_event_source,
                value,
                currency if value is not None else None,
                resend=record is not None and record.state == "sending",
            )
            if (
                record is not None
                and record.state == "failed"
                and not record.retry
                and record.fingerprint == event.fingerprint
            ):
                continue  # Meta refused exactly this before; wait for the row to change
            decision.events.append(event)
        if not decision.events:
            decision.outcome = "invalid"
            failed = [history.events[s.event] for s, _ in fresh if s.event in history.events]
            decision.message = "not sent again: Meta refused it before; fix the row to retry"
            if failed and failed[-1].fingerprint:
                decision.message = (
                    f"{', '.join(r.event_name for r in failed)} refused by Meta before and the "
                    "row has not changed since; fix the row to retry"
                )
            return decision
        names = ", ".join(e.event_name for e in decision.events)
        decision.message = f"due: {names}"
        if decision.expired:
            decision.message += "; " + self._expired_message(decision.expired)
        return decision

    # -- pieces ----------------------------------------------------------------------------
    def _due_stages(self, stage: Stage) -> Sequence[Stage]:
        """The stages a lead at `stage` should have sent, in funnel order (DOMAIN.md §8:
        every stage, the first included, before the final one). Built once per stage."""
        due = self._due_of.get(stage.index)
        if due is None:
            if stage.negative:
                due = (stage,)
            else:
                rank = self.stages.rank(stage)
                due = tuple(s for s in self.stages.positive[: rank + 1] if s.send)
            self._due_of[stage.index] = due
        return due

    @staticmethod
    def _needs_sending(record: EventRecord | None) -> bool:
        return record is None or record.state in ("sending", "failed")

    def _nothing_due(
        self,
        row: LeadRow,
        status: str,
        stage: Stage,
        highest: Stage | None,
        records: list[EventRecord],
    ) -> RowDecision:
        decision = RowDecision(row.row_number, row.key, status, "already_sent", "")
        decision.records = records
        if highest is not None and not stage.negative and highest.index > stage.index:
            decision.outcome = "moved_back"
            decision.message = (
                f"moved back from {highest.label} to {_cut(status)}: nothing sent "
                f"(Meta already has {highest.event})"
            )
            return decision
        sent = [r.event_name for r in records if r.state == "sent"]
        expired = [r.event_name for r in records if r.state == "expired"]
        parts = []
        if sent:
            parts.append(f"already sent: {', '.join(sent)}")
        if expired:
            parts.append(f"expired earlier: {', '.join(expired)}")
        decision.message = "; ".join(parts) or "nothing to send"
        if not sent and expired:
            decision.outcome = "expired"
        return decision

    def _highest_reached(self, history: LeadHistory) -> Stage | None:
        best: Stage | None = None
        for record in history.events.values():
            if record.state not in ("sent", "sending", "expired"):
                continue
            s = self.positive_by_event.get(record.event_name)
            if s is not None and (best is None or s.index > best.index):
                best = s
        return best

    def _first_seen(self, history: LeadHistory, stage: Stage) -> datetime | None:
        keys = {status_key(x) for x in stage.statuses}
        seen = [t.at for t in history.transitions if status_key(t.status) in keys]
        return min(seen) if seen else None

    def _event_times(
        self, row: LeadRow, current: Stage, pending: list[Stage], history: LeadHistory
    ) -> dict[int, datetime] | str:
        """Each pending stage's event_time: observed, never invented earlier (DOMAIN.md §5).

        The current stage: Status Changed At, else when history first saw it, else created_at
        for the first stage, else now (first seen, recorded as an observation). A stage jumped
        over takes the time of the next stage above it that was observed; the first stage takes
        created_at when the sheet has it.
        """
        times: dict[int, datetime] = {}
        current_time = row.status_changed_at or self._first_seen(history, current)
        first_positive = self.stages.positive[0]
        if current_time is None and current.index == first_positive.index:
            current_time = row.created_at
        if current_time is None:
            current_time = self.now
            self.observations.append(Observation(row.key, row.status.strip(), self.now))
        later = current_time
        for s in reversed(pending):
            if s.index == current.index:
                at = current_time
            else:
                observed = self._first_seen(history, s)
                if observed is None and s.index == first_positive.index:
                    observed = row.created_at
                at = min(observed, later) if observed is not None else later
            times[s.index] = at
            later = at
        created = row.created_at
        for s in pending:
            at = times[s.index]
            column = self.config.columns.get("status_changed_at", "Status Changed At")
            if at > self.now + FUTURE_SKEW:
                return (
                    f"not sent: {column} {describe_time(at)} is in the future; "
                    "fix the cell (Meta refuses events from the future)"
                )
            if at > self.now:
                times[s.index] = at = self.now  # small clock skew
            if created is not None and at < created:
                created_col = self.config.columns.get("created_at", "Created At")
                return (
                    f"not sent: the {s.event} time {describe_time(at)} is before {created_col} "
                    f"{describe_time(created)}; Meta discards stage events that come before "
                    "the lead; fix one of the two cells"
                )
        return times

    def _event_id(self, row: LeadRow, stage: Stage) -> str:
        # DOMAIN.md §9: the first stage reuses the pixel's event id so Meta deduplicates it
        # against the browser's Lead.
        # A pixel id on several rows (or with control characters) is pasted junk: reusing it
        # would make Meta drop one lead's Lead as the other's duplicate.
        pixel = row.pixel_event_id
        if (
            pixel is not None
            and pixel.isprintable()
            and pixel not in self.shared_pixel_ids
            and stage.index == self.stages.positive[0].index
        ):
            return pixel
        sheet = self.config.sheets
        return event_id_for(sheet.spreadsheet_id, sheet.tab, row.key, stage.event)

    def _expired_message(self, expired: list[ExpiredEvent]) -> str:
        oldest = max(expired, key=lambda x: x.age)
        names = ", ".join(x.event_name for x in expired)
        limit_days = oldest.limit.days
        return (
            f"{names} not sent: the change is {describe_age(oldest.age)} old and Meta only "
            f"accepts events up to {limit_days} days old"
        )

    def _describe_problem(self, problem: FieldProblem) -> str:
        header = self.header_for.get(problem.field, FIELD_NAMES.get(problem.field, problem.field))
        return f"{header} {problem.shown} dropped: {problem.why}; {problem.fix}"


def plan(
    rows: Sequence[LeadRow],
    config: BridgeConfig,
    history: Mapping[str, LeadHistory],
    now: datetime,
    *,
    only_keys: Collection[str] | None = None,
) -> Plan:
    """Decide, for every lead row, which events are due and why any are not.

    `history` is the ledger's view per lead key; `now` must be timezone-aware. Rows sharing a
    lead key after the first are reported as duplicates and never sent twice. `only_keys`
    restricts the plan to those leads (an edit syncs just its lead).
    """
    if now.tzinfo is None:
        raise ValueError("plan() needs an aware `now`")
    planner = _Planner(config, history, now)
    leads_of_pixel_id: dict[str, set[str]] = {}
    for r in rows:
        if r.pixel_event_id:
            leads_of_pixel_id.setdefault(r.pixel_event_id, set()).add(r.key)
    planner.shared_pixel_ids = {p for p, keys in leads_of_pixel_id.items() if len(keys) > 1}
    decisions: list[RowDecision] = []
    first_row_of: dict[str, int] = {}
    for row in rows:
        if only_keys is not None and row.key not in only_keys:
            continue
        if row.key in first_row_of:
            decisions.append(
                RowDecision(
                    row.row_number,
                    row.key,
                    row.status.strip(),
                    "duplicate",
                    f"same lead as row {first_row_of[row.key]} (same CAPI Key); sent once, "
                    "from that row. Clear this row's CAPI Key if it is a different lead",
                )
            )
            continue
        first_row_of[row.key] = row.row_number
        decisions.append(planner.decide(row))
    return Plan(decisions, planner.observations)
