"""sync/send.py LedgerWrites, the pass's ledger writer thread, against a ledger that notes each
write and can be held or made to fail: the order of marks, answers that go with the next write
(not behind every mark queued), marks taken back, and failures."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sync.ledger import LedgerError, SheetTab
from sheet_bridge.sync.send import Answers, LedgerWrites

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
WHERE = SheetTab("sheet-1", "Leads")


class HeldLedger:
    """Notes every write: ("mark", events, answers) or ("unmark", events). A write waits
    while `hold` is clear; `fail` names the marks (by their first event) that raise."""

    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self.fail: set[str] = set()
        self.released = False

    def mark_sending(
        self, where: Any, events: Any, strengths: Any, notes: Any, now: Any, answered: Any = ()
    ) -> None:
        self.started.set()
        self.hold.wait(10)
        if events and events[0] in self.fail:
            raise LedgerError("the ledger's disk is full")
        answers = [e for pairs, _ in answered for e, _ in pairs]
        self.writes.append(("mark", list(events), answers))

    def unmark_sending(self, where: Any, events: Any, marked_at: Any) -> None:
        self.writes.append(("unmark", list(events)))

    def release_thread(self) -> None:
        self.released = True


def answers(*events: str) -> Answers:
    return [([(e, SendOutcome("sent", "Sent")) for e in events], NOW)]


def test_answers_go_with_the_next_write_not_behind_every_mark_queued() -> None:
    ledger = HeldLedger()
    writes = LedgerWrites(ledger, WHERE, NOW)
    ledger.hold.clear()
    first = writes.mark_sending(["a"], {}, {}, NOW)
    assert ledger.started.wait(5)  # being written, held
    queued = [writes.mark_sending([e], {}, {}, NOW) for e in ("b", "c")]
    writes.answer(answers("x"))
    flushed = threading.Thread(target=lambda: writes.flush(answers_only=True))
    flushed.start()
    ledger.hold.set()
    flushed.join(5)
    assert not flushed.is_alive()
    writes.close()

    assert first.result() is None and all(f.result() is None for f in queued)
    # The answers rode with the first write the thread took after they came: "b"'s mark.
    assert ledger.writes == [("mark", ["a"], []), ("mark", ["b"], ["x"]), ("mark", ["c"], [])]
    assert ledger.released


def test_a_mark_taken_back_before_it_is_written_is_never_written() -> None:
    ledger = HeldLedger()
    writes = LedgerWrites(ledger, WHERE, NOW)
    ledger.hold.clear()
    written = writes.mark_sending(["a"], {}, {}, NOW)
    assert ledger.started.wait(5)
    waiting = writes.mark_sending(["b"], {}, {}, NOW)

    writes.unmark(["b"], NOW, waiting)
    writes.unmark(["a"], NOW, written)
    ledger.hold.set()
    writes.close()

    assert waiting.cancelled()
    assert ledger.writes == [("mark", ["a"], []), ("unmark", ["a"])]


def test_after_a_failed_mark_no_mark_is_written_and_answers_still_are() -> None:
    ledger = HeldLedger()
    ledger.fail = {"b"}
    writes = LedgerWrites(ledger, WHERE, NOW)
    marks = [writes.mark_sending([e], {}, {}, NOW) for e in "abc"]

    assert marks[0].result() is None
    for later in marks[1:]:
        with pytest.raises(LedgerError, match="disk is full"):
            later.result()
    writes.answer(answers("x"))
    writes.flush(answers_only=True)  # the answers are recorded: no error for them
    with pytest.raises(LedgerError, match="disk is full"):
        writes.flush()  # at the end, the failure is the pass's
    writes.unmark(["b"], NOW, marks[1])
    writes.close()

    assert ledger.writes == [("mark", ["a"], []), ("mark", [], ["x"])]


def test_answers_a_failed_write_carried_are_tried_again_at_the_next_flush() -> None:
    ledger = HeldLedger()
    ledger.fail = {"b"}
    writes = LedgerWrites(ledger, WHERE, NOW)
    ledger.hold.clear()
    writes.mark_sending(["a"], {}, {}, NOW)
    assert ledger.started.wait(5)  # "a" being written: "b" and the answer wait together
    writes.mark_sending(["b"], {}, {}, NOW)
    writes.answer(answers("x"))
    ledger.hold.set()
    with pytest.raises(LedgerError):
        writes.flush(answers_only=True)  # "x" went with "b"'s mark, which failed

    writes.flush(answers_only=True)  # tried again, alone: recorded now
    writes.close()

    assert ledger.writes == [("mark", ["a"], []), ("mark", [], ["x"])]


def test_the_pass_s_own_writes_go_in_turn_and_one_that_fails_stops_every_mark_after_it() -> None:
    """A write of the pass's own (the statuses it saw, started before its first request is
    built) is done in its turn with the marks; a flush waits for it. Once one fails, no mark
    after it is written, each raises its error, and so does the flush."""
    ledger = HeldLedger()
    done: list[str] = []
    writes = LedgerWrites(ledger, WHERE, NOW, lambda: done.append("statuses"))
    first = writes.mark_sending(["a"], {}, {}, NOW)
    writes.write(lambda: done.append(f"expired, after {len(ledger.writes)} mark(s)"))
    writes.flush()
    assert first.result() is None
    assert done == ["statuses", "expired, after 1 mark(s)"]

    def full() -> None:
        raise LedgerError("the ledger's disk is full")

    ledger.hold.clear()
    ledger.started.clear()
    held = writes.mark_sending(["b"], {}, {}, NOW)
    assert ledger.started.wait(5)  # being written, held
    writes.write(full)
    later = writes.mark_sending(["c"], {}, {}, NOW)
    writes.write(lambda: done.append("never"))
    ledger.hold.set()
    with pytest.raises(LedgerError, match="disk is full"):
        later.result(5)
    with pytest.raises(LedgerError, match="disk is full"):
        writes.flush()
    writes.close()

    assert held.result() is None
    assert [w[1] for w in ledger.writes] == [["a"], ["b"]]
    assert done == ["statuses", "expired, after 1 mark(s)"]


class IndexingLedger(HeldLedger):
    """HeldLedger that also notes index_identities slices: the identities its marks noted
    (one per event) taken oldest first, `most` at a time; `broken` makes a slice raise."""

    def __init__(self) -> None:
        super().__init__()
        self.noted = 0
        self.broken = False
        self.sliced = threading.Event()

    def mark_sending(
        self, where: Any, events: Any, strengths: Any, notes: Any, now: Any, answered: Any = ()
    ) -> None:
        super().mark_sending(where, events, strengths, notes, now, answered)
        self.noted += len(events)

    def index_identities(self, most: int | None = None) -> int:
        try:
            if self.broken:
                raise LedgerError("database is locked")
            taken = self.noted if most is None else min(most, self.noted)
            self.noted -= taken
            self.writes.append(("index", most, taken))
            return taken
        finally:
            self.sliced.set()


def test_with_nothing_to_write_the_thread_indexes_what_its_marks_noted_a_slice_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the marks written since the index last caught up hold IDLE_INDEX_SLICE events,
    the idle thread indexes that many, one slice at a time; fewer are left for the pass's
    own index after the sending (sync/run.py)."""
    monkeypatch.setattr("sheet_bridge.sync.send.IDLE_INDEX_SLICE", 2)
    ledger = IndexingLedger()
    writes = LedgerWrites(ledger, WHERE, NOW)
    writes.mark_sending(["a"], {}, {}, NOW).result(5)
    writes.flush()
    assert not ledger.sliced.wait(0.2)  # one event noted: under a slice, nothing indexed

    writes.mark_sending(["b", "c"], {}, {}, NOW).result(5)
    assert ledger.sliced.wait(5)
    writes.flush()
    ledger.sliced.clear()
    writes.mark_sending(["d"], {}, {}, NOW).result(5)
    assert ledger.sliced.wait(5)  # "c" and "d": a slice again
    ledger.sliced.clear()
    writes.mark_sending(["e"], {}, {}, NOW).result(5)
    writes.close()  # "e" is left to the pass's own index

    assert ledger.writes == [
        ("mark", ["a"], []),
        ("mark", ["b", "c"], []),
        ("index", 2, 2),  # "a" and "b"; "c" waits for the next slice
        ("mark", ["d"], []),
        ("index", 2, 2),
        ("mark", ["e"], []),
    ]
    assert ledger.noted == 1


