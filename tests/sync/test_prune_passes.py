"""Pass records are pruned (issue 22, item 6): a pass's answer lists up to 1,500 rows needing
attention (306 KB per pass), so an hourly pass grew the ledger by megabytes a day. After each
full pass, on both ledgers: the newest 50 passes stay whole, older answers go after 7 days,
older records after 90 days (docs/operating.md "Pruning")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from tests.conftest import World, lead_row

MakeWorld = Callable[..., World]
# The rules docs/operating.md states (sheet_bridge/sync/ledger/contract.py KEEP_PASSES…).
KEEP_PASSES, SUMMARY_DAYS, RECORD_DAYS = 50, 7, 90
BIG_ANSWER = {"attention": [{"row": i, "message": "x" * 200} for i in range(1500)]}


def test_a_full_pass_prunes_old_pass_answers_and_records_and_keeps_the_recent_ones(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now)])
    bridge = world.bridge()
    ledger, where = bridge.ledger, bridge.sheet_tab

    def past_pass(days: float, full: bool = False) -> int:
        at = world_now - timedelta(days=days)
        pass_id = ledger.start_pass(where, "sync", False, at, full=full)
        ledger.finish_pass(pass_id, {"sent": 0}, at, summary=BIG_ANSWER)
        return pass_id

    ancient = [past_pass(RECORD_DAYS + 10, full=True), past_pass(RECORD_DAYS + 9)]
    week_old = [past_pass(SUMMARY_DAYS + 1 - i / 1000) for i in range(KEEP_PASSES + 10)]
    recent = past_pass(1)

    bridge.sync()

    assert all(ledger.get_pass(p) is None for p in ancient)
    # The newest 50 passes (this one, the recent one, 48 week-old ones) stay whole; the 12
    # older week-old passes lose their answer and keep their record.
    stripped = [p for p in week_old if ledger.get_pass(p).summary is None]  # type: ignore[union-attr]
    assert stripped == week_old[: len(week_old) - (KEEP_PASSES - 2)]
    assert all(ledger.get_pass(p) is not None for p in week_old)
    assert ledger.get_pass(recent).summary == BIG_ANSWER  # type: ignore[union-attr]
    assert bridge.ledger.last_full_pass(where) == world_now
    assert world.meta_stats()["events"] == 2  # the pass itself ran as ever
