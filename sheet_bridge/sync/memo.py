"""Row memos: what lets a full pass skip the rows that cannot have changed (docs/performance.md,
"Row memos").

A memo is kept per lead of a tab in the ledger: a digest of the lead's row as the sheet held it,
a fingerprint of everything else its decision depended on that the ledger does not hold, and
the row's report. It is stored only for a row whose decision was a fixed point: the pass
recorded nothing for it, wrote none of its cells, and its outcome cannot change with time
alone (already sent, or moved back). The ledger deletes a lead's memo whenever anything of that
lead is written (triggers on events, transitions and the edit queue, on both backends), so a
memo that exists is one nothing has touched since; the next full pass trusts it only if the row
reads the same, under the same fingerprint.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import sys
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast, overload

import sheet_bridge
from sheet_bridge.config import BRIDGE_COLUMNS, BridgeConfig
from sheet_bridge.sheets.table import SheetTable
from sheet_bridge.sync import outcomes as outcomes_module
from sheet_bridge.sync import plan as plan_module
from sheet_bridge.sync import rows as rows_module
from sheet_bridge.sync.ledger import RowMemo
from sheet_bridge.sync.outcomes import RowOutcome, RowReport
from sheet_bridge.sync.plan import LeadRow, Plan
from sheet_bridge.sync.rows import (
    ColumnLayout,
    is_lead_row,
    lead_rows,
    own_key,
    pixel_event_id,
)

# Bumped when what a memo holds, or how a report is worded, changes without a version bump:
# every memo of an older format is ignored (and replaced by the next full pass).
MEMO_FORMAT = 2
# The plan's outcomes (before one_identity_per_pixel) whose row is a fixed point when the pass
# records nothing for it and writes none of its cells: nothing is due, and nothing about them
# depends on the clock (settling, scans, windows and pixel deduplication are all about events
# still due).
FIXED_OUTCOMES = frozenset({"already_sent", "moved_back"})
# What every memo'd row's report says (outcomes.py): never a row the sidebar lists, so a pass
# counts the rows it left out under it without decoding their reports (PassRows).
REMEMBERED_OUTCOME: RowOutcome = "already_sent"
FIXED_REPORTS: frozenset[str] = frozenset({REMEMBERED_OUTCOME})


def rest_digest(row: Sequence[object], bridge: Collection[int]) -> str:
    """A digest of a row's cells as read but the bridge's (`bridge`: their columns), not its
    number: a row moved by a sort is the same lead with the same cells. repr tells 1, 1.0 and
    "1" apart, as the typing does; trailing empty cells are left out, as Google's read leaves
    them out (a row reads the same before and after its bridge cells are written)."""
    cells = [c for j, c in enumerate(row) if j not in bridge]
    while cells and (cells[-1] is None or cells[-1] == ""):
        cells.pop()
    return hashlib.blake2b(repr(cells).encode(), digest_size=16).hexdigest()


def bridge_cells_read(row: Sequence[object], columns: Sequence[int]) -> tuple[str, ...]:
    """A row's bridge cells (BRIDGE_COLUMNS order, `columns`: where they are) as the
    write-back compares them with what it would write: text, an empty cell as ""."""
    return tuple("" if j >= len(row) or row[j] is None else str(row[j]) for j in columns)


def row_digest(rest: str, cells: Sequence[str]) -> str:
    """A row's digest: its `rest_digest` and its bridge cells as text. A pass that writes a
    row's bridge cells knows the digest the row will read with next time."""
    text = rest + repr(tuple(cells))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _code_digest() -> str:
    """The planning and reporting code's own digest: a deployment that changes how a row is
    decided or worded invalidates every memo, version bump or not."""
    digest = hashlib.sha256()
    for module in (plan_module, outcomes_module, rows_module, sys.modules[__name__]):
        try:
            digest.update(Path(module.__file__ or "").read_bytes())
        except OSError:  # no source to read (a frozen build): the version stands for it
            digest.update(sheet_bridge.__version__.encode())
    return digest.hexdigest()[:16]


_CODE = _code_digest()


