"""The early write-back (sync/writeback.py): once every request of a pass is built, the rows
whose report is final are written, and their memos made, while the last requests wait for
Meta; the pass's end writes the others. Same cells, same memos as one write at the end; the
sheet never says "sent" before the ledger does; a write Google refuses is tried again at the
end; a small pass writes once, at its end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from sheet_bridge.config import BRIDGE_COLUMNS
from sheet_bridge.sheets.client import SheetsError
from sheet_bridge.sync import memo as memo_module
from sheet_bridge.sync import run, send, writeback
from sheet_bridge.sync.run import Bridge, SyncResult
from sheet_bridge.sync.stopping import ServerStopping
from tests.conftest import World, lead_row
from tests.sync.test_capi_log import emulator_methods
from tests.sync.test_send import set_speed

MakeWorld = Callable[..., World]
STATUSES = ["MQL", "SQL", "New", "Opportunity", "Customer", "MQL", "SQL", "New"] * 2


def leads_world(make_world: MakeWorld, world_now: datetime, latency_ms: float = 60) -> World:
    """16 leads, two events a request, two requests in flight, Meta answering in 60 ms: the
    last requests are still out when every request is built."""
    world = make_world(
        [lead_row(i, s, now=world_now) for i, s in enumerate(STATUSES)],
        meta={"batch_size": 2, "max_in_flight": 2},
    )
    set_speed(world, latency_ms=latency_ms)
    return world


@pytest.fixture
def early(monkeypatch: pytest.MonkeyPatch) -> None:
    """An early write from two final rows on, once a round of Meta's answers (60 ms here) is
    still to come."""
    monkeypatch.setattr(writeback, "EARLY_ROWS", 2)
    monkeypatch.setattr(send, "HIDE_AT_LEAST", 0.05)


class Writes:
    """Wraps a bridge's write_cells: notes each call's rows and thread; `refuse` (the call's
    number, 1 the first) fails that call as Google's 503."""

    def __init__(self, bridge: Bridge, refuse: int = 0) -> None:
        self.refuse = refuse
        self.calls: list[tuple[set[int], str]] = []
        self.cells = 0  # written (not refused)
        self._write = bridge.sheets.write_cells
        bridge.sheets.write_cells = self  # type: ignore[method-assign]

    def __call__(self, cells: Any) -> int:
        cells = list(cells)
        self.calls.append(
            ({row for row, _, _ in cells if row > 1}, threading.current_thread().name)
        )
        if len(self.calls) == self.refuse:
            raise SheetsError("Google said no (503) this once")
        self.cells += len(cells)
        return self._write(cells)

    @property
    def threads(self) -> list[str]:
        return [thread for _, thread in self.calls]


def one_pass(
    make_world: MakeWorld, world_now: datetime, refuse: int = 0
) -> tuple[World, Writes, SyncResult]:
    """The 16 leads' first pass, its write_cells calls noted (`refuse`: as Writes)."""
    world = leads_world(make_world, world_now)
    bridge = world.bridge()
    writes = Writes(bridge, refuse)
    return world, writes, bridge.sync()


def sheet_says_each_report(world: World, rows: Any) -> bool:
    """Every row's bridge cells in the sheet are its report's."""
    sheet = world.rows()
    columns = [sheet[0].index(name) for name in BRIDGE_COLUMNS]
    for report in rows:
        row = sheet[report.row - 1]
        cells = tuple(str(row[c]) if c < len(row) else "" for c in columns)
        if cells != tuple(report.cells):
            return False
    return True


def test_rows_final_once_every_request_is_built_are_written_before_the_pass_ends(
    make_world: MakeWorld, world_now: datetime, early: None
) -> None:
    world, writes, result = one_pass(make_world, world_now)

    (early, thread), (rest, main) = writes.calls
    assert thread.startswith("early-write") and main == "MainThread"
    assert early and rest and not early & rest  # each row written once
    assert early | rest == {r.row for r in result.rows}
    assert emulator_methods(world).count("values.batchUpdate") == 2
    assert sheet_says_each_report(world, result.rows)
    assert result.cells_written == writes.cells
    # Every row's memo, made early or at the end: the next pass leaves every row out.
    again = world.bridge().sync()
    assert again.rows_remembered == len(STATUSES)
    assert again.events_sent == 0 and again.cells_written == 0


