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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from sheet_bridge.meta.client import CapiClient, SendOutcome
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


@dataclass(slots=True)
class Chunk:
    """The events of one request. `follows`: it holds the rest of a lead the chunk before it
    began (a lead longer than a request), so it waits until that one is answered."""

    events: list[PlannedEvent] = field(default_factory=list)
    follows: bool = False


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
    ) -> None:
        self.notes: dict[str, str | None] = {}
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
            self._reports[wait[0]] = self._render(decision)
            decision.events.clear()

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


class LedgerWrites:
    """The ledger writes of one pass's sending, committed one after another, in the order they
    were asked for, on a thread of their own.

    SQLite and PostgreSQL do their work without Python's lock (a SQLite statement runs in C with
    the GIL released; psycopg waits on the network), so a request's mark is written while the
    pass's thread builds the next request and records answers: measured on a 100,000-lead first
    pass, the ledger's writes are its largest cost (bench/RESULTS.md). Each write returns a
    future; a request waits for its own mark before it leaves. After a write fails, no later
    mark is attempted (each raises the same error, so its request never leaves), but answers
    still are: those the failed write carried go with the next write of answers alone, as
    they did when the pass wrote on its own thread."""

    def __init__(self, ledger: LedgerBackend, where: SheetTab) -> None:
        self.ledger, self.where = ledger, where
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ledger-write")
        self._last: Future[None] | None = None
        self._failed: BaseException | None = None
        self._unrecorded: Answers = []  # the answers a failed write carried

    def mark_sending(
        self,
        events: Sequence[PlannedEvent],
        strengths: Mapping[str, str],
        notes: Mapping[str, str | None],
        now: datetime,
        answered: Answers,
    ) -> Future[None]:
        """Queue `ledger.mark_sending`; a mark after a write that failed raises here, at once."""
        if events and self._failed is not None:
            raise self._failed
        write = functools.partial(
            self.ledger.mark_sending, self.where, events, strengths, notes, now
        )
        self._last = self._thread.submit(self._write, write, bool(events), answered)
        return self._last

    def _write(self, write: Callable[..., None], marks: bool, answered: Answers) -> None:
        """On the thread: `write` (a mark_sending) with the answers to record."""
        if self._failed is not None:
            if marks:
                raise self._failed
            answered, self._unrecorded = self._unrecorded + answered, []
        try:
            write(answered=answered)
        except BaseException as exc:
            self._failed = self._failed or exc
            self._unrecorded = answered
            raise

    def wait(self) -> None:
        """Until every write asked for is done; the first failure is raised."""
        if self._last is not None:
            with contextlib.suppress(BaseException):
                self._last.result()
        if self._failed is not None:
            raise self._failed

    def close(self) -> None:
        """Let the writes asked for finish (a pass that stops still records what it had), and
        the thread let go of what it holds in the ledger."""
        self._thread.submit(self.ledger.release_thread)
        self._thread.shutdown(wait=True)


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
        self.delivered = 0  # events Meta accepted so far (what a pass that stops has sent)
        self._strengths: dict[str, str] = {}
        self._now = datetime.min
        self._answers: Answers = []  # answers the ledger has not recorded yet
        self._writes = LedgerWrites(ledger, where)  # one pass's: closed when sending ends

    def send(self, leads: Iterable[RowDecision], now: datetime, total: int | None = None) -> Sent:
        """Send the leads' events, request by request: each request's events are marked
        `sending` in the ledger before it leaves (a crash before Meta's answer is recorded then
        resends them with the same event ids), and its answer is recorded before a request
        holding the same lead's later stage leaves.

        `leads` may be a generator that plans as it goes (sync/run.py): a request leaves as
        soon as its leads are planned, while later ones are still being planned. `total`: how
        many events at most (for progress), when `leads` cannot say before it ends."""
        if isinstance(leads, Sequence):
            total = sum(len(d.events) for d in leads)
        self._now = now
        self._total = total or 0
        before = self.capi.requests_made
        with ThreadPoolExecutor(self.limit.most, thread_name_prefix="capi-send") as pool:
            try:
                latest: Future[list[SendOutcome]] | None = None
                for chunk in lead_chunks(self._events_of(leads), self.batch_size):
                    self._make_room(latest if chunk.follows else None)
                    self._tell_progress()
                    if self.halted is not None:
                        # docs/meta-errors.md: a rejected token (190) or a setup error stops the
                        # pass; the other requests would fail alike. Their events stay due.
                        self._mark_sending(chunk)
                        self._record(chunk, [self.halted] * len(chunk.events))
                        continue
                    self.lease.check()  # a pass whose lock lapsed may no longer be the only one
                    stopping.check()  # a stopping server sends no request it cannot record
                    # Marked request by request, not all before the first: the ledger's writes
                    # then overlap Meta's answers instead of holding back the first request.
                    marked = self._mark_sending(chunk)
                    latest = pool.submit(self._post, chunk, marked)
                    self._in_flight[latest] = chunk
            finally:
                try:
                    self._collect_all()  # in flight when the pass stops: answered, recorded
                finally:
                    try:
                        self._flush()
                    finally:
                        self._writes.close()
        self._total, self._told = self._answered, -1  # what there was, now that it is known
        self._tell_progress()
        return Sent(self.capi.requests_made - before, self.halted)

    def _events_of(self, leads: Iterable[RowDecision]) -> Iterator[list[PlannedEvent]]:
        for d in leads:
            if d.match is not None:
                self._strengths[d.lead_key] = d.match.strength
            yield d.events

    def _mark_sending(self, chunk: Chunk) -> Future[None]:
        """Mark the request's events `sending` and record the answers not recorded yet, in one
        transaction (a commit per request and one per progress report, not one per request and
        one per answer): a lead's earlier stage's answer is committed with, at the latest, the
        mark of the request holding its later one. Written by LedgerWrites, in order: the
        future is done when it is committed."""
        answered, self._answers = self._answers, []
        notes = self.reports.notes
        return self._writes.mark_sending(chunk.events, self._strengths, notes, self._now, answered)

    def _flush(self) -> None:
        """Record the answers no mark took, and wait until every write is committed, before
        anything reads the ledger: before progress is told, and when sending ends or stops.
        Were the process to die first, their events stay `sending` and the next pass sends
        them again with the same ids, as for a request in flight."""
        if self._answers:
            answered, self._answers = self._answers, []
            self._writes.mark_sending((), {}, {}, self._now, answered)
        self._writes.wait()

    def _post(self, chunk: Chunk, marked: Future[None]) -> list[SendOutcome]:
        """In a worker thread: once the request's mark is committed, the HTTP (payloads are
        built here, as they are sent). A mark that failed raises, and nothing leaves."""
        marked.result()
        return self.capi.send([e.payload for e in chunk.events])

    def _make_room(self, after: Future[list[SendOutcome]] | None) -> None:
        """Wait for answers until one more request may leave: fewer than the limit in flight,
        and `after` (the request holding this lead's earlier stages) answered and recorded."""
        while self._in_flight and self.halted is None:
            if self.limit.throttled(self.capi.throttled):
                log.info("Meta is limiting calls: %s request(s) in flight now", self.limit.now)
            if len(self._in_flight) < self.limit.now and after not in self._in_flight:
                return
            self._collect()

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
        """Keep Meta's answer for the ledger's next write (_mark_sending, _flush) and tell
        the reports now."""
        sent_at = self.clock()
        pairs = list(zip(chunk.events, outcomes, strict=True))
        self._answers.append((pairs, sent_at))
        for event, outcome in pairs:
            self.reports.answered(event, outcome, sent_at)
        if self.halted is None:
            self.halted = next((o for o in outcomes if o.state == "not_sent"), None)
        self._answered += len(pairs)
        self.delivered += sum(1 for o in outcomes if o.state == "sent")

    def _tell_progress(self) -> None:
        """Between requests, never while recording: a failing progress callback stops the pass
        with every answer already recorded."""
        if self._answered != self._told:
            # The callback may read the ledger, or hand the tab to another pass (one that took
            # the lock over): the answers it counts are committed first.
            self._flush()
            self._told = self._answered
            self.progress("send", self._answered, self._total)
