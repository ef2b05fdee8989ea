"""Send a pass's due events to Meta, a few requests at a time, and record each answer as it comes.

Meta answers in hundreds of milliseconds (a 100,000-lead first pass is ~376 requests: a minute of
waiting one after another), so a few requests are in flight at once. The HTTP runs in worker
threads; the ledger's writes run in order on one thread of their own (LedgerWrites), so the
database's work overlaps the pass's own (building the next request, the reports), and a request
leaves only once its events' `sending` mark is committed. Each answer is recorded before anything
depends on it. One lead's events are never in two requests in flight at once, so Meta receives a
lead's stages in funnel order (docs/meta-events.md).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import overload

from sheet_bridge.meta.client import CapiClient, SendOutcome, join_encoded
from sheet_bridge.sync import stopping
from sheet_bridge.sync.collector import gc_paused
from sheet_bridge.sync.ledger import LedgerBackend, LockLease, SheetTab
from sheet_bridge.sync.outcomes import RowReport, answer_words, record_after, render_row
from sheet_bridge.sync.plan import EventRecord, PlannedEvent, RowDecision

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
RESENT = (
    "an earlier sync was interrupted before Meta's answer was recorded; sent again with the "
    "same event id, so Meta can deduplicate it"
)
# How far ahead of the queue a request that a whole lead would overflow looks for smaller leads
# to fill its last places: requests stay full (⌈events / batch size⌉ of them) while the order
# (oldest change first) moves by at most one request.
LOOKAHEAD = 64
# While a pass sends, Python hands its lock to a waiting thread after 1 ms instead of 5 ms
# (sys.setswitchinterval, docs.python.org/3/library/sys.html#sys.setswitchinterval). The sending
# threads wait for Meta without the lock, and need it back only briefly, several times a request
# (to send the body, to read the answer); while the pass's thread runs Python (completing leads,
# building the next request), each of those waits took up to 5 ms: the answer's place stayed
# empty that much longer (measured on a 100,000-lead first pass: bench/RESULTS.md, "Seventh
# round").
SENDING_SWITCH_INTERVAL = 0.001
# How many noted identities the ledger writer indexes at a time while it has nothing to write
# (LedgerWrites), once its marks have noted that many: a mark asked for meanwhile waits for at
# most one slice (0.15-0.25 s in SQLite on a busy 2-core machine). Slices of 2,000 cost four
# times the CPU of one bulk index (each commit rewrites pages all over the index); 5,000 to
# 20,000 made no difference to the 100,000-lead first pass (bench/RESULTS.md, "Fourteenth
# round").
IDLE_INDEX_SLICE = 5000
# How long the ledger writer must have had nothing to write before it takes a slice: with
# Meta answering at once it is asked for the next mark within a few ms, and a slice started
# in that gap made the marks after it wait (PostgreSQL, 20,000 leads: four slices of 0.135 s).
IDLE_WAIT = 0.02
# Once every request is built, the work after the sending is begun beside it (the identity
# index's rest, the early write-back) only when Meta's answers still to come are expected to
# take at least this long (by its answers so far): with Meta answering at once there is no
# wait to hide, and work begun then only held up the pass's end (10,000 leads: 1.85 → 1.92 s).
HIDE_AT_LEAST = 0.1
_switch_lock = threading.Lock()
_switch_users = 0
_switch_before = 0.005


@contextlib.contextmanager
def quick_switches() -> Iterator[None]:
    """The thread switch interval at SENDING_SWITCH_INTERVAL while any pass sends (passes in
    several threads nest); the interval as it was once the last one ends."""
    global _switch_users, _switch_before
    with _switch_lock:
        _switch_users += 1
        if _switch_users == 1:
            _switch_before = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_before, SENDING_SWITCH_INTERVAL))
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_before)


@dataclass(slots=True)
class Chunk:
    """The events of one request. `follows`: it holds the rest of a lead the chunk before it
    began (a lead longer than a request), so it waits until that one is answered."""

    events: list[PlannedEvent] = field(default_factory=list)
    follows: bool = False
    # The events' payloads, and as the request's `data` (meta/client.py join_encoded): made on
    # the pass's thread before the request's place frees (Chunk.prepare), let go once sent.
    payloads: Sequence[dict[str, object]] | None = None
    encoded: bytes | None = None

    def prepare(self) -> None:
        # Each payload is built only if the client reads it (a part of the request, bisected);
        # the request itself goes as these bytes.
        self.payloads = Payloads(self.events)
        self.encoded = join_encoded(e.json for e in self.events)

    def take_payloads(self) -> tuple[Sequence[dict[str, object]], bytes]:
        """The payloads and their encoding (Sender.send prepares every chunk it builds), let go
        by the chunk."""
        payloads, encoded = self.payloads, self.encoded
        assert payloads is not None and encoded is not None, "a chunk is prepared before it is sent"
        self.payloads = self.encoded = None
        return payloads, encoded


class Payloads(Sequence[dict[str, object]]):
    """The events' payloads (PlannedEvent.payload), each built when read."""

    __slots__ = ("_events",)

    def __init__(self, events: Sequence[PlannedEvent]) -> None:
        self._events = events

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, i: int) -> dict[str, object]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[dict[str, object]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, object] | Sequence[dict[str, object]]:
        if isinstance(i, slice):
            return [e.payload for e in self._events[i]]
        return self._events[i].payload


