"""The pure sync plan: lead rows + config + ledger history + now → what to send, and why not.

No network, clock or randomness in here: `now` and the history are arguments, so the same
inputs always give the same plan (docs/architecture.md, "A pass, in one screen", step 4).

How event times are chosen (docs/event-times.md: "do not fake event times"). Every event_time is a
time we observed, never one we made up:

1. The current status's time, first match wins:
   a. *Status Changed At*, unless it is stale: older than the last time the ledger saw the lead
      at a different status (the stamp belongs to an earlier change; the row says so), or the
      time of an edit that was changed back before it settled (withdrawn: a stamp the add-on
      could not put back, docs/edits.md). A date
      without a time of day means "some time that day" in the sheet's zone: clamped into
      [the lead's Created At and its last other status, the end of that day, now].
   b. A change the add-on reported (`/api/edits`), or one recorded by an earlier pass.
   c. *Created At*, for the first stage of the funnel. A date without a time of day is "some
      time that day", by rule 1a's reading: after what we know came before (for a lead new
      since the last full pass, that pass, which did not see it), by the day's end and now.
   d. A scan: the ledger saw the lead at another status at most 24 h ago (SCAN_BOUND), so the
      change happened between then and now; it is sent with the time this pass saw it, and the
      row says the time is estimated. A lead that appears at the first stage since the last
      full pass (at most 24 h ago) is new: the same estimate.
   e. Otherwise there is no time we can defend: a **baseline**. The status is recorded, nothing
      is sent for it, and the row says so with the fix (fill Status Changed At). The first sync
      of an existing sheet is where this happens most.
2. A stage jumped over (New → Customer sends Lead … Purchase, docs/meta-events.md) takes its own
   observed time when there is one (Created At for the first stage), else the time of the
   change that jumped over it, since it was reached by then. If the lead was already seen at or
   beyond that stage before that change, it was reached earlier at an unknown time: baseline.
3. Nothing is sent with a time in the future (small clock skew is clamped to now) or before
   Created At.
4. An edit settles before it is sent (docs/edits.md): a lead whose status is the one an edit
   recorded less than `[sync] settle_seconds` ago is held, by every pass; a change back within
   that time withdraws the edit (sync/edits.py), so a mis-click sends nothing.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal, NamedTuple

from sheet_bridge.config import (
    IDENTITY_COLUMNS,
    BridgeConfig,
    MetaConfig,
    Stage,
    StageMap,
    status_key,
)
from sheet_bridge.meta.events import classify_event_name, planning_window, send_window
from sheet_bridge.meta.identity import (
    FIELD_NAMES,
    FieldProblem,
    HashedIdentity,
    MatchKeys,
    hash_user_data,
    match_keys,
    normalize_lead_id,
)
from sheet_bridge.meta.payload import (
    build_event,
    custom_data_text,
    dumps,
    event_json,
    processing_options,
)

# docs/event-times.md: no documented tolerance for future times; we clamp small clock skew to now.
FUTURE_SKEW = timedelta(minutes=5)
# The widest interval a scan may stand for a change time (rule 1d). Meta: events sent 24 h or
# more after they happened already cause "significant issues with attribution"
# (docs/event-times.md);
# a change known only to within more than that is not sent as if it had just happened.
SCAN_BOUND = timedelta(hours=24)
# docs/deduplication.md: Meta deduplicates a browser and a server event only when they arrive within
# 48 h of each other; 10 minutes of margin for the time the send itself takes.
PIXEL_DEDUP = timedelta(hours=48) - timedelta(minutes=10)

EventState = Literal["sending", "sent", "failed", "expired", "baseline"]
Outcome = Literal[
    "due",
    "skipped",
    "expired",
    "invalid",
    "already_sent",
    "moved_back",
    "duplicate",
    "baseline",
    "settling",
]
# Where a status's time came from (rule 1 in the module docstring). "seen" has no time: the
# status was observed, `at` is only when.
TimeSource = Literal["stamp", "edit", "created", "scan", "seen"]
UNTIMED: frozenset[str] = frozenset({"seen"})


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
    # Status Changed At held a date without a time of day ("some time that day").
    changed_date_only: bool = False
    # So did Created At: `created_at` is the start of that day (see _Planner._created).
    created_date_only: bool = False
    # The CAPI Key cell was blank (or could not be a key: sync/rows.py _own_key): `key` was
    # derived from the row (sync/rows.py derive_lead_key).
    derived_key: bool = False
    # Cells that could not be read, in words; a time problem makes the row invalid.
    time_problems: tuple[str, ...] = ()
    # Cells that make the row unsendable, named, in words (a value's currency that contradicts
    # the Currency cell, a cell that could not be read at all): the row is invalid.
    refusals: tuple[str, ...] = ()
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


class Transition(NamedTuple):
    """A status the lead was seen to take: when it took it (`at`, from `source`) and when the
    ledger learned of it (`seen_at`). A "seen" transition has no change time: `at` is only when
    it was observed. A named tuple: a ledger loads one per lead on every pass, and building
    a frozen dataclass cost four times as much."""

    status: str
    at: datetime
    source: str = "edit"
    seen_at: datetime | None = None

    @property
    def observed(self) -> datetime:
        return self.seen_at or self.at

    @property
    def timed(self) -> bool:
        return self.source not in UNTIMED


@dataclass(frozen=True, slots=True)
class LeadHistory:
    events: Mapping[str, EventRecord] = field(default_factory=dict)
    transitions: Sequence[Transition] = ()
    # (since, at) of the lead's edits changed back before they settled (docs/edits.md): a
    # stamp the add-on wrote then and could not put back is no status's time.
    withdrawn: Sequence[tuple[datetime, datetime]] = ()


@dataclass(slots=True)
class PlannedEvent:
    """One event to send: where it comes from, its identity in the ledger, and its payload.
    Nothing changes one once built (not frozen: a frozen dataclass took four times as long to
    build, ~0.6 s of a 100,000-lead first pass)."""

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
    # The ledger held no record of it before this pass: a mark made ahead of its request
    # (sync/send.py) can be taken back whole if the request never leaves.
    first: bool = False
    # The Limited Data Use fields as sent, for this lead's place; one dict shared by every
    # event with the same answer.
    processing_options: Mapping[str, object] = field(default_factory=dict)
    # Of the payload: a failed event is retried once its row changes (derived, not passed).
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        shown = _user_data_repr(self.user_data)
        if self.processing_options:
            self.fingerprint = payload_fingerprint(self.payload, shown)
            return
        # payload_fingerprint's text, its items written in their sorted order (tested against
        # it): the payload dict is not built, custom_data's repr is shared.
        custom = self._custom_data_text(as_json=False)
        text = (
            f"[('action_source', {self.action_source!r}), ('custom_data', {custom}), "
            f"('event_id', {self.event_id!r}), ('event_name', {self.event_name!r}), "
            f"('event_time', {int(self.event_time)!r}), ('user_data', {shown})]"
        )
        self.fingerprint = hashlib.sha256(text.encode()).hexdigest()[:16]

    def _custom_data_text(self, *, as_json: bool) -> str:
        value = self.value
        kind = type(value).__name__
        return custom_data_text(
            self.lead_status, self.lead_event_source, value, self.currency, kind, as_json
        )

    @property
    def json(self) -> str:
        """The payload as a request carries it (meta/payload.py `dumps`), its user_data's and
        custom_data's text shared with the events before it."""
        if self.processing_options:
            return dumps(self.payload)
        return event_json(
            event_name=self.event_name,
            event_time=self.event_time,
            event_id=self.event_id,
            action_source=self.action_source,
            user_data_json=_user_data_json(self.user_data),
            custom_data_json=self._custom_data_text(as_json=True),
        )

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
            processing_options=self.processing_options,
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
class BaselineEvent:
    """A stage the lead reached before sheet-bridge could see when: recorded, never sent (unless
    a defensible time appears later, e.g. Status Changed At is filled in)."""

    row_number: int
    lead_key: str
    event_name: str
    event_id: str
    seen_at: datetime