def fingerprint(config: BridgeConfig, table: SheetTable) -> str:
    """What a row's decision and report depend on besides its cells and its ledger records:
    the config's planning settings (not the [server] section, which may hold a ledger URL
    with a password, nor the file's path), the header (which column is which), the sheet's
    time zone and locale, and this sheet-bridge's version and planning code."""
    settings = config.model_dump(mode="json", exclude={"server", "source"})
    text = json.dumps(
        [
            MEMO_FORMAT,
            sheet_bridge.__version__,
            _CODE,
            settings,
            [str(h) for h in table.header],
            table.time_zone,
            table.locale,
        ],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# One encoder for every memo: json.dumps with options builds a new one per call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_report(report: RowReport, *, remembered: bool = False) -> str:
    """What a memo keeps of a report: all but the row number (the sheet's, next time) and the
    lead key (the memo's), and `logged` (a memo'd row logs nothing). `remembered`: the report
    the next pass gives a row whose events this one sent (REMEMBERED_OUTCOME, no strength;
    Remembered.to_store), without a copy of the report made for it."""
    return _encode(
        [
            report.status,
            REMEMBERED_OUTCOME if remembered else report.outcome,
            report.message,
            None if remembered else report.strength,
            report.cells,
            report.event_states,
        ]
    )


def decode_report(row: int, lead_key: str, stored: str) -> RowReport:
    return _report(row, lead_key, json.loads(stored))


def _report(
    row: int, lead_key: str, stored: list[Any], shared: dict[str, str] | None = None
) -> RowReport:
    status, outcome, message, strength, cells, events = stored
    # One string for the words many rows share (statuses, event names, states, sent-at
    # times), and the CAPI Status cell is the message: decoded, each row had its own copies
    # (~0.5 KB a row, ~50 MB over 95,000 rows left out).
    share = (shared if shared is not None else {}).setdefault
    return RowReport(
        row=row,
        lead_key=lead_key,
        status=share(status, status),
        outcome=cast(RowOutcome, share(outcome, outcome)),
        message=message,
        # as encoded: (name, id, state, int time)
        event_states=tuple((share(n, n), i, share(s, s), t) for n, i, s, t in events),
        strength=strength if strength is None else share(strength, strength),
        cells=tuple(
            message if c == message else share(c, c) if j == 3 else c for j, c in enumerate(cells)
        ),
    )


def same_cells(report: RowReport, read: Sequence[object]) -> bool:
    """Whether the write-back would write none of the row's bridge cells (as _write_back
    compares them)."""
    if len(read) < len(report.cells):
        read = (*read, *([""] * (len(report.cells) - len(read))))
    return all(
        str(old if old is not None else "") == new
        for old, new in zip(read, report.cells, strict=False)
    )


_PARSE_AT_ONCE = 2_000


@dataclass
class Remembered:
    """What a full pass took from its tab's memos: the rows it left out (their lead key → row
    number and cells as read), each lead row's digest, and every memo the ledger held (the
    ones not kept are deleted at the pass's end)."""

    fingerprint: str
    stored: set[str]  # every memo's lead key
    digests: dict[int, str]
    skipped: dict[str, tuple[int, list[object]]]
    # The table without its rows: what typing a left-out row again needs (zone, locale, header).
    shell: SheetTable
    kept: dict[str, str]  # the left-out rows' reports, as stored

    @property
    def leave_out(self) -> set[int]:
        return {number for number, _ in self.skipped.values()}

    def taken_back(
        self, leads: list[LeadRow], config: BridgeConfig, layout: ColumnLayout
    ) -> list[LeadRow]:
        """`leads` (typed, their keys restored) with the left-out rows whose key one of them
        took back typed again, in sheet order: two rows of one lead are planned together (the
        first sends, the other is its duplicate), as without memos."""
        taken = [self.skipped.pop(r.key) for r in leads if r.key in self.skipped]
        # Their cells are not needed any more: the table's rows go before planning.
        self.skipped = {key: (number, []) for key, (number, _) in self.skipped.items()}
        if not taken:
            return leads
        taken.sort(key=lambda t: t[0])
        rows = replace(
            self.shell, rows=[row for _, row in taken], row_numbers=[n for n, _ in taken]
        )
        return sorted([*leads, *lead_rows(rows, config, layout)], key=lambda r: r.row_number)

    def to_store(
        self, new: list[tuple[str, str, str, str]]
    ) -> tuple[list[tuple[str, str, str, str]], set[str]]:
        """Once the pass has every report: the memos to store (`new`, every memo the pass
        made: `memos_of`) and the memos to delete (every other one the ledger held but those of
        the rows left out, which stand as they are). Stored while the write-back writes the
        rows' cells: a row it could not write does not match its memo (sync/run.py)."""
        kept = {k for k, _, _, _ in new} | self.skipped.keys()
        return new, self.stored - kept

    def memos_of(
        self,
        rows: Iterable[RowReport],
        fixed: Collection[str],
        due: Mapping[str, int],
        written: Sequence[Sequence[object]],
        first_row: int,
        fingerprint_after: str | None = None,
    ) -> list[tuple[str, str, str, str]]:
        """The memos of these rows (their reports final). A memo is made for
        - a row planned at a fixed point (`fixed`) that logged nothing and whose cells the
          pass left as they were: its report, as it is;
        - a row whose every due event (`due`: lead key → events due when planned, before any
          was held for another row) this pass sent, with nothing expired, taken as a baseline
          or failed: the report the next pass gives it, which says the same in every cell
          (the sheet's words depend only on the records) and is "already sent" with no
          strength (outcomes.render_row), under the digest of the row as the write-back
          leaves it.
        `fingerprint_after`: the fingerprint once the write-back created the bridge's
        missing headers (the header is part of it)."""
        fp = fingerprint_after or self.fingerprint
        new: list[tuple[str, str, str, str]] = []
        for r in rows:
            rest = self.digests.get(r.row)
            if rest is None or r.lead_key in self.skipped:
                continue
            if (
                r.lead_key in fixed
                and r.outcome in FIXED_REPORTS
                and not r.logged
                and 0 <= r.row - first_row < len(written)
                and same_cells(r, written[r.row - first_row])
            ):
                encoded = encode_report(r)
            elif (
                r.outcome == "sent"
                and len(r.logged) == due.get(r.lead_key, -1)
                and all(state == "sent" for _, _, state, _ in r.logged)
                and all(state == "sent" for _, _, state, _ in r.event_states)
            ):
                encoded = encode_report(r, remembered=True)
            else:
                continue
            new.append((r.lead_key, row_digest(rest, r.cells), fp, encoded))
        return new


def decode_reports(
    skipped: Mapping[str, tuple[int, object]], kept: Mapping[str, str]
) -> list[RowReport]:
    """The reports of the rows left out (`skipped`: lead key → row number, …), from their
    memos as stored (`kept`: lead key → report), in sheet order."""
    left_out = sorted(skipped.items(), key=lambda item: item[1][0])
    out: list[RowReport] = []
    shared: dict[str, str] = {}  # one string per word the reports share (_report)
    # One parse per 2,000 reports: 100,000 json.loads calls cost twice as much, and one
    # parse of them all holds every parsed report at once beside the reports built.
    for start in range(0, len(left_out), _PARSE_AT_ONCE):
        part = left_out[start : start + _PARSE_AT_ONCE]
        stored = cast(list[list[Any]], json.loads("[" + ",".join(kept[k] for k, _ in part) + "]"))
        out += (
            _report(number, key, report, shared)
            for (key, (number, _)), report in zip(part, stored, strict=True)
        )
    return out


class PassRows(Sequence[RowReport]):
    """A full pass's row reports in sheet order: the rows it planned (`planned`), and the rows
    it left out for their memo, whose reports are decoded from the memos only once something
    reads them. The pass's counts, its summary (the add-on's answer, the ledger's record of
    the pass) and its metrics need only how many they are (`remembered`): a memo'd report is
    REMEMBERED_OUTCOME, which needs no attention, and it logs nothing. The CLI's table reads
    every row; the add-on never does (decoding 95,000 of them was ~1.3 s of a 100,000-lead
    pass with no change: bench/RESULTS.md)."""

    def __init__(self, planned: list[RowReport], remembered: Remembered) -> None:
        self.planned = planned
        self.remembered = len(remembered.skipped)
        # What decoding needs, not the whole Remembered (its digests of every row).
        self._skipped: dict[str, tuple[int, list[object]]] | None = remembered.skipped
        self._kept: dict[str, str] | None = remembered.kept
        self._all: list[RowReport] | None = None
        self._lock = threading.Lock()  # a web server's threads may read one pass's answer

    def _rows(self) -> list[RowReport]:
        with self._lock:
            if self._all is None:
                assert self._skipped is not None and self._kept is not None
                kept = decode_reports(self._skipped, self._kept)
                self._all = list(heapq.merge(self.planned, kept, key=lambda r: r.row))
                self._skipped = self._kept = None
            return self._all

    def __len__(self) -> int:
        return len(self.planned) + self.remembered

    @overload
    def __getitem__(self, index: int) -> RowReport: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[RowReport]: ...

    def __getitem__(self, index: int | slice) -> RowReport | Sequence[RowReport]:
        return self._rows()[index]

    def __iter__(self) -> Iterator[RowReport]:
        return iter(self._rows())


def remember(
    table: SheetTable,
    config: BridgeConfig,
    layout: ColumnLayout,
    stored: dict[str, RowMemo],
    busy_rows: Collection[int],
    busy_keys: Collection[str],
) -> Remembered:
    """Which rows of a whole tab a full pass may leave out: a lead row whose memo holds (same
    digest, same fingerprint) unless its key is on another row too (the plan decides which is
    the duplicate), its pixel event id is on another row too (the plan does not reuse a shared
    one), or it has an edit waiting (`busy_rows`: pending edits' rows; `busy_keys`: queued
    edits' leads). A memo that exists is one no ledger write touched (the triggers)."""
    fp = fingerprint(config, table)
    columns = [layout.bridge[name] for name in BRIDGE_COLUMNS]
    bridge = frozenset(columns)
    digests: dict[int, str] = {}
    # The rows whose memo holds, by key (a key on two rows is dropped below): no list of them
    # beside the table's rows and the memos (100,000 rows: ~10 MB less at the read's peak).
    skipped: dict[str, tuple[int, list[object]]] = {}
    their_pixels: dict[str, str] = {}
    keys: Counter[str] = Counter()
    pixels: Counter[str] = Counter()
    for number, row in zip(table.numbers(), table.rows, strict=True):
        if not is_lead_row(row, layout):
            continue
        pixel = pixel_event_id(row, layout)
        if pixel is not None:
            pixels[pixel] += 1
        # Every lead row's: a row without a CAPI Key yet gets one with its first sync.
        digests[number] = rest = rest_digest(row, bridge)
        key = own_key(row, layout)
        if not key:
            continue
        keys[key] += 1
        digest = row_digest(rest, bridge_cells_read(row, columns))
        memo = stored.get(key)
        if memo is not None and memo.digest == digest and memo.fingerprint == fp:
            skipped[key] = (number, row)
            if pixel is not None:
                their_pixels[key] = pixel
    for key in [
        key
        for key, (number, _) in skipped.items()
        if keys[key] > 1
        or (key in their_pixels and pixels[their_pixels[key]] > 1)
        or number in busy_rows
        or key in busy_keys
    ]:
        del skipped[key]
    shell = replace(table, rows=[], row_numbers=None)
    kept = {key: stored[key].report for key in skipped}
    return Remembered(fp, set(stored), digests, skipped, shell, kept)


def due_events(the_plan: Plan) -> dict[str, int]:
    """Each due lead's events as planned (before one_identity_per_pixel holds any back)."""
    return {d.lead_key: len(d.todo.fresh) for d in the_plan.decisions if d.todo is not None}


def fixed_points(the_plan: Plan, due: Collection[str]) -> set[str]:
    """The leads the plan decided at a fixed point (FIXED_OUTCOMES, nothing due, expired or
    taken as a baseline, no status observed), once each, with no queued edit taken."""
    observed = {o.lead_key for o in the_plan.observations}
    twice = {d.lead_key for d in the_plan.decisions if d.outcome == "duplicate"}
    return {
        d.lead_key
        for d in the_plan.decisions
        if d.outcome in FIXED_OUTCOMES
        and not (d.events or d.expired or d.baseline)
        and d.lead_key not in observed
        and d.lead_key not in twice
        and d.lead_key not in due
    }