def test_the_early_write_waits_until_the_ledger_holds_its_rows_answers(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch, early: None
) -> None:
    """The sheet never says "sent" for an event the ledger still has `sending`: were the
    process to die then, the next pass would find the sheet ahead of its ledger."""
    world = leads_world(make_world, world_now)
    bridge = world.bridge()
    answered_when_written: list[bool] = []
    write = bridge.sheets.write_cells

    def checked(cells: Any) -> int:
        cells = list(cells)
        if threading.current_thread().name.startswith("early-write"):
            ledger = {(e.lead_key, e.event_name): e.state for e in bridge.ledger.events(WHERE)}
            rows = {row for row, _, _ in cells if row > 1}
            keys = {r.lead_key for r in final if r.row in rows}
            answered_when_written.append(
                all(state != "sending" for (key, _), state in ledger.items() if key in keys)
            )
        return write(cells)

    final: list[Any] = []
    start = writeback.EarlyWrite.start

    def noted_start(self: writeback.EarlyWrite, recorded: Callable[[], bool]) -> None:
        final.extend(self._final)
        start(self, recorded)

    WHERE = bridge.sheet_tab
    monkeypatch.setattr(writeback.EarlyWrite, "start", noted_start)
    bridge.sheets.write_cells = checked  # type: ignore[method-assign]
    bridge.sync()

    assert answered_when_written == [True]
    assert len(final) >= 2


def test_an_early_write_google_refuses_is_written_at_the_pass_s_end(
    make_world: MakeWorld, world_now: datetime, early: None
) -> None:
    world, writes, result = one_pass(make_world, world_now, refuse=1)

    (refused, _), (at_end, _) = writes.calls
    assert refused < at_end  # the refused rows, with the others, at the end
    assert not any("could not be updated" in n for n in result.notices)
    assert sheet_says_each_report(world, result.rows)
    assert result.cells_written == writes.cells
    assert world.bridge().sync().rows_remembered == len(STATUSES)


def test_a_write_at_the_end_google_refuses_leaves_the_early_rows_written(
    make_world: MakeWorld, world_now: datetime, early: None
) -> None:
    world, writes, result = one_pass(make_world, world_now, refuse=2)

    assert any("could not be updated" in n for n in result.notices)
    assert result.cells_written == writes.cells > 0  # the early write's
    again = world.bridge().sync()  # the rest written then, nothing sent twice
    assert again.events_sent == 0 and again.cells_written > 0
    assert sheet_says_each_report(world, again.rows)


def test_no_early_write_once_the_pass_may_not_write(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch, early: None
) -> None:
    """The early write checks what the write-back checks first (the tab's lock still held,
    the server not stopping); refused, it leaves every row to the pass, whose own check
    decides (here it may write: the refusal was the early write's alone)."""

    def stopping(lease: Any) -> None:
        raise ServerStopping("the server is stopping")

    monkeypatch.setattr(run, "_still_ours", stopping)
    world, writes, result = one_pass(make_world, world_now)

    assert writes.threads == ["MainThread"]
    assert sheet_says_each_report(world, result.rows)


def test_a_pass_with_fewer_final_rows_than_early_rows_writes_once_at_its_end(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(send, "HIDE_AT_LEAST", 0.05)
    assert len(STATUSES) < writeback.EARLY_ROWS
    world, writes, _ = one_pass(make_world, world_now)

    assert writes.threads == ["MainThread"]
    assert emulator_methods(world).count("values.batchUpdate") == 1


def test_with_meta_answering_at_once_nothing_is_written_before_the_pass_s_end(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No wait is left to hide (HIDE_AT_LEAST, judged by Meta's answers so far): the rows are
    written at the end, in one call, and the identity index's rest after the sending."""
    monkeypatch.setattr(writeback, "EARLY_ROWS", 2)
    world = leads_world(make_world, world_now, latency_ms=0)
    bridge = world.bridge()
    writes = Writes(bridge)
    indexed: list[str] = []
    index = bridge.ledger.index_identities

    def noted(most: int | None = None) -> int:
        indexed.append(threading.current_thread().name)
        return index(most)

    bridge.ledger.index_identities = noted  # type: ignore[method-assign]
    bridge.sync()

    assert writes.threads == ["MainThread"]
    assert indexed and all(name.startswith("after-send") for name in indexed)


def test_a_fault_of_ours_in_the_early_memos_is_the_pass_s(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch, early: None
) -> None:
    world = leads_world(make_world, world_now)

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug in making the memos early")

    monkeypatch.setattr(memo_module.Remembered, "memos_of", broken)
    with pytest.raises(RuntimeError, match="a bug in making the memos early"):
        world.bridge().sync()


def test_more_final_rows_than_early_most_are_all_written_at_the_pass_s_end(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch, early: None
) -> None:
    """More than the last requests' wait hides: writing them early would hold up the pass's
    end instead."""
    monkeypatch.setattr(writeback, "EARLY_MOST", 3)
    world, writes, result = one_pass(make_world, world_now)

    assert writes.threads == ["MainThread"]
    assert sheet_says_each_report(world, result.rows)
