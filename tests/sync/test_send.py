"""A pass at Meta's real speed: a few requests in flight, every answer recorded, a lead's stages
never racing each other, throttling slowing it down, a halt stopping it (docs/meta-errors.md,
docs/meta-events.md)."""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from itertools import pairwise
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheet_bridge.sheets.client import SheetsClient
from sheet_bridge.sync.ledger import LedgerError, open_ledger
from sheet_bridge.sync.run import Bridge, capi_client
from sheet_bridge.sync.send import (
    SENDING_SWITCH_INTERVAL,
    Chunk,
    InFlightLimit,
    lead_chunks,
    quick_switches,
)
from tests.conftest import WORLD_TOKEN, World, lead_row

MakeWorld = Callable[..., World]
FUNNEL = ["Lead", "QualifiedLead", "Schedule", "StartTrial", "Purchase"]


def set_speed(world: World, **spec: Any) -> None:
    httpx.post(world.meta_url + "/_fake/speed", json=spec, timeout=10).raise_for_status()


def request_log(world: World) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = httpx.get(world.meta_url + "/_fake/requests", timeout=10).json()[
        "requests"
    ]
    return log


def ledger_states(world: World) -> Counter[str]:
    ledger = open_ledger(world.config.ledger_location({}))
    where = world.bridge().sheet_tab
    return Counter(e.state for e in ledger.events(where))


def bridge_that_sleeps(world: World, **capi: Any) -> Bridge:
    """A bridge whose client really waits out its backoff (the world's does not)."""
    config = world.config
    return Bridge(
        config,
        sheets=SheetsClient(config.sheets, sleep=lambda s: None),
        ledger=open_ledger(config.ledger_location({})),
        capi=capi_client(config.meta, WORLD_TOKEN, **capi),
        clock=lambda: world.now,
    )


# ---- requests: whole leads, full, in order ----------------------------------------------------


def lead(key: str, n: int) -> list[Any]:
    """A lead's events, as the chunker sees them (it only counts and keeps them)."""
    return [f"{key}.{i}" for i in range(n)]


def chunks_of(leads: list[list[Any]], size: int) -> list[Chunk]:
    return list(lead_chunks(leads, size))  # type: ignore[arg-type]


def test_a_lead_is_never_split_when_it_fits_in_one_request() -> None:
    leads = [lead("a", 2), lead("b", 3), lead("c", 1), lead("d", 2)]

    chunks = chunks_of(leads, 4)

    assert [c.events for c in chunks] == [
        ["a.0", "a.1", "c.0"],  # b (3) does not fit beside a; c, just behind it, fills the gap
        ["b.0", "b.1", "b.2"],
        ["d.0", "d.1"],
    ]
    assert not any(c.follows for c in chunks)


