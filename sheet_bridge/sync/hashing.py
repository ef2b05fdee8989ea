"""Hash a pass's due leads' identities in a worker process, ahead of the lead that sends them.

Normalizing and hashing identities (phone numbers above all) is most of a first pass's planning:
about 0.1 ms a lead, 10 s of a 100,000-lead first pass, on the one core Python's threads share.
With a second core, a worker process hashes the next leads while the pass's own thread sends
and records the ones before them; the pass then waits for neither (docs/performance.md). The
worker runs `hash_identities` (meta/identity.py), which calls `hash_user_data` as the pass's own
`hash_row` does, so a lead is hashed the same either way; a small pass, or a machine with one
core, hashes on the pass's thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from sheet_bridge.config import MetaConfig
from sheet_bridge.meta.identity import HashedIdentity, hash_identities
from sheet_bridge.sync.plan import RowDecision

log = logging.getLogger(__name__)

# Leads per request to the worker: big enough that pickling is a small part of it (~2 % of the
# hashing, measured), small enough that the first answer comes back at once.
CHUNK = 500
# Chunks given to the worker ahead of the sender: bounds what waits in memory (hashed
# identities not sent yet) while keeping the worker busy.
AHEAD = 6
# Fewer due leads than this are hashed on the pass's thread: a worker costs ~0.2 s to start
# (a fresh interpreter), about what hashing 2,000 leads costs.
MIN_LEADS = 4_000
# The environment variable that sets the number of worker processes (0: never).
WORKERS_ENV = "SHEET_BRIDGE_HASH_WORKERS"


def cores() -> int:
    """The CPU cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(environ: Mapping[str, str] | None = None) -> int:
    """Worker processes for hashing: WORKERS_ENV when set, else one when there is a second
    core (more would share the cores the pass, Sheets and the HTTP threads use already)."""
    env = os.environ if environ is None else environ
    text = env.get(WORKERS_ENV, "").strip()
    if text:
        try:
            return max(int(text), 0)
        except ValueError:
            log.warning("%s=%r is not a number: hashing on the pass's thread", WORKERS_ENV, text)
            return 0
    return 1 if cores() >= 2 else 0


class IdentityHasher:
    """Hashes due leads' identities in `workers` worker processes (none: on the caller's
    thread), in the order the leads are sent. One pool per pass: no process outlives it."""

    def __init__(
        self,
        workers: int | None = None,
        *,
        chunk: int = CHUNK,
        ahead: int = AHEAD,
        min_leads: int = MIN_LEADS,
    ) -> None:
        self.workers = default_workers() if workers is None else max(workers, 0)
        self.chunk, self.ahead, self.min_leads = max(chunk, 1), max(ahead, 1), min_leads
        self._pool: ProcessPoolExecutor | None = None
        self._starting = False  # the pool is new: its worker is still starting

    def start(self, leads: int) -> None:
        """A pass of up to `leads` due leads begins: start the worker now, while it plans."""
        if self.workers and leads >= self.min_leads and self._pool is None:
            # spawn, not fork: the pass's process has threads (HTTP, the ledger's heartbeat,
            # a web server's), and a forked child would inherit their locks as they were.
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
            self._pool.submit(hash_identities, [], "", assume_country=False)  # import now
            self._starting = True

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def hashed(
        self, decisions: Sequence[RowDecision], meta: MetaConfig
    ) -> Iterator[tuple[RowDecision, HashedIdentity | None]]:
        """Each due decision (with `todo`) and its row's identity hashed, in the order given;
        None where the caller hashes it (no worker, the worker failed, or it is still starting).

        A new worker is a fresh interpreter, ready ~0.15 s after `start`; the first chunk is
        hashed by the caller meanwhile (500 leads, ~0.05 s): the first request leaves without
        waiting for the worker, which hashes the chunks after it (measured at 10,000 leads:
        bench/RESULTS.md, ninth round)."""
        pool = self._pool if len(decisions) >= self.min_leads else None
        starting, self._starting = self._starting, False
        if pool is None:
            for d in decisions:
                yield d, None
            return
        country, assume = meta.default_country, meta.assume_country
        waiting: deque[tuple[Sequence[RowDecision], Future[list[HashedIdentity | None]] | None]]
        waiting = deque()
        starts = iter(range(0, len(decisions), self.chunk))
        broken = False
        while True:
            while len(waiting) < self.ahead and (start := next(starts, None)) is not None:
                part = decisions[start : start + self.chunk]
                future = None
                raw = [d.todo.row.identity for d in part if d.todo is not None]
                if starting:  # hashed by the caller while the worker starts
                    starting = False
                elif not broken and len(raw) == len(part):
                    try:
                        future = pool.submit(hash_identities, raw, country, assume_country=assume)
                    except (BrokenProcessPool, RuntimeError) as exc:  # shut down or dead
                        broken = self._failed(exc)
                waiting.append((part, future))
            if not waiting:
                return
            part, future = waiting.popleft()
            hashed: Sequence[HashedIdentity | None] = [None] * len(part)
            if future is not None:
                try:
                    hashed = future.result()
                except Exception as exc:  # a dead worker must not stop the pass: hash here
                    broken = self._failed(exc)
            yield from zip(part, hashed, strict=True)

    def _failed(self, exc: BaseException) -> bool:
        log.warning(
            "the hashing worker failed (%s); hashing on the pass's thread", type(exc).__name__
        )
        self.close()
        return True