def test_a_slice_that_fails_is_logged_and_no_mark_or_flush_fails_for_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The index is for later passes' searches (they read the notes too): a slice that fails
    is said, the marks after it are written, and the pass's own index tries again."""
    monkeypatch.setattr("sheet_bridge.sync.send.IDLE_INDEX_SLICE", 1)
    ledger = IndexingLedger()
    ledger.broken = True
    writes = LedgerWrites(ledger, WHERE, NOW)
    writes.mark_sending(["a"], {}, {}, NOW).result(5)
    assert ledger.sliced.wait(5)
    after = writes.mark_sending(["b"], {}, {}, NOW)
    writes.flush()
    writes.close()

    assert after.result() is None
    assert [w[:2] for w in ledger.writes] == [("mark", ["a"]), ("mark", ["b"])]
    assert "could not index identities while sending" in caplog.text
    assert "database is locked" in caplog.text


def test_once_no_mark_is_to_come_the_idle_thread_indexes_the_rest_under_a_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every request built (no_more_marks): what the marks noted is indexed while the last
    requests wait for Meta, though it is less than a slice; nothing is left to the pass's own
    index after the sending."""
    monkeypatch.setattr("sheet_bridge.sync.send.IDLE_INDEX_SLICE", 3)
    ledger = IndexingLedger()
    writes = LedgerWrites(ledger, WHERE, NOW)
    writes.mark_sending(["a"], {}, {}, NOW).result(5)
    writes.mark_sending(["b"], {}, {}, NOW).result(5)
    assert not ledger.sliced.wait(0.2)  # two noted: under a slice, and marks may come
    writes.no_more_marks()
    assert ledger.sliced.wait(5)
    writes.close()

    assert ledger.writes == [("mark", ["a"], []), ("mark", ["b"], []), ("index", 3, 2)]
    assert ledger.noted == 0


def test_recorded_waits_for_the_answers_handed_in_and_says_false_once_the_writer_failed() -> None:
    """The early write-back (sync/writeback.py) writes a row only once its answers are in
    the ledger: `recorded` returns when the answers of the hand-ins counted by `handed` are
    written, and False when the writer failed instead."""
    ledger = HeldLedger()
    writes = LedgerWrites(ledger, WHERE, NOW)
    writes.mark_sending(["a"], {}, {}, NOW).result(5)
    ledger.hold.clear()
    writes.answer(answers("a"))
    upto = writes.handed()
    waited: list[bool] = []
    waiter = threading.Thread(target=lambda: waited.append(writes.recorded(upto)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # the answer is being written, held
    ledger.hold.set()
    waiter.join(5)
    assert waited == [True]
    assert ledger.writes[-1] == ("mark", [], ["a"])

    failing = HeldLedger()
    failing.fail.add("x")
    broken = LedgerWrites(failing, WHERE, NOW)
    with pytest.raises(LedgerError):
        broken.mark_sending(["x"], {}, {}, NOW).result(5)
    broken.answer(answers("a"))
    assert broken.recorded(broken.handed()) is False
    broken.close()
    writes.close()