def test_requests_stay_full_so_there_are_events_over_batch_size_of_them() -> None:
    # The bench's funnel: many one-event leads fill the places a longer lead leaves.
    sizes = [1, 2, 1, 3, 1, 5, 2, 1, 4, 1] * 200
    leads = [lead(str(i), n) for i, n in enumerate(sizes)]

    chunks = chunks_of(leads, 50)

    assert len(chunks) == -(-sum(sizes) // 50)


def test_a_lead_longer_than_a_request_fills_requests_that_follow_each_other() -> None:
    chunks = chunks_of([lead("a", 1), lead("b", 5), lead("c", 1)], 2)

    assert [(c.events, c.follows) for c in chunks] == [
        (["a.0", "b.0"], False),
        (["b.1", "b.2"], True),
        (["b.3", "b.4"], True),
        (["c.0"], False),
    ]


@given(
    st.lists(st.integers(min_value=1, max_value=7), max_size=60),
    st.integers(min_value=1, max_value=9),
)
def test_every_event_goes_once_and_a_split_lead_is_in_requests_that_follow(
    sizes: list[int], size: int
) -> None:
    leads = [lead(str(i), n) for i, n in enumerate(sizes)]

    chunks = chunks_of(leads, size)

    assert sorted(e for c in chunks for e in c.events) == sorted(e for x in leads for e in x)
    assert all(0 < len(c.events) <= size for c in chunks)
    for i, n in enumerate(sizes):
        holding = [j for j, c in enumerate(chunks) if any(e.startswith(f"{i}.") for e in c.events)]
        if n <= size:
            assert len(holding) == 1
        else:  # consecutive, each waiting for the one before, its events in funnel order
            assert holding == list(range(holding[0], holding[0] + len(holding)))
            assert all(chunks[j].follows for j in holding[1:])
            mine = [e for j in holding for e in chunks[j].events if e.startswith(f"{i}.")]
            assert mine == lead(str(i), n)


def test_in_flight_starts_at_one_opens_after_an_answer_and_halves_when_throttled() -> None:
    limit = InFlightLimit(4)
    assert limit.now == 1  # a refused token costs one request, not four
    limit.answered()
    assert limit.now == 4
    limit.throttled(1)
    assert limit.now == 2
    limit.throttled(1)  # the same throttle seen again: no change
    assert limit.now == 2
    limit.throttled(3)
    assert limit.now == 1
    for _ in range(1 + 2):
        limit.answered()
    assert limit.now == 3  # one more after as many answers as were allowed
    for _ in range(10):
        limit.answered()
    assert limit.now == 4  # never past the configured most


# ---- a pass against a Meta that takes 150 ms --------------------------------------------------


def test_a_pass_keeps_four_requests_in_flight_and_records_every_answer(
    make_world: MakeWorld, world_now: datetime
) -> None:
    batches = 20
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(2 * batches)],
        meta={"batch_size": 2, "max_in_flight": 4},
    )
    set_speed(world, latency_ms=150)

    result = world.bridge().sync()

    assert result.events_sent == 2 * batches and result.meta_requests == batches
    stats = world.meta_stats()
    assert stats["requests"] == batches and stats["peak_in_flight"] == 4
    assert ledger_states(world) == Counter({"sent": 2 * batches})  # none left `sending`
    assert set(world.column("CAPI Status")) == {"Sent: Lead"}
    # Overlap read from the fake's own log (never the wall clock of a shared machine): four
    # requests were open at once, each started before an earlier one was answered.
    log = sorted(request_log(world), key=lambda r: r["started"])
    assert any(b["started"] < a["finished"] for a, b in zip(log, log[3:], strict=False))


def test_threads_switch_every_millisecond_while_a_pass_sends_and_as_before_after(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = make_world([lead_row(i, "New", now=world_now) for i in range(6)])
    bridge = world.bridge()
    assert bridge.capi is not None
    send, seen = bridge.capi.send, []

    def noting(*args: Any, **kw: Any) -> Any:
        seen.append(sys.getswitchinterval())
        return send(*args, **kw)

    monkeypatch.setattr(bridge.capi, "send", noting)
    before = sys.getswitchinterval()
    assert before > SENDING_SWITCH_INTERVAL  # Python's 5 ms, unless someone changed it
    assert bridge.sync().events_sent == 6
    assert seen == [SENDING_SWITCH_INTERVAL]
    assert sys.getswitchinterval() == before
    # Passes in several threads: the interval comes back when the last one ends.
    with quick_switches():
        with quick_switches():
            assert sys.getswitchinterval() == SENDING_SWITCH_INTERVAL
        assert sys.getswitchinterval() == SENDING_SWITCH_INTERVAL
    assert sys.getswitchinterval() == before


def test_the_first_request_goes_alone(make_world: MakeWorld, world_now: datetime) -> None:
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(10)],
        meta={"batch_size": 2, "max_in_flight": 4},
    )
    set_speed(world, latency_ms=100)

    world.bridge().sync()

    first, *rest = sorted(request_log(world), key=lambda r: r["started"])
    assert all(r["started"] >= first["finished"] for r in rest)


