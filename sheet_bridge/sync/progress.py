"""A running pass's phase and progress, kept in the ledger so that any process can report it.

The web API answers a long pass with 202 and its id; whoever asks later (another request, or
another replica) reads the pass record. The record is also the pass's heartbeat: a pass that
stops updating it for PASS_LOST_AFTER ran in a process that died, and is reported as lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from types import TracebackType

from sheet_bridge.sync.ledger import PASS_HEARTBEAT, LedgerBackend, LedgerError

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

# Progress is written at most once a second (a 100,000-lead pass reports ~400 sends), and on
# every change of phase.
WRITE_EVERY = 1.0


class PassProgress:
    """The `progress(phase, done, total)` callback of one pass, written to its record.

    Used as a context manager: while it is open a heartbeat thread re-writes the last progress
    every `heartbeat` seconds, so a phase that reports nothing for a while (reading a large
    tab, a Meta request being retried) is not mistaken for a dead process. A ledger that cannot
    be written is logged, never a failure of the pass: the ledger's own writes decide that."""

    def __init__(
        self,
        ledger: LedgerBackend,
        pass_id: int,
        clock: Callable[[], datetime],
        also: Progress | None = None,
        *,
        heartbeat: float = PASS_HEARTBEAT,
    ) -> None:
        self.ledger = ledger
        self.pass_id = pass_id
        self.clock = clock
        self.also = also
        self.heartbeat = heartbeat
        self._state = ("read", 0, 0)
        self._written_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.also is not None:
            self.also(phase, done, total)
        with self._lock:
            changed = phase != self._state[0]
            self._state = (phase, done, total)
            due = changed or time.monotonic() - self._written_at >= WRITE_EVERY
        if due:
            self._write()

    def _write(self) -> None:
        with self._lock:
            phase, done, total = self._state
            self._written_at = time.monotonic()
        try:
            self.ledger.pass_progress(self.pass_id, phase, done, total, self.clock())
        except LedgerError as exc:
            log.warning("could not record the progress of pass %s: %s", self.pass_id, exc)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            if time.monotonic() - self._written_at >= self.heartbeat / 2:
                self._write()

    def __enter__(self) -> PassProgress:
        self._thread = threading.Thread(
            target=self._beat, name=f"sheet-bridge-pass-{self.pass_id}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