def lead_chunks(
    leads: Iterable[Sequence[PlannedEvent]], size: int, lookahead: int = LOOKAHEAD
) -> Iterator[Chunk]:
    """Requests of at most `size` events, in the order given, where a lead's events share one
    request whenever they fit in one; a lead longer than a request fills consecutive requests,
    each marked to follow the one before. Lazy: a chunk is built when the sender needs it."""
    queue = iter(leads)
    ahead: deque[Sequence[PlannedEvent]] = deque()
    chunk = Chunk()
    while True:
        lead = ahead.popleft() if ahead else next(queue, None)
        if lead is None:
            break
        room = size - len(chunk.events)
        if len(lead) <= room:
            chunk.events += lead
        elif len(lead) <= size:  # whole in the next request; fill this one from behind it
            while len(ahead) < lookahead and (more := next(queue, None)) is not None:
                ahead.append(more)
            behind: deque[Sequence[PlannedEvent]] = deque()
            for other in ahead:
                if len(other) <= size - len(chunk.events):
                    chunk.events += other
                else:
                    behind.append(other)
            ahead = behind
            yield chunk
            chunk = Chunk(list(lead))
        else:  # longer than any request: its parts go one after another
            rest = list(lead)
            while len(rest) > size - len(chunk.events):
                take = size - len(chunk.events)
                chunk.events += rest[:take]
                rest = rest[take:]
                yield chunk
                chunk = Chunk(follows=True)
            chunk.events += rest
        if len(chunk.events) == size:
            yield chunk
            chunk = Chunk()
    if chunk.events:
        yield chunk