def test_one_leads_stages_are_never_in_two_requests_in_flight_at_once(
    make_world: MakeWorld, world_now: datetime
) -> None:
    statuses = ["Customer", "SQL", "New", "Opportunity", "MQL", "New", "Customer", "SQL"] * 3
    world = make_world(
        [lead_row(i, s, now=world_now) for i, s in enumerate(statuses)],
        meta={"batch_size": 3, "max_in_flight": 4},  # a Customer lead (5 events) spans requests
    )
    set_speed(world, latency_ms=60)

    result = world.bridge().sync()

    assert result.events_sent == sum(FUNNEL.index(_EVENT[s]) + 1 for s in statuses)
    assert world.meta_stats()["peak_in_flight"] > 1
    arrived = {e["event_id"]: e for e in world.meta_events()}
    when: dict[str, list[tuple[int, float, float]]] = {}
    for r in request_log(world):
        for event_id in r["event_ids"]:
            event = arrived[event_id]
            stage = FUNNEL.index(event["event_name"])
            when.setdefault(event["user_data"]["em"], []).append(
                (stage, r["started"], r["finished"])
            )
    assert len(when) == len(statuses)
    for stages in when.values():
        stages.sort()
        for (_, started, finished), (_, next_started, _) in pairwise(stages):
            # the same request, or the later stage's request left after the earlier one's answer
            assert next_started == started or next_started >= finished


class RecordingLedger:
    """The world's ledger, noting what each of the pass's writes of events carried."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.marks: list[tuple[list[str], list[str]]] = []  # (events marked, answers recorded)
        self.records = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def mark_sending(self, where: Any, events: Any, *args: Any, answered: Any = ()) -> None:
        self.inner.mark_sending(where, events, *args, answered=answered)
        ids = [e.event_id for pairs, _ in answered for e, _ in pairs]
        self.marks.append(([e.event_id for e in events], ids))

    def record_outcomes(self, *args: Any) -> None:
        self.records += 1
        self.inner.record_outcomes(*args)


def test_answers_are_committed_with_the_next_mark_and_before_a_later_stage_leaves(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """One transaction per request: Meta's answers are recorded with the next request's mark,
    the last ones when sending ends. A lead's earlier stage is recorded with, at the latest,
    the mark of the request holding its later stage; every answer is recorded once."""
    statuses = ["Customer", "SQL", "New", "Opportunity", "MQL", "New", "Customer", "SQL"] * 2
    world = make_world(
        [lead_row(i, s, now=world_now) for i, s in enumerate(statuses)],
        meta={"batch_size": 3, "max_in_flight": 4},  # a Customer lead (5 events) spans requests
    )
    set_speed(world, latency_ms=30)
    bridge = world.bridge()
    ledger = RecordingLedger(bridge.ledger)
    bridge.ledger = ledger

    result = bridge.sync()

    assert ledger.records == 0
    marked = [events for events, _ in ledger.marks if events]
    assert len(marked) == result.meta_requests == world.meta_stats()["requests"]
    assert ledger.marks[-1][0] == [] and ledger.marks[-1][1]  # the last answers, flushed
    recorded = [i for _, answers in ledger.marks for i in answers]
    assert sorted(recorded) == sorted(i for events in marked for i in events)  # each once
    mark_of = {i: n for n, (events, _) in enumerate(ledger.marks) for i in events}
    answer_of = {i: n for n, (_, answers) in enumerate(ledger.marks) for i in answers}
    stages: dict[str, list[tuple[int, str]]] = {}
    for event in world.meta_events():
        stage = FUNNEL.index(event["event_name"])
        stages.setdefault(event["user_data"]["em"], []).append((stage, event["event_id"]))
    for lead_stages in stages.values():
        for (_, earlier), (_, later) in pairwise(sorted(lead_stages)):
            if mark_of[earlier] != mark_of[later]:
                assert answer_of[earlier] <= mark_of[later]
    assert ledger_states(world) == Counter({"sent": len(recorded)})


class LedgerThatFails(RecordingLedger):
    """Marks requests as the world's ledger does until the `fail_at`-th mark of a request."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        super().__init__(inner)
        self.fail_at = fail_at

    def mark_sending(self, where: Any, events: Any, *args: Any, answered: Any = ()) -> None:
        if events and sum(1 for marked, _ in self.marks if marked) + 1 == self.fail_at:
            raise LedgerError("the ledger's disk is full")
        super().mark_sending(where, events, *args, answered=answered)


