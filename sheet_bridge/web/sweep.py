"""The sweep: every serving process sends the due edits of its bridges (docs/edits.md).

An edit is recorded in the ledger and answered at once; its events go once it has settled.
Whichever process looks first sends them: the one that took the edit wakes when it is due, and
every process looks every `[sync] sweep_seconds` besides, so an edit whose process died (a
SIGKILL, a scale-in) still reaches Meta within settle_seconds + sweep_seconds + one send, and
a pass whose process died is shown lost within sweep_seconds, not two minutes on. A
sweep never waits for a tab's lock: a tab held by a live pass is that pass's (every pass takes
the edits due when it starts), and the next sweep looks again. A lock whose holder is dead is
free at once (PostgreSQL ends the session's advisory lock; the SQLite lease checks whether
its holder's process still runs).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime

from sheet_bridge.sync.edits import send_due
from sheet_bridge.sync.ledger import SyncBusy
from sheet_bridge.sync.run import Bridge, failure_words

log = logging.getLogger(__name__)
# After a failed send, a bridge's due edits wait this long for the next try (a pass of the tab
# takes them meanwhile all the same).
FAILED_PAUSE = 60.0


class Sweeper:
    """One thread per serving process, for all its bridges."""

    def __init__(self, bridges: Sequence[Bridge], interval: float) -> None:
        self.bridges = list(bridges)
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._due: list[float] = []  # wall-clock times an edit taken here becomes due
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._paused: dict[int, float] = {}  # bridge index → monotonic time to try again

    def start(self) -> Sweeper:
        self._thread = threading.Thread(target=self._run, name="sheet-bridge-sweep", daemon=True)
        self._thread.start()
        self._wake.set()  # at once: edits a process that stopped left due
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def due_at(self, at: datetime) -> None:
        """Look again when an edit taken here becomes due (a little after, so it has)."""
        with self._lock:
            self._due.append(at.timestamp() + 0.05)
        self._wake.set()

    def sweep(self) -> int:
        """Send what is due on every bridge whose tab is free; the number of passes run. A
        bridge whose send failed (no token, a sheet that cannot be read, a ledger behind the
        sheet) is left alone for FAILED_PAUSE seconds: no Sheets call every sweep meanwhile."""
        passes = 0
        now = time.monotonic()
        for i, bridge in enumerate(self.bridges):
            if self._paused.get(i, 0.0) > now:
                continue
            try:
                if send_due(bridge, lock_wait=0.0) is not None:
                    passes += 1
                else:  # a pass a dead process left "running" is known lost at once
                    bridge.close_lost_passes()
            except SyncBusy:
                pass  # a live pass holds the tab; the next sweep looks again
            except Exception as exc:  # one bridge's trouble never stops the others
                self._paused[i] = now + FAILED_PAUSE
                log.warning(
                    "sweep of %s: %s (%s); edits stay queued, next try in %.0f s",
                    bridge.sheet_tab,
                    type(exc).__name__,
                    failure_words(exc),
                    FAILED_PAUSE,
                )
        return passes

    def _timeout(self) -> float:
        now = time.time()
        with self._lock:
            self._due = [t for t in self._due if t > now]
            first = min(self._due, default=now + self.interval)
        return max(0.0, min(self.interval, first - now))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._timeout())
            self._wake.clear()
            if self._stop.is_set():
                return
            self.sweep()