BASELINE_REASON = "reached before sheet-bridge saw when: not sent (baseline)"


@dataclass(frozen=True, slots=True)
class Observation:
    """A status the plan saw that differs from the last one the ledger knows; the run records it
    as a transition (with its change time and source, or "seen" when it has none)."""

    lead_key: str
    status: str
    at: datetime
    source: str = "seen"


@dataclass(slots=True)
class RowDecision:
    row_number: int
    lead_key: str
    status: str
    outcome: Outcome
    message: str
    events: list[PlannedEvent] = field(default_factory=list)
    # Most leads have none: an empty tuple is shared, an empty list is ~56 bytes a lead each.
    expired: Sequence[ExpiredEvent] = ()
    baseline: Sequence[BaselineEvent] = ()
    warnings: list[str] = field(default_factory=list)
    match: MatchKeys | None = None
    # What the ledger holds for this lead's stages, funnel order (for the row's CAPI columns).
    records: list[EventRecord] = field(default_factory=list)
    # A due lead whose identity is not hashed yet (`plan(..., hash_later=True)`): its events
    # are built by `Plan.complete`. None once complete (and for every other outcome).
    todo: Unhashed | None = None


@dataclass(slots=True)
class Unhashed:
    """What a due lead's decision still needs to build its events: hashing its identity is
    most of a first pass's planning (phone numbers above all), so it is done last, lead by
    lead, while the pass sends the leads before it."""

    row: LeadRow
    stage: Stage
    fresh: list[tuple[Stage, datetime]]  # the stages to send and their times, funnel order
    current: StatusTime
    unsent: Sequence[str]  # stages reached at no time we can defend (baseline)
    records: Mapping[str, EventRecord]  # the ledger's, by event name
    identity: str  # lead_identity: its Leadgen ID's, or its key's
    oldest: int  # its oldest event time: the send order (oldest first)
    held_words: Sequence[str] = ()  # from one_identity_per_pixel


def hash_row(row: LeadRow, meta: MetaConfig) -> HashedIdentity:
    """A lead row's identity normalized and hashed as the bridge sends it."""
    return hash_user_data(row.identity, meta.default_country, assume_country=meta.assume_country)


