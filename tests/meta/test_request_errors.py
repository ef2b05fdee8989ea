"""Issue 16, finding 7, through the emulator, a Bridge and the fake Meta: a refusal of the whole
request (test code, pixel, API version) halts the pass and blames no row; once the config is
fixed every held event goes exactly once. An event's own refusal is still isolated."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from sheet_bridge.sync.ledger import SheetTab, open_ledger
from tests.conftest import WORLD_SHEET, WORLD_TEST_CODE, World, lead_row, world_config

MakeWorld = Callable[..., World]
LEADS = 24


def _refix(world: World, **meta: Any) -> None:
    """The person edits [meta] in the config file; the next pass uses it."""
    world.config = world_config(
        world.tmp,
        world.sheets_url,
        world.meta_url,
        meta=meta,
        server={"ledger": world.config.ledger_location({})},
    )


WORLD_TAB = SheetTab(WORLD_SHEET, "Leads")


def _ledger_states(world: World) -> Counter[tuple[str, bool]]:
    ledger = open_ledger(world.config.ledger_location({}))
    try:
        return Counter((e.state, e.retry) for e in ledger.events(WORLD_TAB))
    finally:
        ledger.close()


def _last_pass(world: World) -> dict[str, Any]:
    ledger = open_ledger(world.config.ledger_location({}))
    try:
        return ledger.last_pass(WORLD_TAB)
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("broken", "fixed", "says"),
    [
        (
            {"test_event_code": "TEST123"},
            {"test_event_code": WORLD_TEST_CODE},
            "invalid test_event_code 'TEST123'; clear [meta] test_event_code or copy the "
            "current code from Events Manager → Test events",
        ),
        (
            {"pixel_id": "111222333"},
            {},
            "pixel (dataset) 111222333 does not exist or this token cannot use it; check "
            "[meta] pixel_id",
        ),
        (
            {"api_version": "v12.0"},
            {},
            "API version 'v12.0' is deprecated or unknown; set [meta] api_version",
        ),
    ],
    ids=["test_event_code", "pixel", "api_version"],
)
def test_a_setup_error_halts_after_one_request_and_every_event_goes_once_fixed(
    broken: dict[str, Any],
    fixed: dict[str, Any],
    says: str,
    make_world: MakeWorld,
    world_now: datetime,
) -> None:
    """Before: 47 requests for these 24 events, all 24 frozen as refused, 0 sent after the fix."""
    world = make_world([lead_row(i, "New", now=world_now) for i in range(LEADS)], meta=broken)

    halted = world.bridge().sync()

    assert world.meta_stats()["requests"] == 1
    assert world.meta_events() == []
    assert halted.events_sent == 0 and halted.meta_requests == 1
    # Nothing is refused: every event waits, marked to be tried again.
    assert _ledger_states(world) == Counter({("failed", True): LEADS})
    status = world.column("CAPI Status")
    assert all(says in cell and "will retry next sync" in cell for cell in status), status[0]
    assert halted.halted is not None and says in halted.halted
    assert halted.notices == [halted.halted]
    assert _last_pass(world)["error"] == halted.halted

    _refix(world, **fixed)
    after = world.bridge().sync()

    assert world.meta_stats()["requests"] == 2  # the fixed pass: one request for all 24
    sent = Counter(e["event_id"] for e in world.meta_events())
    assert len(sent) == LEADS and set(sent.values()) == {1}
    assert after.counts["sent"] == LEADS and after.halted is None
    assert _ledger_states(world) == Counter({("sent", False): LEADS})
    assert all(cell == "Sent: Lead" for cell in world.column("CAPI Status"))
    assert _last_pass(world)["error"] is None


def test_a_halt_leaves_the_later_batches_unsent_and_due(
    make_world: MakeWorld, world_now: datetime
) -> None:
    rows = [lead_row(i, "New", now=world_now) for i in range(LEADS)]
    world = make_world(rows, meta={"test_event_code": "TEST123", "batch_size": 5})

    world.bridge().sync()

    assert world.meta_stats()["requests"] == 1  # not one per batch of 5
    _refix(world, test_event_code=WORLD_TEST_CODE, batch_size=5)
    world.bridge().sync()
    assert world.meta_stats()["requests"] == 1 + 5
    assert len({e["event_id"] for e in world.meta_events()}) == LEADS


def test_one_lead_id_meta_does_not_know_is_isolated_and_kept_while_the_rest_go_once(
    make_world: MakeWorld, world_now: datetime
) -> None:
    lead_ids = [str(10**15 + i) for i in range(LEADS)]
    rows = [lead_row(i, "New", now=world_now, lead_id=lead_ids[i]) for i in range(LEADS)]
    world = make_world(rows)
    httpx.post(world.meta_url + "/_fake/unknown_lead_ids", json={"lead_ids": [int(lead_ids[9])]})

    first = world.bridge().sync()

    sent = Counter(e["event_id"] for e in world.meta_events())
    assert len(sent) == LEADS - 1 and set(sent.values()) == {1}
    requests = world.meta_stats()["requests"]
    assert 1 < requests <= 1 + 2 * 5  # bisection: O(log 24), not one per event
    assert first.halted is None and first.counts["failed"] == 1
    assert _ledger_states(world) == Counter({("sent", False): LEADS - 1, ("failed", False): 1})
    status = world.column("CAPI Status")
    assert "is not a lead Meta knows" in status[9] and "fix the row to retry" in status[9]

    again = world.bridge().sync()  # nothing changed: nothing goes, the refused row waits

    assert world.meta_stats()["requests"] == requests
    assert again.counts["sent"] == 0
