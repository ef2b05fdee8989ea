"""A pass sends while it plans (issue 24): a due lead's identity is hashed, and its events built,
as the sender reaches it, oldest first, on the pass's thread or in a worker process
(sync/hashing.py). Either way the plan is the one `plan()` makes at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sheet_bridge.config import parse_config
from sheet_bridge.local.demo_leads import DEMO_STAGES
from sheet_bridge.meta.identity import HashedIdentity
from sheet_bridge.sync.hashing import WORKERS_ENV, IdentityHasher, default_workers
from sheet_bridge.sync.plan import LeadRow, Plan, RowDecision, plan
from tests.conftest import World, lead_row

MakeWorld = Callable[..., World]
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
# Cells as sales people leave them: phones in every format (and junk), e-mails with capitals
# and spaces, Leadgen IDs as text and as numbers, countries named, coded and wrong, nothing.
PHONES = ["+91 98765 43210", "098765 43211", "(415) 555-0132", 919876543212, "12", "", "+44 20"]
EMAILS = [" Mixed.Case@Example.COM ", "no-at-sign", "", "ok{i}@example.com"]
COUNTRIES = ["", "India", "us", "GB", "Narnia", "ca"]
LEAD_IDS = ["", "123456789012345", 1234567890123456, "12", "9876543210987654"]


def hostile_leads(n: int) -> list[LeadRow]:
    statuses = ["New", "MQL", "SQL", "Opportunity", "Customer", "Disqualified"]
    leads = []
    for i in range(n):
        email = EMAILS[i % len(EMAILS)]
        identity: dict[str, object] = {
            "em": email.format(i=i) if "{i}" in email else email,
            "ph": PHONES[i % len(PHONES)],
            "fn": f"Ana{i % 3}",
            "country": COUNTRIES[i % len(COUNTRIES)],
            "lead_id": LEAD_IDS[i % len(LEAD_IDS)],
        }
        leads.append(
            LeadRow(
                row_number=i + 2,
                key=f"k{i}",
                status=statuses[i % len(statuses)],
                status_changed_at=NOW - timedelta(hours=1 + i % 100),
                created_at=NOW - timedelta(hours=150),
                identity={k: v for k, v in identity.items() if v != ""},
            )
        )
    return leads


def config_for(**meta: Any) -> Any:
    return parse_config(
        {
            "sheets": {
                "spreadsheet_id": "s",
                "tab": "Leads",
                "credentials": "anonymous",
                "api_endpoint": "http://127.0.0.1:9",
            },
            "meta": {"pixel_id": "1234", "default_country": "IN", "currency": "INR", **meta},
            "columns": {"status": "Status"},
            "stages": DEMO_STAGES,
        }
    )


def described(the_plan: Plan) -> list[tuple[object, ...]]:
    """Everything a decision says: what is sent (each payload) and what the row says."""
    return [
        (
            d.row_number,
            d.outcome,
            d.message,
            tuple(d.warnings),
            d.match,
            tuple(repr(sorted(e.payload.items())) for e in d.events),
            tuple(e.fingerprint for e in d.events),
            tuple(d.expired),
            tuple(d.baseline),
        )
        for d in the_plan.decisions
    ]


def completed(the_plan: Plan, hasher: IdentityHasher, meta: Any) -> Plan:
    for d, hashed in hasher.hashed(the_plan.unhashed, meta):
        the_plan.complete(d, hashed)
    return the_plan


@pytest.mark.parametrize("assume_country", [False, True])
def test_a_worker_process_hashes_exactly_as_the_pass_itself(assume_country: bool) -> None:
    config = config_for(assume_country=assume_country)
    leads = hostile_leads(120)
    at_once = plan(leads, config, {}, NOW)
    hasher = IdentityHasher(workers=1, chunk=7, ahead=3, min_leads=0)
    hasher.start(len(leads))
    try:
        later = completed(plan(leads, config, {}, NOW, hash_later=True), hasher, config.meta)
    finally:
        hasher.close()

    assert described(later) == described(at_once)
    assert sum(len(d.events) for d in later.decisions) > 100  # most leads are due
    assert any(d.outcome == "invalid" for d in later.decisions)  # and some cannot be sent


def test_hashed_later_on_the_pass_thread_is_the_same_plan() -> None:
    config = config_for()
    leads = hostile_leads(60)
    later = completed(plan(leads, config, {}, NOW, hash_later=True), IdentityHasher(0), config.meta)

    assert described(later) == described(plan(leads, config, {}, NOW))


def test_due_leads_are_completed_oldest_first() -> None:
    the_plan = plan(hostile_leads(40), config_for(), {}, NOW, hash_later=True)

    oldest = [d.todo.oldest for d in the_plan.unhashed if d.todo is not None]

    assert len(oldest) > 20 and oldest == sorted(oldest)


def test_a_worker_that_dies_leaves_the_hashing_to_the_pass() -> None:
    config = config_for()
    leads = hostile_leads(80)
    hasher = IdentityHasher(workers=1, chunk=5, ahead=2, min_leads=0)
    hasher.start(len(leads))
    assert hasher._pool is not None
    hasher._pool.submit(os._exit, 3)  # the worker process dies (killed, out of memory…)
    try:
        later = completed(plan(leads, config, {}, NOW, hash_later=True), hasher, config.meta)
    finally:
        hasher.close()

    assert described(later) == described(plan(leads, config, {}, NOW))


def test_the_first_chunk_is_hashed_here_while_the_worker_starts() -> None:
    config = config_for()
    leads = hostile_leads(40)
    hasher = IdentityHasher(workers=1, chunk=5, ahead=2, min_leads=0)
    hasher.start(len(leads))
    try:
        the_plan = plan(leads, config, {}, NOW, hash_later=True)
        pairs = list(hasher.hashed(the_plan.unhashed, config.meta))
    finally:
        hasher.close()

    here = [hashed is None for _, hashed in pairs]
    assert len(pairs) > 10
    # The first chunk waits for no worker; the worker hashes every chunk after it.
    assert here == [True] * 5 + [False] * (len(pairs) - 5)


def test_a_small_pass_or_one_core_hashes_on_the_pass_thread() -> None:
    hasher = IdentityHasher(workers=1, min_leads=1000)
    hasher.start(999)
    assert hasher._pool is None
    assert default_workers({WORKERS_ENV: "0"}) == 0
    assert default_workers({WORKERS_ENV: "3"}) == 3
    assert default_workers({WORKERS_ENV: "many"}) == 0  # a typo hashes here, and says so


class WatchedHasher(IdentityHasher):
    """Notes how many requests Meta had received each time a lead was completed."""

    def __init__(self, meta_url: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.meta_url = meta_url
        self.requests_seen: list[int] = []

    def hashed(
        self, decisions: Sequence[RowDecision], meta: Any
    ) -> Iterator[tuple[RowDecision, HashedIdentity | None]]:
        for pair in super().hashed(decisions, meta):
            stats = httpx.get(self.meta_url + "/_fake/stats", timeout=10).json()
            self.requests_seen.append(stats["requests"])
            yield pair


@pytest.mark.parametrize("workers", [0, 1])
def test_requests_leave_while_later_leads_are_still_being_planned(
    workers: int, make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(
        [lead_row(i, "New", now=world_now, phone=f"+9198765{i:05d}") for i in range(24)],
        meta={"batch_size": 2, "max_in_flight": 2},
    )
    hasher = WatchedHasher(world.meta_url, workers=workers, chunk=3, min_leads=0)

    result = world.bridge(hasher=hasher).sync()

    assert result.events_sent == 24 and result.meta_requests == 12
    assert len(hasher.requests_seen) == 24
    # Meta had answered requests before the last leads were planned: sending did not wait for
    # the whole plan.
    assert hasher.requests_seen[-1] >= 5
    assert hasher.requests_seen[0] == 0
    assert set(world.column("CAPI Status")) == {"Sent: Lead"}


def test_a_pass_with_a_worker_sends_what_a_pass_without_one_sends(
    make_world: MakeWorld, world_now: datetime
) -> None:
    statuses = ["Customer", "SQL", "New", "Opportunity", "MQL", "Disqualified"]
    rows = [
        lead_row(
            i,
            statuses[i % len(statuses)],
            now=world_now,
            phone=[f"+9198765{i:05d}", "12", "", f"0 98765 {i:05d}"][i % 4],
            lead_id=["", f"12345678901{i:04d}"][i % 2],
            email=["", None][i % 3 == 0],
        )
        for i in range(40)
    ]
    world = make_world(rows, meta={"batch_size": 5})
    bridge = world.bridge()
    _, _, leads = bridge.read()
    expected = plan(leads, world.config, {}, world.now)
    hasher = IdentityHasher(workers=1, chunk=4, min_leads=0)

    result = world.bridge(hasher=hasher).sync()

    sent = {e["event_id"]: e for e in world.meta_events()}
    due = {e.event_id: e.payload for d in expected.decisions for e in d.events}
    assert result.events_sent == len(due) > 40
    assert set(sent) == set(due)
    for event_id, payload in due.items():
        assert sent[event_id]["user_data"] == payload["user_data"]
    by_row = {r.row: r for r in result.rows}
    for d in expected.decisions:
        report = by_row[d.row_number]
        if d.outcome == "due":
            assert report.outcome == "sent", (d.row_number, report.message)
        else:
            assert report.outcome == d.outcome and report.message.endswith(d.message)
    assert {d.outcome for d in expected.decisions} == {"due", "invalid"}
    assert hasher._pool is None  # closed with the pass