class InFlightLimit:
    """How many requests may be in flight. One until Meta has answered one: a refused token or
    test code then costs one request, not `most`. Then `most`; halved (down to one) when Meta
    answers that it is limiting calls, and one more again after as many answers."""

    def __init__(self, most: int) -> None:
        self.most = max(int(most), 1)
        self.now = 1
        self._opened = False
        self._throttles_seen = 0
        self._clean = 0

    def throttled(self, throttles: int) -> bool:
        """`throttles`: how many throttling answers the client has had so far. True when that
        is more than before (the limit was halved)."""
        if throttles <= self._throttles_seen:
            return False
        self._throttles_seen = throttles
        self.now = max(self.now // 2, 1)
        self._clean = 0
        return True

    def answered(self) -> None:
        if not self._opened:
            self._opened = True
            self.now = self.most
            return
        self._clean += 1
        if self._clean >= self.now and self.now < self.most:
            self.now += 1
            self._clean = 0


class RowReports:
    """Every row's report for one pass. A lead's report is written as soon as Meta has answered
    its last event, and its planned events (payload parts, hashed identifiers) let go: the plan
    shrinks while the reports grow, instead of both being whole at the end (measured on a
    100,000-lead first pass: peak RSS 380 MB, 418 MB with every report written at the end)."""

    def __init__(
        self,
        decisions: list[RowDecision],
        order: Mapping[str, int],
        tz: tzinfo,
        dry_run: bool,
        on_final: Callable[[RowReport], object] | None = None,
    ) -> None:
        self.notes: dict[str, str | None] = {}
        self._on_final = on_final  # told each report made before finish(), as it is made
        self._decisions = decisions
        self._order = order  # event name → funnel index
        self._tz, self._dry_run = tz, dry_run
        self._reports: list[RowReport | None] = [None] * len(decisions)
        # Lead key → [its decision's index, its events Meta has not answered yet].
        self._waiting: dict[str, list[int]] = {}
        # The records this pass made, until their lead's report takes them.
        self._after: dict[tuple[str, str], EventRecord] = {}
        # The due leads still to be completed (Plan.complete): `expect` takes them then.
        self._index_of: dict[str, int] = {}
        for i, d in enumerate(decisions):
            if d.todo is not None:
                self._index_of[d.lead_key] = i
            elif d.outcome != "duplicate":  # a later row with the same key must not erase them
                self._take(i, d)

    def expect(self, decision: RowDecision) -> None:
        """A due lead completed after the reports began (Plan.complete): its warnings and
        events are final now."""
        self._take(self._index_of.pop(decision.lead_key), decision)

    def _take(self, i: int, d: RowDecision) -> None:
        if any(e.resend for e in d.events):
            d.warnings.append(RESENT)
        self.notes[d.lead_key] = "; ".join(d.warnings) or None
        if d.events:
            self._waiting[d.lead_key] = [i, len(d.events)]

    def add(self, lead_key: str, record: EventRecord) -> None:
        """A record the pass made without Meta (expired, baseline)."""
        self._after[(lead_key, record.event_name)] = record

    def answered(self, event: PlannedEvent, outcome: SendOutcome, at: datetime) -> None:
        self.add(event.lead_key, record_after(event, outcome, at, self.notes.get(event.lead_key)))
        wait = self._waiting[event.lead_key]
        wait[1] -= 1
        if wait[1] == 0:
            decision = self._decisions[wait[0]]
            report = self._reports[wait[0]] = self._render(decision)
            decision.events.clear()
            if self._on_final is not None:
                self._on_final(report)

    def finish(self) -> list[RowReport]:
        """Every row's report, in sheet order (the rows nothing was sent for are written now)."""
        with gc_paused():
            return [
                r if r is not None else self._render(d)
                for r, d in zip(self._reports, self._decisions, strict=True)
            ]

    def _render(self, decision: RowDecision) -> RowReport:
        """The row's report; the records this pass made for it move from `_after` into the
        report (for the CAPI Log), so `_after` only ever holds leads still being sent."""
        records = {r.event_name: r for r in decision.records}
        names = [e.event_name for e in decision.events] + [x.event_name for x in decision.expired]
        names += [b.event_name for b in decision.baseline]
        fresh = []
        for name in names:
            record = self._after.pop((decision.lead_key, name), None)
            if record is not None:
                records[name] = record
                fresh.append(record)
        order = self._order
        ordered = sorted(records.values(), key=lambda r: order.get(r.event_name, 99))
        report = render_row(decision, ordered, self._tz, dry_run=self._dry_run)
        fresh.sort(key=lambda r: order.get(r.event_name, 99))
        report.logged = tuple((r.event_name, r.event_id, r.state, answer_words(r)) for r in fresh)
        return report


# Meta's answers not recorded yet: (a request's events and outcomes, when).
Answers = list[tuple[list[tuple[PlannedEvent, SendOutcome]], datetime]]


@dataclass(slots=True)
class _Mark:
    """A request's mark, queued: its events, and the future its request waits for."""

    events: Sequence[PlannedEvent]
    strengths: Mapping[str, str]
    notes: Mapping[str, str | None]
    now: datetime
    done: Future[None] = field(default_factory=Future)


@dataclass(slots=True)
class _Write:
    """A write of the pass's own, in turn with the marks (LedgerWrites.write)."""

    write: Callable[[], None]


@dataclass(slots=True)
class _Unmark:
    """Marks to take back (LedgerWrites.unmark)."""

    events: Sequence[PlannedEvent]
    marked_at: datetime
    marked: Future[None]


class LedgerWrites:
    """The ledger writes of one pass's sending, on a thread of their own: the marks in the order
    they were asked for, each with every answer handed in by then.

    SQLite and PostgreSQL do their work without Python's lock (a SQLite statement runs in C with
    the GIL released; psycopg waits on the network), so a request's mark is written while the
    pass's thread builds the next request and records answers: measured on a 100,000-lead first
    pass, the ledger's writes are its largest cost (bench/RESULTS.md). A request waits for its
    own mark's future before it leaves. Meta's answers go with the next write, whichever mark it
    is (or alone when no mark is waiting): answers are to requests that have left, whose marks
    are committed, so they may go before marks asked for earlier; one commit then carries both,
    and a flush waits for one write, not for every mark queued before it.

    After a write fails, no later mark is attempted (each future raises the same error, so its
    request never leaves), but answers still are, with the next flush.

    With nothing to write for IDLE_WAIT, once its marks have written IDLE_INDEX_SLICE events
    since the identity index last caught up, the thread indexes that many noted identities
    (ledger.index_identities): while Meta is slow that costs the pass little, and the index
    left for after the sending (sync/run.py) is only the last requests' (measured:
    bench/RESULTS.md, "Fourteenth round"). Once no mark is to come (`no_more_marks`), it
    indexes the rest the same way, while the last requests wait for Meta. A slice that fails
    is logged, and that index after the sending tries again. Closing, the thread leaves the
    rest to it."""

    def __init__(
        self,
        ledger: LedgerBackend,
        where: SheetTab,
        now: datetime,
        first: Callable[[], None] | None = None,
    ) -> None:
        self.ledger, self.where = ledger, where
        self._cond = threading.Condition()
        self._queue: deque[_Mark | _Unmark | _Write] = deque()
        self._answers: Answers = []  # handed in, not recorded yet (oldest first)
        self._handed = self._attempted = self._recorded = 0  # answer hand-ins, counted
        self._busy = self._closing = self._gone = False
        self._unindexed = 0  # events marked since the identity index was last caught up
        self._last_mark = False  # no mark is to come (no_more_marks)
        self._now = now  # the pass's, for a write of answers alone
        self._failed: BaseException | None = None
        if first is not None:
            self._queue.append(_Write(first))
        self._thread = threading.Thread(target=self._run, name="ledger-write", daemon=True)
        self._thread.start()

    def write(self, write: Callable[[], None]) -> None:
        """Queue a write of the pass's own (after what is queued, before the marks asked for
        after it). One that fails stops every mark after it, as a failed mark does: its error
        is each one's, and `flush` raises it."""
        with self._cond:
            self._queue.append(_Write(write))
            self._cond.notify_all()

    def mark_sending(
        self,
        events: Sequence[PlannedEvent],
        strengths: Mapping[str, str],
        notes: Mapping[str, str | None],
        now: datetime,
    ) -> Future[None]:
        """Queue `ledger.mark_sending`. The future raises the ledger's error for the mark that
        failed and for every mark after it."""
        mark = _Mark(events, strengths, notes, now)
        with self._cond:
            if self._gone:  # nothing would ever write it
                mark.done.set_exception(self._failed or RuntimeError("the ledger writer stopped"))
                return mark.done
            self._queue.append(mark)
            self._cond.notify_all()
        return mark.done

    def no_more_marks(self) -> None:
        """Every request is built: once idle, the thread indexes every identity its marks
        noted, not only whole slices, while the last requests wait for Meta."""
        with self._cond:
            self._last_mark = True
            self._cond.notify_all()

    def handed(self) -> int:
        """How many hand-ins of answers so far (for `recorded`)."""
        with self._cond:
            return self._handed

    def recorded(self, upto: int) -> bool:
        """Wait until the answers of the first `upto` hand-ins are recorded; False when the
        writer failed or stopped first."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._recorded >= upto or self._failed is not None or self._gone
            )
            return self._recorded >= upto

    def answer(self, answered: Answers) -> None:
        """Hand in Meta's answers: the next write records them."""
        if not answered:
            return
        with self._cond:
            self._answers += answered
            self._handed += 1
            self._cond.notify_all()

    def unmark(
        self, events: Sequence[PlannedEvent], marked_at: datetime, marked: Future[None]
    ) -> None:
        """Queue `ledger.unmark_sending` (after the marks before it): the marks made ahead of
        a request that never left (`marked`: their write; nothing to take back if it failed).
        One that fails is logged, not raised: those events stay `sending`, and the next pass
        sends them with the same event ids, as after a crash."""
        with self._cond:
            for item in self._queue:
                if isinstance(item, _Mark) and item.done is marked:  # not written yet: never
                    self._queue.remove(item)
                    marked.cancel()
                    return
            self._queue.append(_Unmark(events, marked_at, marked))
            self._cond.notify_all()

    def flush(self, *, answers_only: bool = False) -> None:
        """Until the answers handed in are recorded (`answers_only`: raise only if one is not;
        a mark that failed stops the pass when its own request's turn comes, and the requests
        marked before it still leave), or else until every write asked for is done, raising
        the first failure."""
        with self._cond:
            if self._answers and not self._unattempted():  # kept after a failure: try again
                self._handed += 1
                self._cond.notify_all()
            target = self._handed
            self._cond.wait_for(
                lambda: (
                    self._gone
                    or (
                        self._attempted >= target
                        and (answers_only or (not self._queue and not self._busy))
                    )
                )
            )
            if self._failed is not None and (self._recorded < target or not answers_only):
                raise self._failed

    def close(self) -> None:
        """Let the writes asked for finish (a pass that stops still records what it had), and
        the thread let go of what it holds in the ledger."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    # -- on the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._next():
                pass
        except BaseException as exc:  # a fault of this class: nothing may wait for it forever
            log.exception("the ledger writer stopped")
            with self._cond:
                self._failed = self._failed or exc
        finally:
            with self._cond:
                self._gone = True
                for item in self._queue:
                    if isinstance(item, _Mark):
                        item.done.set_exception(self._failed or RuntimeError("stopped"))
                self._queue.clear()
                self._cond.notify_all()
            self.ledger.release_thread()

    def _next(self) -> bool:
        """Take and do the next write (or, with none, a slice of the identity index); False
        once closing with nothing left to write."""
        with self._cond:
            idle = False
            while not (self._queue or self._unattempted() or self._closing):
                # Woken (a write asked for, no_more_marks), it looks again; with a slice of
                # the index due, IDLE_WAIT with nothing to write makes it idle.
                due = self._index_due()
                if not self._cond.wait(IDLE_WAIT if due else None) and due:
                    idle = not (self._queue or self._unattempted() or self._closing)
                    break
            if not idle:
                if not self._queue and not self._unattempted():
                    return False  # closing, nothing left to write
                item = self._queue.popleft() if self._queue else None
                answered: Answers = []
                upto = self._attempted
                if not isinstance(item, _Unmark | _Write):
                    answered, self._answers, upto = self._answers, [], self._handed
                self._busy = True
        if idle:
            self._index_slice()
            return True
        try:
            if isinstance(item, _Unmark):
                self._take_back(item)
            elif isinstance(item, _Write):
                self._own(item)
            else:
                self._write(item, answered, upto)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return True

    def _unattempted(self) -> bool:
        return self._handed > self._attempted

    def _index_due(self) -> bool:
        ahead = self._unindexed >= IDLE_INDEX_SLICE or (self._last_mark and self._unindexed > 0)
        return ahead and self._failed is None

    def _index_slice(self) -> None:
        """Index up to IDLE_INDEX_SLICE noted identities."""
        try:
            taken = self.ledger.index_identities(most=IDLE_INDEX_SLICE)
        except Exception as exc:  # the index is for later passes' searches: not a write's fault
            log.warning("could not index identities while sending (tried again after): %s", exc)
            taken = 0
        with self._cond:
            self._unindexed = self._unindexed - taken if taken >= IDLE_INDEX_SLICE else 0

    def _write(self, mark: _Mark | None, answered: Answers, upto: int) -> None:
        """One transaction: the answers, then the mark (none after a failure)."""
        if mark is not None and self._failed is not None:
            mark.done.set_exception(self._failed)
            mark = None
        failure: BaseException | None = None
        if mark is not None or answered:
            try:
                if mark is not None:
                    m = mark
                    self.ledger.mark_sending(
                        self.where, m.events, m.strengths, m.notes, m.now, answered=answered
                    )
                else:
                    self.ledger.mark_sending(self.where, (), {}, {}, self._now, answered=answered)
            except BaseException as exc:
                failure = exc
        with self._cond:
            self._attempted = max(self._attempted, upto)
            if failure is None:
                self._recorded = max(self._recorded, upto)
                self._unindexed += len(mark.events) if mark is not None else 0
            else:
                self._failed = self._failed or failure
                self._answers[:0] = answered  # kept for the next write
        if mark is not None:
            if failure is None:
                mark.done.set_result(None)
            else:
                mark.done.set_exception(failure)

    def _own(self, job: _Write) -> None:
        if self._failed is not None:
            return
        try:
            job.write()
        except Exception as exc:  # no mark may be written after it: the pass stops
            with self._cond:
                self._failed = exc

    def _take_back(self, unmark: _Unmark) -> None:
        if unmark.marked.exception() is not None:
            return
        try:
            self.ledger.unmark_sending(self.where, unmark.events, unmark.marked_at)
        except Exception as exc:
            log.warning("could not take back the marks of a request that never left: %s", exc)


@dataclass(frozen=True)
class Sent:
    """What sending did: the requests it made, and why it stopped early, if it did."""

    requests: int = 0
    halted: SendOutcome | None = None


class Sender:
    """Sends the due events of one pass, at most `max_in_flight` requests at a time, and records
    every answer in the ledger and the reports as it comes (on the calling thread)."""

    def __init__(
        self,
        capi: CapiClient,
        ledger: LedgerBackend,
        where: SheetTab,
        reports: RowReports,
        *,
        batch_size: int,
        max_in_flight: int,
        clock: Callable[[], datetime],
        lease: LockLease,
        progress: Progress,
    ) -> None:
        self.capi, self.ledger, self.where, self.reports = capi, ledger, where, reports
        self.batch_size = batch_size
        self.limit = InFlightLimit(max_in_flight)
        self.clock, self.lease, self.progress = clock, lease, progress
        self.halted: SendOutcome | None = None
        self._in_flight: dict[Future[list[SendOutcome]], Chunk] = {}
        self._answered = self._told = self._total = 0
        self._told_at = 0.0  # time.monotonic() of the last progress report
        self.delivered = 0  # events Meta accepted so far (what a pass that stops has sent)
        self._strengths: dict[str, str] = {}
        self._now = datetime.min
        self._answers: Answers = []  # answers the ledger has not recorded yet
        self._unreported: deque[tuple[list[tuple[PlannedEvent, SendOutcome]], datetime]] = deque()
        self._writes: LedgerWrites  # one per send(): closed when sending ends
        self._before: Callable[[], None] | None = None
        self._latest: Future[list[SendOutcome]] | None = None  # the last request sent
        self._built = False  # every request of this send() is built: no mark is to come
        self._on_built: Callable[[Callable[[], bool]], None] | None = None
        self._took: list[float] = []  # seconds each answered request took (_post)

    def before(self, write: Callable[[], None] | None) -> None:
        """A ledger write of the pass's own to make before the first mark of the next send(),
        on the ledger's writer while the first requests are built; one that fails stops the
        pass (its error raised) before any request leaves."""
        self._before = write

    def when_built(self, hook: Callable[[Callable[[], bool]], None] | None) -> None:
        """Called once every request of the next send() is built, if Meta's answers still to
        come are expected to take HIDE_AT_LEAST or more, with a function that waits until the
        answers kept by then are recorded in the ledger (False: they could not be)."""
        self._on_built = hook

    def send(
        self,
        leads: Iterable[RowDecision],
        now: datetime,
        total: int | None = None,
        writes: LedgerWrites | None = None,
    ) -> Sent:
        """Send the leads' events, request by request: each request's events are marked
        `sending` in the ledger before it leaves (a crash before Meta's answer is recorded then
        resends them with the same event ids), and its answer is recorded before a request
        holding the same lead's later stage leaves.

        `leads` may be a generator that plans as it goes (sync/run.py): a request leaves as
        soon as its leads are planned, while later ones are still being planned. `total`: how
        many events at most (for progress), when `leads` cannot say before it ends. `writes`:
        the pass's ledger writer when it started before (its writes so far come first), closed
        once sending ends."""
        if isinstance(leads, Sequence):
            total = sum(len(d.events) for d in leads)
        self._now = now
        self._total = total or 0
        self._built = False
        before = self.capi.requests_made
        if writes is None:
            self._writes = LedgerWrites(self.ledger, self.where, now, self._before)
        else:
            self._writes = writes
            if self._before is not None:
                writes.write(self._before)
        self._before = None
        on_built, self._on_built = self._on_built, None
        # Built and marked, not sent yet, oldest first (see _mark_ahead).
        ahead: deque[tuple[Chunk, Future[None] | None]] = deque()
        with (
            quick_switches(),
            ThreadPoolExecutor(self.limit.most, thread_name_prefix="capi-send") as pool,
        ):
            try:
                for chunk in lead_chunks(self._events_of(leads), self.batch_size):
                    ahead.append((chunk, self._mark_ahead(chunk)))
                    # While the ledger writes its mark and the requests before it wait for
                    # Meta: the sending thread then only sends it. (In `ahead` first: should it
                    # fail, the mark is taken back with the others never sent.)
                    chunk.prepare()
                    # What may leave now leaves; past `most` chunks ahead, wait for a place.
                    while ahead and (
                        len(ahead) > self.limit.most
                        or self._room(self._after(ahead[0][0]), block=False)
                    ):
                        self._send_first(ahead, pool)
                # No mark is to come: each answer is handed to the ledger's writer as it
                # comes (_collect), not all at the end, and the writer indexes the rest of
                # the identities while the last requests wait for Meta.
                self._built = True
                if self.halted is None and self._wait_left(len(ahead)) >= HIDE_AT_LEAST:
                    self._writes.no_more_marks()
                    if on_built is not None:  # the answers kept so far go to the writer now
                        self._hand_answers()
                        on_built(functools.partial(self._writes.recorded, self._writes.handed()))
                while ahead:
                    self._send_first(ahead, pool)
            finally:
                try:
                    self._collect_all()  # in flight when the pass stops: answered, recorded
                finally:
                    try:
                        self._flush()
                        self._report()
                    finally:
                        try:
                            for chunk, marked in ahead:  # marked ahead, never sent
                                if marked is not None:
                                    self._writes.unmark(chunk.events, self._now, marked)
                        finally:
                            self._writes.close()
        self._total, self._told = self._answered, -1  # what there was, now that it is known
        self._tell_progress()
        return Sent(self.capi.requests_made - before, self.halted)

    def _mark_ahead(self, chunk: Chunk) -> Future[None] | None:
        """Mark a request's events as soon as it is built, before there is a place for it: the
        ledger writes the mark while the requests before it wait for Meta, and the request
        leaves as soon as a place frees (measured at 10,000 leads: the mark was ~30 ms of each
        request's cycle). Only a request whose events are all new to the ledger: if the pass
        stops before it leaves, its marks are taken back whole (LedgerWrites.unmark). Not one
        that follows another (a lead longer than a request): its earlier stages' answer is
        committed before its mark, as the request after an answer always is. A process
        killed in between leaves them `sending`, as one killed while the request is in flight:
        the next pass sends them with the same event ids."""
        if self.halted is None and not chunk.follows and all(e.first for e in chunk.events):
            return self._mark_sending(chunk)
        return None

    def _wait_left(self, ahead: int) -> float:
        """How long Meta's answers still to come should take: the requests built and in
        flight, in rounds of `most`, at the mean time the answered ones took (0: none yet)."""
        took = self._took[:]
        if not took:
            return 0.0
        rounds = math.ceil((ahead + len(self._in_flight)) / self.limit.most)
        return rounds * sum(took) / len(took)

    def _after(self, chunk: Chunk) -> Future[list[SendOutcome]] | None:
        """The request this one must wait for: the one before it, when it holds the rest of a
        lead that one began."""
        return self._latest if chunk.follows else None

    def _send_first(self, ahead: deque[tuple[Chunk, Future[None] | None]], pool: Executor) -> None:
        """Send the oldest request built, once there is a place for it (or record it as not
        sent, once Meta stopped the pass); it leaves `ahead` only then."""
        chunk, marked = ahead[0]
        self._room(self._after(chunk), block=True)
        self._tell_progress()
        if self.halted is not None:
            # docs/meta-errors.md: a rejected token (190) or a setup error stops the pass; the
            # other requests would fail alike. Their events stay due.
            marked = marked or self._mark_sending(chunk)
            # Its answer goes with a later write: the mark must be in first (a mark that failed
            # leaves nothing to answer, and the events stay due all the same).
            wait([marked])
            self._record(chunk, [self.halted] * len(chunk.events))
            ahead.popleft()
            self._report()
            return
        self.lease.check()  # a pass whose lock lapsed may no longer be the only one
        stopping.check()  # a stopping server sends no request it cannot record
        # Marked request by request, not all before the first: the ledger's writes then
        # overlap Meta's answers instead of holding back the first request.
        if marked is None:
            marked = self._mark_sending(chunk)
        self._latest = pool.submit(self._post, chunk, marked)
        self._in_flight[self._latest] = chunk
        ahead.popleft()
        self._report()

    def _events_of(self, leads: Iterable[RowDecision]) -> Iterator[list[PlannedEvent]]:
        for d in leads:
            if d.match is not None:
                self._strengths[d.lead_key] = d.match.strength
            yield d.events

    def _mark_sending(self, chunk: Chunk) -> Future[None]:
        """Mark the request's events `sending`; the answers not recorded yet go with the next
        write (a commit per request and one per progress report at most, not one per request
        and one per answer): a lead's earlier stage's answer is committed with, at the latest,
        the mark of the request holding its later one. Written by LedgerWrites: the future is
        done when the mark is committed."""
        self._hand_answers()  # they go with this mark, or an earlier one still queued
        notes = self.reports.notes
        return self._writes.mark_sending(chunk.events, self._strengths, notes, self._now)

    def _hand_answers(self) -> None:
        """Hand the answers not recorded yet to the ledger writer (its next write takes them)."""
        self._writes.answer(self._answers)
        self._answers = []

    def _flush(self, *, answers_only: bool = False) -> None:
        """Record the answers no write took yet and wait until they are committed, before
        anything reads the ledger: before progress is told (`answers_only`: raise only if an
        answer could not be recorded, LedgerWrites.flush), and when sending ends or stops
        (every write, and any failure raised). Were the process to die first, their events
        stay `sending` and the next pass sends them again with the same ids, as for a request
        in flight."""
        self._hand_answers()
        self._writes.flush(answers_only=answers_only)

    def _post(self, chunk: Chunk, marked: Future[None]) -> list[SendOutcome]:
        """In a worker thread: once the request's mark is committed, the HTTP (its body encoded
        on the pass's thread, Chunk.prepare). A mark that failed raises, and nothing leaves."""
        marked.result()
        payloads, encoded = chunk.take_payloads()
        started = time.monotonic()
        try:
            return self.capi.send(payloads, encoded=encoded)
        finally:
            self._took.append(time.monotonic() - started)

    def _room(self, after: Future[list[SendOutcome]] | None, *, block: bool) -> bool:
        """Whether one more request may leave: fewer than the limit in flight, and `after`
        (the request holding this lead's earlier stages) answered and recorded. The answers
        already in are recorded first; `block`: wait for more until it may."""
        while self._in_flight and self.halted is None:
            if self.limit.throttled(self.capi.throttled):
                log.info("Meta is limiting calls: %s request(s) in flight now", self.limit.now)
            if len(self._in_flight) < self.limit.now and after not in self._in_flight:
                return True
            if not block and not any(f.done() for f in self._in_flight):
                return False
            self._collect()
        return True

    def _collect(self) -> None:
        """Record the answers of the requests that have finished (at least one). A request
        that never left (its mark failed) raises, once the others' answers are kept."""
        done, _ = wait(self._in_flight, return_when=FIRST_COMPLETED)
        failure: BaseException | None = None
        for future in done:
            chunk = self._in_flight.pop(future)
            try:
                outcomes = future.result()
            except BaseException as exc:
                failure = failure or exc
                continue
            self._record(chunk, outcomes)
            self.limit.answered()
        if self._built:  # recorded while the last requests wait for Meta
            self._hand_answers()
        if failure is not None:
            raise failure

    def _collect_all(self) -> None:
        """Wait for every request in flight and keep its answer; then raise the first failure."""
        failure: BaseException | None = None
        while self._in_flight:
            try:
                self._collect()
            except BaseException as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def _record(self, chunk: Chunk, outcomes: list[SendOutcome]) -> None:
        """Keep Meta's answer for the ledger's next write (_mark_sending, _flush) and for the
        reports (_report)."""
        sent_at = self.clock()
        pairs = list(zip(chunk.events, outcomes, strict=True))
        self._answers.append((pairs, sent_at))
        self._unreported.append((pairs, sent_at))
        if self.halted is None:
            self.halted = next((o for o in outcomes if o.state == "not_sent"), None)
        self._answered += len(pairs)
        self.delivered += sum(1 for o in outcomes if o.state == "sent")

    def _report(self) -> None:
        """Tell the reports the answers kept since the last time: once the request an answer
        made room for has left, not before it (a lead's report is made when its last event is
        answered: ~8 ms for a request of 500 events)."""
        while self._unreported:
            pairs, sent_at = self._unreported.popleft()
            for event, outcome in pairs:
                self.reports.answered(event, outcome, sent_at)

    def _tell_progress(self) -> None:
        """Between requests, never while recording: a failing progress callback stops the pass
        with every answer already recorded. Told once a twentieth of the events more were
        answered or a second passed since the last report, and at the end: each report waits
        for the ledger to commit the answers it counts, and the next request waits with it
        (a report per request cost a 100,000-lead first pass ~5 s: bench/RESULTS.md)."""
        if self._answered == self._told:
            return
        moved = self._answered - self._told
        if self._told >= 0 and moved * 20 < self._total and time.monotonic() - self._told_at < 1:
            return
        # The callback may read the ledger, or hand the tab to another pass (one that took
        # the lock over): the answers it counts are committed first.
        self._flush(answers_only=True)
        self._told, self._told_at = self._answered, time.monotonic()
        self.progress("send", self._answered, self._total)