@dataclass(slots=True)
class Plan:
    decisions: list[RowDecision]
    observations: list[Observation]
    # Finishes a due lead's decision (hash_later): _Planner.complete.
    finish: Callable[[RowDecision, HashedIdentity | None], None] | None = None

    @property
    def leads_to_send(self) -> list[RowDecision]:
        """The leads with events to send, oldest first (nearest the window edge)."""
        by_row = [d for d in self.decisions if d.events]
        by_row.sort(key=lambda d: (min(e.event_time for e in d.events), d.row_number))
        return by_row

    @property
    def unhashed(self) -> list[RowDecision]:
        """The due leads still to complete (hash_later), in the order they are sent: oldest
        event first (nearest the window edge), then by row."""
        todo = [d for d in self.decisions if d.todo is not None]
        todo.sort(key=lambda d: (d.todo.oldest, d.row_number))  # type: ignore[union-attr]
        return todo

    def complete(self, decision: RowDecision, hashed: HashedIdentity | None = None) -> None:
        """Build a due lead's events (`hashed`: its identity, hashed elsewhere by `hash_row`)."""
        if decision.todo is not None and self.finish is not None:
            self.finish(decision, hashed)

    @property
    def events(self) -> list[PlannedEvent]:
        """Every event to send, oldest lead first, funnel order within a lead."""
        return [e for d in self.leads_to_send for e in d.events]

    @property
    def expired(self) -> list[ExpiredEvent]:
        return [x for d in self.decisions for x in d.expired]

    @property
    def baseline(self) -> list[BaselineEvent]:
        return [x for d in self.decisions for x in d.baseline]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.decisions:
            out[d.outcome] = out.get(d.outcome, 0) + 1
        return out


def _withdrawn_at(stamp: datetime, history: LeadHistory) -> bool:
    """Whether a stamp is the time of one of the lead's withdrawn edits (to the second: the
    add-on stamps whole seconds, the edit's time is the same text)."""
    t = int(stamp.timestamp())
    return any(int(a.timestamp()) <= t <= int(b.timestamp()) for a, b in history.withdrawn)


def _observed(t: Transition) -> datetime:
    return t.observed


def event_id_for(pixel_id: str, identity: str, event_name: str) -> str:
    """Deterministic: the same lead of a pixel (its identity, see `lead_identity`) and event
    name give the same id on every run, machine, tab and spreadsheet, so Meta, which
    deduplicates on (event_name, event_id) per pixel, sees one lead once
    (https://developers.facebook.com/docs/marketing-api/conversions-api/deduplicate-pixel-and-server-events).
    Events recorded before identities keep the id they were sent with (the ledger's)."""
    digest = hashlib.sha256(f"{pixel_id}\x1f{identity}\x1f{event_name}".encode())
    return "sb." + digest.hexdigest()[:32]


def lead_identity(lead_key: str, user_data: Mapping[str, object]) -> str:
    """Who a lead is to its pixel (docs/identity-and-dates.md): its Leadgen ID when the row has
    a valid one (Meta's own id for the person), else its CAPI Key. Computed from what is sent
    (hashed user_data), so the ledger derives the same identity from what it stored."""
    lead_id = user_data.get("lead_id")
    return f"lead:{lead_id}" if lead_id not in (None, "") else f"key:{lead_key}"


def row_identity(row: LeadRow) -> str:
    """A sheet row's identity (`lead_identity`), from its raw Leadgen ID cell."""
    try:
        lead_id: object = normalize_lead_id(row.identity["lead_id"])
    except Exception:  # no cell, or not a lead id: the row is its key
        lead_id = None
    return lead_identity(row.key, {"lead_id": lead_id})


def decision_identity(decision: RowDecision) -> str | None:
    """Who a due lead is to its pixel (`lead_identity`); None when nothing is due."""
    if decision.todo is not None:
        return decision.todo.identity
    if decision.events:
        return lead_identity(decision.lead_key, decision.events[0].user_data)
    return None


def one_identity_per_pixel(the_plan: Plan, held: Mapping[tuple[str, str], str]) -> None:
    """Drop each due event whose lead already has it at this pixel: held by another row or tab
    (`held`: (identity, event name) → where, in words) or due from an earlier row of this pass.
    Meta counts a lead once per (event_name, event_id) and only within 48 hours
    (https://developers.facebook.com/docs/marketing-api/conversions-api/deduplicate-pixel-and-server-events),
    so the bridge must never send one lead's event twice under two ids."""
    # Who has each: where in words (`held`), or the row number of this pass's row that has it
    # (its words made only for a row that drops an event, not for each of ~200,000 events).
    taken: dict[tuple[str, str], str | int] = dict(held)
    for d in the_plan.decisions:
        identity = decision_identity(d)
        if identity is None:
            continue
        names = [s.event for s, _ in d.todo.fresh] if d.todo else [e.event_name for e in d.events]
        dropped: list[tuple[str, str]] = []
        for name in names:
            holder = taken.setdefault((identity, name), d.row_number)
            if holder != d.row_number:
                dropped.append((name, holder if isinstance(holder, str) else f"row {holder}"))
        if not dropped:
            continue
        same = "Leadgen ID" if identity.startswith("lead:") else "CAPI Key"
        words = (
            f"{', '.join(n for n, _ in dropped)} not sent: this lead (same {same}) has it "
            f"already ({dropped[0][1]}); Meta counts one lead once per pixel"
        )
        gone = {n for n, _ in dropped}
        if d.todo is not None:
            d.todo.fresh = [(s, at) for s, at in d.todo.fresh if s.event not in gone]
            if d.todo.fresh:
                d.todo.held_words = [*d.todo.held_words, words]
                continue
            d.todo = None
        else:
            d.events = [e for e in d.events if e.event_name not in gone]
            if d.events:
                d.warnings.append(words)
                d.message = _due_words(tuple(e.event_name for e in d.events))
                continue
        d.outcome = "already_sent"
        d.message = words


