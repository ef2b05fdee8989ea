"""The write-back of a pass: each row's bridge cells that changed, and the early part of it.

Once every request of a pass is built, the rows whose report is final by then (Meta answered
all their events) have their cells written, and their row memos made, while the last requests
wait for Meta (`EarlyWrite`); the pass's own write-back at its end takes the other rows. A
pass with fewer such rows than EARLY_ROWS, or more than EARLY_MOST, writes them all at its end
as before: the early write costs one more Sheets call (Google's quota counts calls), worth it
only when it takes a large part of the write off the pass's end, and only as much as the last
requests' wait hides (measured: bench/RESULTS.md, "Fifteenth round")."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sheet_bridge.config import BRIDGE_COLUMNS
from sheet_bridge.sheets.client import SheetsClient, SheetsError
from sheet_bridge.sync.collector import gc_paused
from sheet_bridge.sync.ledger import LockLost
from sheet_bridge.sync.outcomes import RowReport
from sheet_bridge.sync.rows import ColumnLayout
from sheet_bridge.sync.stopping import ServerStopping

log = logging.getLogger(__name__)

# The fewest final rows an early write takes (fewer: all rows are written at the pass's end).
EARLY_ROWS = 1000
# The most: writing more (cells, and memos on a second thread) outlasts the last requests' wait
# and holds up the pass's end instead (measured at 100,000 leads, Meta at 150 ms: ~97,000 rows
# final by then, 3.3 s of work against ~0.3 s of wait; the pass took 1.1 s longer).
EARLY_MOST = 20_000

Cell = tuple[int, int, object]
Memo = tuple[str, str, str, str]


def header_cells(layout: ColumnLayout) -> list[Cell]:
    """The bridge's headers the tab is missing (row 1)."""
    return [(1, col, name) for col, name in layout.new_headers]


def changed_cells(
    reports: Iterable[RowReport],
    written: Sequence[Sequence[object]],
    first_row: int,
    layout: ColumnLayout,
) -> list[Cell]:
    """The bridge cells of these rows that differ from what the tab held when read (`written`:
    each row's bridge cells as read, in BRIDGE_COLUMNS order, from `first_row`); a row with no
    bridge cell yet (a first pass) gets its non-empty ones."""
    cells: list[Cell] = []
    columns = [layout.bridge[name] for name in BRIDGE_COLUMNS]
    with gc_paused():
        for report in reports:
            i = report.row - first_row
            current = written[i] if 0 <= i < len(written) else ()
            row, new = report.row, report.cells
            if not current:
                cells += [(row, col, v) for col, v in zip(columns, new, strict=True) if v]
                continue
            for j, (col, value) in enumerate(zip(columns, new, strict=True)):
                old = current[j] if j < len(current) else ""
                if str(old if old is not None else "") != value:
                    cells.append((row, col, value))
    return cells


class EarlyWrite:
    """The cells and memos of the rows final once every request is built, written and made on
    two threads of its own while the pass waits for Meta's last answers.

    `add` takes each row's report as it is final (RowReports' `on_final`); `start` begins the
    write of those taken so far. After `wait`: `done` holds the reports whose cells Google
    wrote (id()), `cells` their count, `headers` whether the missing headers went with them;
    `memos` the memos made and `memo_rows` the reports they were made for (id()). A write
    Google refuses is logged and leaves its rows to the pass's own write-back, which tries
    them again and says why if it fails too; a fault of ours in either is `fault`, which the
    pass raises (as it raises one in the memos it makes itself), not lost on a thread."""

    def __init__(
        self,
        sheets: SheetsClient,
        written: Sequence[Sequence[object]],
        first_row: int,
        layout: ColumnLayout,
        memos_of: Callable[[Sequence[RowReport]], list[Memo]] | None = None,
        allowed: Callable[[], None] | None = None,
    ) -> None:
        self.sheets, self.written, self.first_row, self.layout = sheets, written, first_row, layout
        self.memos_of, self.allowed = memos_of, allowed
        self.done: set[int] = set()
        self.cells = 0
        self.headers = False
        self.memos: list[Memo] = []
        self.memo_rows: set[int] = set()
        self.fault: BaseException | None = None
        self._final: list[RowReport] = []
        self._taking = True  # not started, and no more than EARLY_MOST final rows so far
        self._pool: ThreadPoolExecutor | None = None

    def add(self, report: RowReport) -> None:
        """A row's report is final (past EARLY_MOST of them, none is kept: no early write)."""
        if not self._taking:
            return
        if len(self._final) == EARLY_MOST:
            self._final, self._taking = [], False
            return
        self._final.append(report)

    def start(self, recorded: Callable[[], bool]) -> None:
        """Every request is built: write the cells of the rows final so far, once `recorded`
        says their answers are in the ledger (the sheet never says "sent" before the ledger
        does; False: the ledger could not record them, and the rows are left to the pass's
        end, which raises why), and make their memos."""
        rows, self._final, self._taking = self._final, [], False
        if len(rows) < EARLY_ROWS:  # (more than EARLY_MOST: none was kept)
            return
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="early-write")
        self._pool.submit(self._write, rows, recorded)
        if self.memos_of is not None:
            self._pool.submit(self._memos, rows)

    def wait(self) -> None:
        """Until the early write and memos are done (a fault of ours in them: `fault`)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _write(self, rows: Sequence[RowReport], recorded: Callable[[], bool]) -> None:
        try:
            self._write_rows(rows, recorded)
        except Exception as exc:  # a fault of ours: the pass's (`fault`)
            self.fault = self.fault or exc

    def _write_rows(self, rows: Sequence[RowReport], recorded: Callable[[], bool]) -> None:
        if not recorded():
            return
        try:
            if self.allowed is not None:
                self.allowed()  # the lock still held, the server not stopping
        except (LockLost, ServerStopping) as exc:  # the pass stops at its own check
            log.info("the early write-back of %d row(s) is left to the pass: %s", len(rows), exc)
            return
        cells = header_cells(self.layout) + changed_cells(
            rows, self.written, self.first_row, self.layout
        )
        try:
            count = self.sheets.write_cells(cells)
        except SheetsError as exc:
            log.warning(
                "writing the cells of %d row(s) while Meta answered the last requests failed "
                "(%s); the pass writes them at its end",
                len(rows),
                exc,
            )
            return
        self.cells, self.headers = count, bool(self.layout.new_headers)
        self.done = {id(r) for r in rows}

    def _memos(self, rows: Sequence[RowReport]) -> None:
        assert self.memos_of is not None
        try:
            self.memos = self.memos_of(rows)
        except Exception as exc:  # a fault of ours: the pass's (`fault`)
            self.fault = self.fault or exc
            return
        self.memo_rows = {id(r) for r in rows}


def without(rows: Iterable[RowReport], taken: Collection[int]) -> list[RowReport]:
    """The rows not in `taken` (id() of reports)."""
    return [r for r in rows if id(r) not in taken]