def test_a_mark_that_fails_sends_nothing_of_its_request_and_stops_the_pass(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """The marks are written on a thread of their own (send.py LedgerWrites): a request leaves
    only once its mark is committed. A mark that fails stops the pass with the ledger's error;
    its request and any after it never leave, and the next pass sends every event once."""
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(24)],
        meta={"batch_size": 2, "max_in_flight": 4},
    )
    set_speed(world, latency_ms=50)
    bridge = world.bridge()
    ledger = LedgerThatFails(bridge.ledger, fail_at=4)
    bridge.ledger = ledger

    with pytest.raises(LedgerError, match="disk is full"):
        bridge.sync()

    marked = [ids for ids, _ in ledger.marks if ids]
    assert len(marked) == 3
    arrived = {e["event_id"] for e in world.meta_events()}
    assert arrived == {i for ids in marked for i in ids}  # what was marked left, nothing else
    assert len(request_log(world)) == 3
    world.bridge().sync()
    events = Counter(e["event_id"] for e in world.meta_events())
    assert len(events) == 24 and set(events.values()) == {1}
    assert ledger_states(world) == Counter({"sent": 24})


class LedgerOfStatuses(RecordingLedger):
    """Notes when the statuses seen were written against the marks; `fail`: refuses them."""

    def __init__(self, inner: Any, fail: bool = False) -> None:
        super().__init__(inner)
        self.fail = fail
        self.statuses_at: list[int] = []  # marks written before each write of statuses
        self.threads: list[str] = []

    def add_transitions(self, *args: Any) -> None:
        self.statuses_at.append(len(self.marks))
        self.threads.append(threading.current_thread().name)
        if self.fail:
            raise LedgerError("the ledger's disk is full")
        self.inner.add_transitions(*args)


@pytest.mark.parametrize("fail", [False, True], ids=["written", "refused"])
def test_the_statuses_seen_are_written_before_the_first_mark_or_nothing_leaves(
    make_world: MakeWorld, world_now: datetime, fail: bool
) -> None:
    """A pass records the statuses it saw on the ledger's writer, while the first requests are
    built, and before their marks: a request never leaves before they are in. When they cannot
    be written, the pass stops with the ledger's error and nothing goes to Meta."""
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(12)],
        meta={"batch_size": 2, "max_in_flight": 4},
    )
    bridge = world.bridge()
    ledger = LedgerOfStatuses(bridge.ledger, fail=fail)
    bridge.ledger = ledger
    if fail:
        with pytest.raises(LedgerError, match="disk is full"):
            bridge.sync()
        assert world.meta_events() == [] and not [ids for ids, _ in ledger.marks if ids]
        bridge.ledger = ledger.inner  # the disk has room again
        bridge.sync()
    else:
        bridge.sync()
        assert ledger.statuses_at[0] == 0 and ledger.threads[0] == "ledger-write"
        assert sum(1 for ids, _ in ledger.marks if ids) == 6
    events = Counter(e["event_id"] for e in world.meta_events())
    assert len(events) == 12 and set(events.values()) == {1}
    assert ledger_states(world) == Counter({"sent": 12})


_EVENT = {"New": "Lead", "MQL": "QualifiedLead", "SQL": "Schedule", "Opportunity": "StartTrial"}
_EVENT["Customer"] = "Purchase"


# ---- throttling and halts ---------------------------------------------------------------------