def payload_fingerprint(payload: Mapping[str, object], user_data_repr: str | None = None) -> str:
    """Identifies the content of a payload, so a failed event is retried once its row changes:
    the SHA-256 of `repr(sorted(payload.items()))` (ledgers keep it: it never changes).
    `user_data_repr`: `repr(payload["user_data"])`, when known (_user_data_repr)."""
    if user_data_repr is None:
        text = repr(sorted(payload.items()))
    else:  # the same text, with the lead's user_data shown once for all its events
        parts = (
            f"({k!r}, {user_data_repr if k == 'user_data' else repr(v)})"
            for k, v in sorted(payload.items())
        )
        text = "[" + ", ".join(parts) + "]"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class _LastText:
    """A user_data dict's text, worked out once for the events of a lead planned (or encoded)
    one after another: they share one dict, never changed once hashed (a fingerprint then takes
    4.0 µs, not 7.2 µs: bench/RESULTS.md, "Fourth round")."""

    __slots__ = ("_last", "_make")

    def __init__(self, make: Callable[[object], str]) -> None:
        self._make = make
        self._last: tuple[object, str] = (None, make(None))

    def __call__(self, user_data: dict[str, object]) -> str:
        last = self._last  # one read: another thread may replace it meanwhile
        if last[0] is user_data:
            return last[1]
        text = self._make(user_data)
        self._last = (user_data, text)
        return text


_user_data_repr = _LastText(repr)
_user_data_json = _LastText(dumps)


@functools.lru_cache(maxsize=256)
def _due_words(events: tuple[str, ...]) -> str:
    """A due lead's words ("due: Lead, QualifiedLead"): one text for the leads due the same
    stages, not one each (a plan holds every due lead's until the pass ends)."""
    return "due: " + ", ".join(events)


def _cut(text: str, limit: int = 60) -> str:
    """A cell quoted in a status message, cut short: a cell holds up to 50,000 characters, and
    so does the CAPI Status cell the message goes to (Google refuses a longer one)."""
    return text if len(text) <= limit else text[:limit] + "…"


def describe_time(at: datetime, tz: tzinfo | None = None) -> str:
    """A time as a row message shows it: in the sheet's zone, to the minute."""
    return (at.astimezone(tz) if tz is not None else at).strftime("%Y-%m-%d %H:%M")


def describe_due(at: datetime, tz: tzinfo | None = None) -> str:
    """When a settling edit goes, as the edit's answer (the toast) and the sidebar show it: in
    the sheet's zone, to the second, with the zone's name (a person reads it as their clock)."""
    local = at.astimezone(tz) if tz is not None else at
    return f"{local:%H:%M:%S} {local.tzname() or ''}".rstrip()


def describe_age(age: timedelta) -> str:
    days = age.days
    hours = age.seconds // 3600
    if days >= 1:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    return f"{hours} h {age.seconds % 3600 // 60} min"


@dataclass(frozen=True, slots=True)
class StatusTime:
    """When the row's current status was taken (rule 1), and what the row should say of it."""

    at: datetime | None  # None: no defensible time (baseline)
    source: TimeSource
    note: str | None = None


