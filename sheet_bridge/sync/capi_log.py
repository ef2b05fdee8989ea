"""The CAPI Log tab's lines, and their append while a pass still sends.

A line per event a pass decided (sent, expired, baseline, refused…): `log_lines`. A large
pass's lines go to Google ~2 MB at a time (one values.append each), and its leads are answered
over many seconds: `LogStream` appends the lines of the leads Meta has answered, a whole
call's worth at a time, while later requests wait for Meta, instead of every call after the
last answer (a 100,000-lead first pass appends ~190,000 lines, ten calls: ~2 s after the last
answer, docs/performance.md). A pass smaller than one call appends once, at the end, as
before: no call is added.

A line goes to the Log only once its lead's last event is answered (the ledger then holds each
of its events, `sending` at least: a later pass's `_log_behind` finds them all). If an append
fails, its lines wait for the pass's own append at the end, which tries them again; if that
fails too, the pass says so (sync/run.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from sheet_bridge.sheets.client import MAX_PAYLOAD_BYTES, SheetsClient
from sheet_bridge.sync.outcomes import RowReport

log = logging.getLogger(__name__)

# One CAPI Log tab serves every tab of the spreadsheet: "Tab" says which one a line is about.
LOG_HEADER = [
    "Time", "Row", "CAPI Key", "Lead Status", "Event", "Event ID", "Result", "Answer", "Tab"
]  # fmt: skip

# A line's JSON beyond its texts: the time stamp, the row number, quotes and commas.
_LINE_OVERHEAD = 64
# The most a streamed append holds: one values.append call's body (sheets/client.py).
CALL_BYTES = MAX_PAYLOAD_BYTES


def log_lines(reports: Iterable[RowReport], tab: str, stamp: str) -> Iterator[list[object]]:
    """The CAPI Log lines of these rows, time-stamped `stamp`: one per event the pass decided,
    row by row, funnel order."""
    for report in reports:
        for name, event_id, state, answer in report.logged:
            yield [stamp, report.row, report.lead_key, report.status, name, event_id, state,
                   answer, tab]  # fmt: skip


class LogStream:
    """Appends the CAPI Log lines of the rows whose report is final (`add`), one call's worth at
    a time on a thread of its own, in order, while the pass's thread goes on sending.

    `appended` holds the reports whose lines are in the Log: the pass's own append at the end
    takes every other row's, in row order (a pass smaller than one call appends them all then,
    row by row, as before)."""

    def __init__(
        self,
        sheets: SheetsClient,
        tab: str,
        stamp: Callable[[], str],
        *,
        call_bytes: int | None = None,
    ) -> None:
        self.sheets, self.tab, self.stamp = sheets, tab, stamp
        self.call_bytes = CALL_BYTES if call_bytes is None else call_bytes
        self.appended: set[int] = set()  # id() of the reports whose lines are in the Log
        self.last: int | None = None  # the Log's last line after the latest append
        self._ready: list[RowReport] = []  # final, not appended yet (oldest first)
        self._size = 0  # their lines' JSON, estimated
        self._pending: Future[int | None] | None = None
        self._sending: list[RowReport] = []  # the reports of the append in flight
        self._failed = False
        self._pool: ThreadPoolExecutor | None = None

    def add(self, report: RowReport) -> None:
        """A row's report is final: its lines go with the next append."""
        if not report.logged:
            return
        self._ready.append(report)
        self._size += sum(
            _LINE_OVERHEAD + len(report.lead_key) + len(report.status) + sum(map(len, entry))
            for entry in report.logged
        )
        # Under the call's limit (the client would split what is over it into a second call),
        # by the estimate plus a margin.
        if self._size >= self.call_bytes * 0.95 and self._settled() and not self._failed:
            self._sending, self._ready, self._size = self._ready, [], 0
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="log-append")
            # The lines are built on the stream's thread, as Google takes them.
            lines = log_lines(self._sending, self.tab, self.stamp())
            self._pending = self._pool.submit(self.sheets.append_log, lines, LOG_HEADER)

    def close(self) -> None:
        """Wait for the append in flight (its rows are then in `appended`, or left to the
        pass's own append if it failed)."""
        self._settled(wait=True)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._ready, self._size = [], 0

    def _settled(self, *, wait: bool = False) -> bool:
        """Whether no append is in flight (`wait`: until none is); the one that ended is
        accounted for."""
        pending = self._pending
        if pending is None:
            return True
        if not wait and not pending.done():
            return False
        self._pending = None
        try:
            last = pending.result()
        except Exception as exc:  # left to the pass's own append, which says why if it fails
            log.warning(
                "appending the CAPI Log lines of %d row(s) while sending failed (%s); the "
                "pass appends them at its end",
                len(self._sending),
                exc,
            )
            self._failed = True
        else:
            self.appended.update(id(r) for r in self._sending)
            if last is not None:
                self.last = last
        self._sending = []
        return True