def test_a_throttling_meta_slows_the_pass_down_and_everything_still_goes_once(
    make_world: MakeWorld, world_now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    batches = 16
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(2 * batches)],
        meta={"batch_size": 2, "max_in_flight": 4},
    )
    set_speed(world, latency_ms=20, rate_limit=4, rate_window=1.0)
    caplog.set_level(logging.INFO, logger="sheet_bridge")

    result = bridge_that_sleeps(world, backoff_base=0.4).sync()

    assert result.halted is None and result.events_sent == 2 * batches
    events = Counter(e["event_id"] for e in world.meta_events())
    assert len(events) == 2 * batches and set(events.values()) == {1}
    assert ledger_states(world) == Counter({"sent": 2 * batches})
    stats = world.meta_stats()
    assert stats["throttled"] >= 1  # Meta did limit it...
    assert stats["throttled"] <= batches  # ...and it never asked again and again
    assert "Meta is limiting calls" in caplog.text and "in flight" in caplog.text


def test_a_halt_stops_new_requests_and_records_those_in_flight(
    make_world: MakeWorld, world_now: datetime
) -> None:
    leads = 24
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(leads)],
        meta={"batch_size": 2, "max_in_flight": 4},
    )
    set_speed(world, latency_ms=100)

    def expire_token_after_the_first_answer(stage: str, done: int, total: int) -> None:
        if stage == "send" and done == 2:
            world.meta_fault("token_expired", 1)

    first = world.bridge().sync(progress=expire_token_after_the_first_answer)

    assert first.halted is not None and "access token was rejected" in first.halted
    requests = world.meta_stats()["requests"]
    assert 2 <= requests <= 1 + 4  # the first alone, then at most four: none after the halt
    sent = len(world.meta_events())
    assert sent == 2 * (requests - 1)  # every request but the refused one went...
    states = ledger_states(world)
    assert states["sent"] == sent  # ...and is recorded as sent
    assert states["failed"] == leads - sent and "sending" not in states  # the rest stay due
    statuses = world.column("CAPI Status")
    assert sum(s == "Sent: Lead" for s in statuses) == sent
    world.bridge().sync()
    events = Counter(e["event_id"] for e in world.meta_events())
    assert len(events) == leads and set(events.values()) == {1}


def test_a_pass_that_stops_midway_still_records_the_requests_in_flight(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """Whatever stops a pass between requests (a lost lock, a progress store that fails), the
    answers to the requests already sent are in the ledger: nothing is left `sending`."""
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(24)],
        meta={"batch_size": 2, "max_in_flight": 4},
    )
    set_speed(world, latency_ms=150)

    def fail_on_the_second_report(stage: str, done: int, total: int) -> None:
        if stage == "send" and done > 2:
            raise RuntimeError("progress store unreachable")

    with pytest.raises(RuntimeError):
        world.bridge().sync(progress=fail_on_the_second_report)

    requests = world.meta_stats()["requests"]
    assert requests == 1 + 4  # the first alone, then four; none after the pass stopped
    # Every answer is recorded; what never left was never marked, and goes at the next pass.
    assert ledger_states(world) == Counter({"sent": 2 * requests})
    assert len(world.meta_events()) == 2 * requests
    world.bridge().sync()
    events = Counter(e["event_id"] for e in world.meta_events())
    assert len(events) == 24 and set(events.values()) == {1}


def test_progress_is_told_in_steps_not_per_request_and_always_at_the_end(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """A report waits for the answers it counts to be committed, and the next request waits
    with it: a pass of many requests reports every twentieth of its events (or every second),
    and its last report counts them all."""
    leads = 200
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(leads)],
        meta={"batch_size": 2, "max_in_flight": 4},
    )
    told: list[tuple[int, int]] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase == "send":
            told.append((done, total))

    result = world.bridge().sync(progress=progress)

    assert result.meta_requests == leads // 2
    assert told[-1] == (leads, leads)
    assert [d for d, _ in told] == sorted({d for d, _ in told})  # each once, rising
    steps = [b - a for (a, _), (b, _) in pairwise(told)]
    # Every twentieth (10 events) at least, unless a second passed: far fewer than requests.
    assert len(told) < result.meta_requests / 2
    assert all(s >= leads // 20 for s in steps[:-1]) or len(told) <= 20 + 5