class _Planner:
    def __init__(
        self,
        config: BridgeConfig,
        history: Mapping[str, LeadHistory],
        now: datetime,
        last_full_pass: datetime | None,
        tz: tzinfo,
    ):
        self.config = config
        self.tz = tz
        self.stages: StageMap = config.stage_map
        self.history = history
        self.now = now
        self.last_full_pass = last_full_pass
        meta = config.meta
        self.action_source = meta.action_source
        self.assumed_place = meta.assumed_place()
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
        self.changed_col = headers.get("status_changed_at", "Status Changed At")
        self.created_col = headers.get("created_at", "Created At")
        self.first_positive = self.stages.positive[0] if self.stages.positive else None
        # The deepest positive stage sending each event name (a name may serve several).
        self.positive_by_event: dict[str, Stage] = {}
        for s in self.stages.positive:
            known = self.positive_by_event.get(s.event)
            if known is None or s.index > known.index:
                self.positive_by_event[s.event] = s
        self._due_of: dict[int, tuple[Stage, ...]] = {}
        self._keys_of: dict[int, frozenset[str]] = {}
        self.observations: list[Observation] = []
        self.shared_pixel_ids: set[str] = set()
        self.settle = timedelta(seconds=config.sync.settle_seconds)

    # -- one row ---------------------------------------------------------------------------
    def decide(self, row: LeadRow) -> RowDecision:
        status = row.status.strip()

        def skip(message: str, outcome: Outcome = "skipped") -> RowDecision:
            return RowDecision(row.row_number, row.key, status, outcome, message)

        if not status:
            return skip("no status yet: nothing to send")
        stage = self.stages.lookup(status)
        history = self.history.get(row.key, LeadHistory())
        # Most rows of a pass show the status the ledger last saw: nothing to observe, and
        # their time is worked out only if an event is still due (100,000 rows every pass).
        latest = max(history.transitions, key=_observed, default=None)
        if latest is not None and self._settling(latest, status):
            decision = skip(
                f"{_cut(status)} since {self._time(latest.at)} (an edit): sent at "
                f"{self._time(latest.at + self.settle)} if it still holds then; a change back "
                "before that sends nothing",
                "settling",
            )
            decision.records = [
                history.events[s.event] for s in self.stages.stages if s.event in history.events
            ]
            return decision
        current: StatusTime | None = None
        if latest is None or status_key(latest.status) != status_key(status):
            current = self._status_time(row, status, stage, history)
            self._observe(row, status, current)
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

        records = [history.events[s.event] for s in due if s.event in history.events]
        pending = [s for s in due if self._needs_sending(history.events.get(s.event))]
        highest = self._highest_reached(history)
        moved_back = highest is not None and not stage.negative and highest.index > stage.index
        if current is None:
            current = (
                self._status_time(row, status, stage, history)
                if pending
                else StatusTime(None, "seen")
            )
        pixel_note = None
        if pending and self._pixel_reported(row, pending[0], stage, history, current):
            pixel_note = (
                f"{pending[0].event} not sent: the pixel reported this lead (event id "
                f"{_cut(row.pixel_event_id or '', 40)}) more than 48 hours ago and Meta "
                "deduplicates only within 48 hours, so a server Lead now would count it twice"
            )
            pending = pending[1:]
        if pixel_note and not pending and not moved_back and not records:
            decision = skip(pixel_note)
            return decision
        if not pending or moved_back:
            return self._nothing_due(row, status, stage, highest, records)

        if row.time_problems or row.refusals:
            decision = skip(
                "not sent: " + "; ".join((*row.time_problems, *row.refusals)), "invalid"
            )
            decision.records = records
            return decision
        times = self._event_times(row, stage, pending, history, current)
        if isinstance(times, str):
            decision = skip(times, "invalid")
            decision.records = records
            return decision

        decision = RowDecision(row.row_number, row.key, status, "due", "")
        decision.records = records
        if current.note:
            decision.warnings.append(current.note)
        if pixel_note:
            decision.warnings.append(pixel_note)
        fresh: list[tuple[Stage, datetime]] = []
        baseline: list[BaselineEvent] = []
        expired: list[ExpiredEvent] = []
        identity = row_identity(row)
        for s in pending:
            record = history.events.get(s.event)
            at = times.get(s.index)
            if at is None:
                if record is None or record.state != "baseline":
                    event_id = self._event_id(row, s, identity)
                    baseline.append(
                        BaselineEvent(row.row_number, row.key, s.event, event_id, self.now)
                    )
                continue
            age = self.now - at
            if age > self.window:
                expired.append(
                    ExpiredEvent(
                        row.row_number,
                        row.key,
                        s.event,
                        record.event_id if record else self._event_id(row, s, identity),
                        int(at.timestamp()),
                        age,
                        self.meta_window,
                    )
                )
            else:
                fresh.append((s, at))

        decision.baseline, decision.expired = baseline or (), expired or ()
        unsent = tuple(s.event for s in pending if s.index not in times)
        if not fresh:
            # The row's word is about the stage it is at: undatable, or too old.
            decision.outcome = "baseline" if stage.index not in times else "expired"
            parts = []
            if unsent:
                parts.append(self._baseline_message(stage, unsent, current))
            if decision.expired:
                parts.append(self._expired_message(decision.expired))
            decision.message = "; ".join(parts)
            return decision

        decision.message = _due_words(tuple(s.event for s, _ in fresh))
        decision.todo = Unhashed(
            row,
            stage,
            fresh,
            current,
            unsent,
            history.events,
            identity,
            min(int(at.timestamp()) for _, at in fresh),
        )
        return decision

    def complete(self, decision: RowDecision, hashed: HashedIdentity | None = None) -> None:
        """The second half of `decide` for a due lead: hash its identity (unless `hashed`, the
        same function's answer computed elsewhere, is given) and build its events. Kept apart
        so a pass sends the first leads while later ones are still being hashed."""
        try:
            self._complete(decision, hashed)
        except Exception as exc:  # no row may stop the tab (issue 21): this one is invalid
            decision.todo = None
            decision.outcome, decision.message = "invalid", unplannable(exc)
            decision.events, decision.expired, decision.baseline = [], (), ()

    def _complete(self, decision: RowDecision, hashed: HashedIdentity | None) -> None:
        todo = decision.todo
        if todo is None:
            return
        decision.todo = None
        row, stage, fresh, current = todo.row, todo.stage, todo.fresh, todo.current
        meta = self.config.meta
        identity = hashed if hashed is not None else hash_row(row, meta)
        # Limited Data Use describes the person: each lead's own place (meta/payload.py).
        options = processing_options(
            meta.data_processing_options, identity.country, identity.state, self.assumed_place
        )
        problems = [*row.field_problems, *identity.problems]
        decision.warnings.extend(self._describe_problem(p) for p in problems)
        decision.warnings.extend(todo.held_words)
        decision.match = match_keys(identity.user_data)
        if not decision.match.sendable:
            decision.outcome = "invalid"
            have = ", ".join(FIELD_NAMES[k] for k in decision.match.keys) or "nothing usable"
            decision.message = (
                f"not sent: Meta needs a stronger identifier (this row has {have}); "
                "add an e-mail, a phone number or the Leadgen ID"
            )
            decision.expired = ()
            decision.baseline = ()
            return
        for s, at in fresh:
            record = todo.records.get(s.event)
            value, currency = self._value(row, s, stage)
            event = PlannedEvent(
                row.row_number,
                row.key,
                s,
                s.event,
                record.event_id if record else self._event_id(row, s, todo.identity),
                int(at.timestamp()),
                identity.user_data,
                # docs/meta-events.md: each event's lead_status is the status of the stage it stands
                # for, so a custom conversion on it selects that stage and no other.
                decision.status if s.index == stage.index else s.statuses[0],
                self.action_source,
                self.config.meta.lead_event_source,
                value,
                currency,
                resend=record is not None and record.state == "sending",
                first=record is None,
                processing_options=options,
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
            failed = [todo.records[s.event] for s, _ in fresh if s.event in todo.records]
            decision.message = "not sent again: Meta refused it before; fix the row to retry"
            if failed and failed[-1].fingerprint:
                decision.message = (
                    f"{', '.join(r.event_name for r in failed)} refused by Meta before and the "
                    "row has not changed since; fix the row to retry"
                )
            return
        decision.message = _due_words(tuple(e.event_name for e in decision.events))
        if decision.expired:
            decision.message += "; " + self._expired_message(decision.expired)
        if todo.unsent:
            decision.message += "; " + self._baseline_message(stage, todo.unsent, current)

    # -- pieces ----------------------------------------------------------------------------
    def _settling(self, latest: Transition, status: str) -> bool:
        """Rule 4: the lead still shows the status an edit recorded less than settle ago."""
        return (
            latest.source == "edit"
            and self.now < latest.at + self.settle
            and status_key(latest.status) == status_key(status)
        )

    def _due_stages(self, stage: Stage) -> Sequence[Stage]:
        """The stages a lead at `stage` should have sent, in funnel order (docs/meta-events.md:
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
        # A baseline stays due: a time we can defend may appear (Status Changed At filled in).
        return record is None or record.state in ("sending", "failed", "baseline")

    def _value(self, row: LeadRow, s: Stage, current: Stage) -> tuple[float | None, str | None]:
        """The row's value cell belongs to the stage the row is at now; a stage backfilled
        below it carries its own configured value, and a negative stage never carries the deal
        value (Meta values a conversion in proportion to the value passed)."""
        stage_currency = s.currency or self.config.meta.currency
        if s.index == current.index and not s.negative and row.value is not None:
            # The row's own amount, in the currency its cell or Currency column says.
            return row.value, row.currency or stage_currency
        # A configured value is in its stage's or the bridge's currency: a row's Currency
        # cell says nothing about it (issue 21).
        return (None, None) if s.value is None else (s.value, stage_currency)

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
            if record.state not in ("sent", "sending", "expired", "baseline"):
                continue
            s = self.positive_by_event.get(record.event_name)
            if s is not None and (best is None or s.index > best.index):
                best = s
        return best

    def _status_keys(self, stage: Stage) -> frozenset[str]:
        keys = self._keys_of.get(stage.index)
        if keys is None:
            keys = self._keys_of[stage.index] = frozenset(status_key(x) for x in stage.statuses)
        return keys

    def _first_timed(self, history: LeadHistory, keys: frozenset[str]) -> Transition | None:
        """The earliest recorded change into one of these statuses that has a change time."""
        best: Transition | None = None
        for t in history.transitions:
            if t.timed and status_key(t.status) in keys and (best is None or t.at < best.at):
                best = t
        return best

    def _other_seen(
        self, history: LeadHistory, keys: frozenset[str]
    ) -> tuple[datetime, str] | None:
        """The last time the ledger knew the lead at a status other than these, and which.

        Besides the transitions themselves: the last full pass saw every lead, each at its
        latest recorded status as of then."""
        best: tuple[datetime, str] | None = None
        latest_by_pass: Transition | None = None
        horizon = self.last_full_pass
        for t in history.transitions:
            seen = t.observed
            if status_key(t.status) not in keys and (best is None or seen > best[0]):
                best = (seen, t.status)
            if (
                horizon is not None
                and seen <= horizon
                and (latest_by_pass is None or seen >= latest_by_pass.observed)
            ):
                latest_by_pass = t
        if (
            horizon is not None
            and latest_by_pass is not None
            and status_key(latest_by_pass.status) not in keys
            and (best is None or horizon > best[0])
        ):
            best = (horizon, latest_by_pass.status)
        return best

    def _status_time(
        self, row: LeadRow, status: str, stage: Stage | None, history: LeadHistory
    ) -> StatusTime:
        """Rule 1 of the module docstring: when the row's current status was taken."""
        keys = self._status_keys(stage) if stage else frozenset({status_key(status)})
        other = self._other_seen(history, keys)
        timed = self._first_timed(history, keys)
        if timed is not None:
            # A change the add-on reported (its stamp in the sheet says the same) or one an
            # earlier pass recorded: the first time the lead took this stage.
            return StatusTime(timed.at, "edit")
        stale: str | None = None
        stamp = row.status_changed_at
        if stamp is not None and not row.changed_date_only and _withdrawn_at(stamp, history):
            stale = (
                f"{self.changed_col} {self._time(stamp)} is the time of an edit changed back "
                "before it settled (nothing was sent for it), so it is not this status's time"
            )
            stamp = None
        if stamp is not None:
            day_end = stamp + timedelta(days=1) if row.changed_date_only else stamp
            if other is None or day_end > other[0]:
                at = stamp
                if row.changed_date_only:
                    # "Some time that day": after what we know came before, by the day's end.
                    floor = max([stamp] + [t for t in (row.created_at, other and other[0]) if t])
                    at = min(floor, day_end, max(self.now, stamp))
                return StatusTime(at, "stamp")
            stale = (
                f"{self.changed_col} {self._time(stamp)} was not updated when the status "
                f"changed from {_cut(other[1], 30)}, so it is not this change's time"
            )
        first = self.first_positive
        is_first = stage is not None and first is not None and stage.index == first.index
        created = self._created(row, history)
        if is_first and created is not None:
            note = f"{stale}; used {self.created_col}" if stale else None
            return StatusTime(created, "created", note)
        if other is not None and self.now - other[0] <= SCAN_BOUND:
            note = (
                f"time estimated: the status changed between {self._time(other[0])} and "
                f"{self._time(self.now)} (no {self.changed_col}); sent with the time "
                "the change was seen"
            )
            return StatusTime(self.now, "scan", f"{stale}; {note}" if stale else note)
        known = bool(history.transitions) or bool(history.events)
        if (
            not known
            and is_first
            and self.last_full_pass is not None
            and self.now - self.last_full_pass <= SCAN_BOUND
        ):
            note = (
                "time estimated: a new lead since the sync of "
                f"{self._time(self.last_full_pass)} (no {self.created_col}); sent with "
                "the time it was first seen"
            )
            return StatusTime(self.now, "scan", note)
        return StatusTime(None, "seen", stale)

    def _created(self, row: LeadRow, history: LeadHistory) -> datetime | None:
        """When the lead was created, as an event time (rule 1c). A date-only Created At is
        "some time that day", read as rule 1a reads a date-only Status Changed At: not before
        what we know came before it (a full pass that did not see the lead yet), by the end
        of that day and by now; never a midnight made up for it."""
        created = row.created_at
        if created is None or not row.created_date_only:
            return created
        floor = created
        new_lead = not history.transitions and not history.events
        if new_lead and self.last_full_pass is not None:
            floor = max(floor, self.last_full_pass)
        return min(floor, created + timedelta(days=1), max(self.now, created))

    def _observe(self, row: LeadRow, status: str, current: StatusTime) -> None:
        """Record a status that differs from the last one the ledger knows.

        Only a scan's estimate is kept as a change time: it cannot be seen again later. A
        stamp or Created At is read from the row on every pass (a corrected cell wins)."""
        source = "scan" if current.source == "scan" else "seen"
        self.observations.append(Observation(row.key, status, self.now, source))

    def _deepest_seen_before(self, history: LeadHistory, before: datetime) -> int:
        """The funnel rank of the deepest positive stage the lead was seen at before a time."""
        deepest = -1
        for t in history.transitions:
            if t.observed < before:
                s = self.stages.lookup(t.status)
                if s is not None and not s.negative:
                    deepest = max(deepest, self.stages.rank(s))
        for r in history.events.values():
            if r.state == "baseline":
                s = self.positive_by_event.get(r.event_name)
                if s is not None:
                    deepest = max(deepest, self.stages.rank(s))
        return deepest

    def _event_times(
        self,
        row: LeadRow,
        current: Stage,
        pending: list[Stage],
        history: LeadHistory,
        current_time: StatusTime,
    ) -> dict[int, datetime] | str:
        """Each pending stage's event_time (rules 2 and 3); a stage left out is a baseline."""
        times: dict[int, datetime] = {}
        # Where each time was read, to name the right cell when it is wrong (issue 21).
        came_from: dict[int, str] = {}
        later = current_time.at
        later_from = self._source_words(current_time.source)
        for s in reversed(pending):
            at: datetime | None
            where = later_from
            if s.index == current.index:
                at = current_time.at
            else:
                own = self._first_timed(history, self._status_keys(s))
                at = own.at if own is not None else None
                where = self._source_words("edit")
                if at is None and self.first_positive and s.index == self.first_positive.index:
                    at, where = self._created(row, history), self.created_col
                if at is not None:
                    if later is not None and later < at:
                        at, where = later, later_from
                elif later is not None and self._deepest_seen_before(
                    history, later
                ) < self.stages.rank(s):
                    at, where = later, later_from
            if at is not None:
                times[s.index] = at
                came_from[s.index] = where
                later, later_from = at, where
        created = row.created_at
        if created is not None and created > self.now + FUTURE_SKEW:
            return (
                f"not sent: {self.created_col} {self._time(created)} is in the future; "
                "fix the cell (Meta refuses events from the future)"
            )
        for s in pending:
            if s.index not in times:
                continue
            at = times[s.index]
            if at > self.now + FUTURE_SKEW:
                return (
                    f"not sent: {came_from[s.index]} {self._time(at)} is in the future; "
                    "fix the cell (Meta refuses events from the future)"
                )
            if at > self.now:
                times[s.index] = at = self.now  # small clock skew
            if created is not None and at < created:
                return (
                    f"not sent: the {s.event} time {self._time(at)} is before "
                    f"{self.created_col} {self._time(created)}; Meta discards stage events "
                    "that come before the lead; fix one of the two cells"
                )
        return times

    def _source_words(self, source: TimeSource) -> str:
        """The cell (or record) a status time was read from, as a row message names it."""
        return {
            "stamp": self.changed_col,
            "created": self.created_col,
            "edit": "the recorded change time",
            "scan": "the time the change was seen",
        }.get(source, self.changed_col)

    def _pixel_id(self, row: LeadRow, stage: Stage) -> str | None:
        """The pixel's event id when this stage's event is the browser's Lead, else None.

        A pixel id on several rows (or with control characters) is pasted junk: reusing it
        would make Meta drop one lead's Lead as the other's duplicate."""
        pixel = row.pixel_event_id
        if (
            pixel is not None
            and pixel.isprintable()
            and pixel not in self.shared_pixel_ids
            and self.first_positive is not None
            and stage.index == self.first_positive.index
        ):
            return pixel
        return None

    def _pixel_reported(
        self,
        row: LeadRow,
        first: Stage,
        stage: Stage,
        history: LeadHistory,
        current: StatusTime,
    ) -> bool:
        """The pixel already reported this Lead long enough ago that Meta can no longer
        deduplicate a server Lead against it (docs/deduplication.md): send none. The browser's Lead
        happened when the lead was created (or, lacking that, when it took the first stage)."""
        if history.events.get(first.event) is not None or self._pixel_id(row, first) is None:
            return False
        browser_time = row.created_at
        if browser_time is None and stage.index == first.index:
            browser_time = current.at
        return browser_time is not None and self.now - browser_time > PIXEL_DEDUP

    def _event_id(self, row: LeadRow, stage: Stage, identity: str) -> str:
        """`identity`: the row's (row_identity)."""
        # docs/deduplication.md: the first stage reuses the pixel's event id so Meta deduplicates it
        # against the browser's Lead (only sent while it can: see _pixel_reported).
        pixel = self._pixel_id(row, stage)
        if pixel is not None:
            return pixel
        return event_id_for(self.config.meta.pixel_id, identity, stage.event)

    def _baseline_message(self, stage: Stage, unsent: Sequence[str], current: StatusTime) -> str:
        why = current.note or f"no {self.changed_col}"
        return (
            f"baseline: first seen at {stage.label} with no change time we can defend ({why}); "
            f"nothing sent for {', '.join(unsent)}, reached before sheet-bridge was watching. "
            f"Changes from now on are sent; or fill {self.changed_col} with when it really "
            "changed"
        )

    def _time(self, at: datetime) -> str:
        return describe_time(at, self.tz)

    def _expired_message(self, expired: Sequence[ExpiredEvent]) -> str:
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


def unplannable(exc: Exception) -> str:
    """A row's message when planning it raised: the row is invalid, the others go on."""
    return (
        f"not sent: the row could not be planned ({type(exc).__name__}); check its cells for "
        "values pasted by mistake and retype them"
    )


def plan(
    rows: Sequence[LeadRow],
    config: BridgeConfig,
    history: Mapping[str, LeadHistory],
    now: datetime,
    *,
    only_keys: Collection[str] | None = None,
    last_full_pass: datetime | None = None,
    tz: tzinfo = UTC,
    hash_later: bool = False,
) -> Plan:
    """Decide, for every lead row, which events are due and why any are not.

    `history` is the ledger's view per lead key; `now` must be timezone-aware. Rows sharing a
    lead key after the first are reported as duplicates and never sent twice. `only_keys`
    restricts the plan to those leads (an edit syncs just its lead). `last_full_pass` is when
    the last completed full pass of this tab started (it saw every lead): the bound of a scan's
    estimate (module docstring, rule 1d). `tz`: the sheet's zone, for times in row messages.
    `hash_later`: leave each due lead's identity unhashed and its events unbuilt
    (`RowDecision.todo`): `Plan.complete` builds them, lead by lead, `Plan.unhashed` in order.
    """
    if now.tzinfo is None:
        raise ValueError("plan() needs an aware `now`")
    planner = _Planner(config, history, now, last_full_pass, tz)
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
        try:
            decisions.append(planner.decide(row))
        except Exception as exc:  # no row may stop the tab (issue 21): this one is invalid
            decisions.append(
                RowDecision(
                    row.row_number, row.key, row.status.strip()[:200], "invalid", unplannable(exc)
                )
            )
    the_plan = Plan(decisions, planner.observations, planner.complete)
    if not hash_later:
        for d in decisions:
            the_plan.complete(d)
    return the_plan
