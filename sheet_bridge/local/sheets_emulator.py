"""A local Google Sheets v4 API on a JSON file: the paths, answers and errors the client meets."""

from __future__ import annotations

import calendar
import contextlib
import itertools
import json
import math
import os
import re
import tempfile
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.datastructures import MultiDict

from sheet_bridge.sheets.table import col_index, col_letter, locale_date_order, quote_tab

Cell = str | int | float | bool
Rows = list[list[Cell]]

DEFAULT_TIME_ZONE = "Etc/UTC"
# A new spreadsheet's locale when its data has none: Google's default (spreadsheets.get
# `properties.locale`); it decides how numbers typed as text are written (de_DE: 1.234,56).
DEFAULT_LOCALE = "en_US"

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# What Google says for the statuses a fault can inject, so clients meet the real wording.
_FAULT_MESSAGES = {
    403: "The caller does not have permission",
    429: (
        "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute "
        "per user' of service 'sheets.googleapis.com' for consumer 'project_number:0'."
    ),
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}


class ApiError(Exception):
    """An answer in Google's error envelope: {"error": {"code", "message", "status"}}."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        status = _STATUS.get(self.code, "UNKNOWN")
        return {"error": {"code": self.code, "message": self.message, "status": status}}


# ---------------------------------------------------------------------------------------------
# A1 ranges


@dataclass(frozen=True)
class GridRange:
    """A parsed A1 range: 0-based, start inclusive, end exclusive; None = to the sheet's end."""

    tab: str
    r0: int
    c0: int
    r1: int | None
    c1: int | None
    single: bool = False  # written as one cell (B3): a write anchored there may spill over


_ENDPOINT = re.compile(r"([A-Za-z]{1,3})?([1-9][0-9]*)?")


def parse_range(text: str, tabs: list[str]) -> GridRange:
    """Read A1 notation as Sheets does: `Leads`, `'Bob''s Leads'!A2:F`, `A:C`, `2:5`, `B3`."""
    bad = ApiError(400, f"Unable to parse range: {text}")
    s = text.strip()
    ref: str | None
    if s.startswith("'"):
        name, i = [], 1
        while True:
            j = s.find("'", i)
            if j == -1:
                raise bad
            name.append(s[i:j])
            if s[j + 1 : j + 2] == "'":  # '' inside quotes is one '
                name.append("'")
                i = j + 2
                continue
            rest = s[j + 1 :]
            break
        tab = "".join(name)
        if rest == "":
            ref = None
        elif rest.startswith("!") and len(rest) > 1:
            ref = rest[1:]
        else:
            raise bad
    elif "!" in s:
        tab, ref = s.rsplit("!", 1)
    elif s in tabs:
        tab, ref = s, None
    elif tabs:
        # A bare reference such as A1:B2 means the first sheet.
        tab, ref = tabs[0], s
    else:
        raise bad
    if tab not in tabs:
        raise bad
    if ref is None:
        return GridRange(tab, 0, 0, None, None)
    parts = ref.split(":")
    if len(parts) > 2 or not all(parts):
        raise bad
    ends = []
    for part in parts:
        m = _ENDPOINT.fullmatch(part)
        if not m or not part:
            raise bad
        col = col_index(m.group(1)) if m.group(1) else None
        row = int(m.group(2)) if m.group(2) else None
        ends.append((col, row))
    (cs, rs), (ce, re_) = ends[0], ends[-1]
    if len(parts) == 1 and (cs is None or rs is None):
        raise bad  # a single endpoint must be a cell such as B3
    if cs is None and (ce is not None or re_ is None):
        raise bad  # 2:F or 2: makes no sense; rows pair with rows (2:5)
    if rs is None and ce is None:
        raise bad  # A:5
    if cs is not None and rs is None and re_ is not None and ce is None:
        raise bad
    if cs is not None and ce is not None and ce < cs:
        cs, ce = ce, cs
    if rs is not None and re_ is not None and re_ < rs:
        rs, re_ = re_, rs
    return GridRange(
        tab,
        (rs - 1) if rs is not None else 0,
        cs if cs is not None else 0,
        re_ if re_ is not None else None,
        (ce + 1) if ce is not None else None,
        single=len(parts) == 1,
    )


def format_range(tab: str, r0: int, c0: int, r1: int, c1: int) -> str:
    """A1 text for 0-based rows/cols with exclusive ends, quoted as Google quotes tab names."""
    start = f"{col_letter(c0)}{r0 + 1}"
    end = f"{col_letter(max(c1, c0 + 1) - 1)}{max(r1, r0 + 1)}"
    return f"{quote_tab(tab)}!{start}" + (f":{end}" if end != start else "")


# ---------------------------------------------------------------------------------------------
# Cell values


def _empty(v: object) -> bool:
    return v is None or v == ""  # only "" equals "": 0 and False are values


def _trim(row: list[Any]) -> list[Any]:
    # The API drops trailing empty cells: rows come back ragged (ValueRange, "empty trailing rows
    # and columns will not be included",
    # developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values#ValueRange).
    end = len(row)
    while end and _empty(row[end - 1]):
        end -= 1
    return row if end == len(row) else row[:end]


def _width(rows: Rows, r0: int, r1: int, c0: int, c1: int | None) -> int:
    """The widest of rows r0..r1 (end exclusive) within columns c0..c1. Rows are kept trimmed,
    so across all columns a row's length is its width: no copy of each row (a 100,000-line
    CAPI Log is measured on every append)."""
    block = itertools.islice(rows, r0, r1)
    if c0 == 0 and c1 is None:
        return max(map(len, block), default=0)
    return max((len(_trim(r[c0:c1])) for r in block), default=0)


def _trim_rows(rows: list[list[Any]]) -> None:
    while rows and not rows[-1]:
        rows.pop()


def format_number(v: int | float) -> str:
    """A number as a General-format cell shows it: 15 significant digits, then 1.23457E+15."""
    if isinstance(v, float) and not math.isfinite(v):
        return "#NUM!"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if abs(v) >= 1e15 or abs(v) < 1e-9:
        mantissa, exp = f"{v:.5E}".split("E")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}E{exp[0]}{exp[1:].lstrip('0').zfill(2)}"
    return f"{v:.15g}"


def formatted(v: Cell, number_format: NumberFormat | None = None) -> str:
    """FORMATTED_VALUE: a cell as the text Sheets displays. A number in a cell with a date or
    time format shows as that date (46300.6375 as 2026-10-04 15:18:00); other number formats
    are not emulated and show as General."""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int | float):
        if number_format is not None and number_format.get("type") in DATE_TYPES:
            shown = format_serial(v, str(number_format.get("pattern") or ""), number_format)
            if shown is not None:
                return shown
        return format_number(v)
    return v


# ---------------------------------------------------------------------------------------------
# Number formats (https://developers.google.com/sheets/api/guides/formats): a cell's
# `userEnteredFormat.numberFormat` is {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"}.
# The emulator keeps it per cell; only the date and time types change what a cell shows.

NumberFormat = dict[str, str]
DATE_TYPES = frozenset({"DATE", "TIME", "DATE_TIME"})
TEXT_FORMAT: NumberFormat = {"type": "TEXT", "pattern": "@"}
# What a type shows when its format has no pattern (Sheets' en_US defaults).
_DEFAULT_PATTERNS = {"DATE": "M/d/yyyy", "TIME": "h:mm:ss am/pm", "DATE_TIME": "M/d/yyyy H:mm:ss"}
# The formats Sheets gives a cell a date was typed into, by the form it was typed in: an ISO
# date keeps its order, a slashed one the locale's.
ISO_DATE: NumberFormat = {"type": "DATE", "pattern": "yyyy-mm-dd"}
ISO_DATE_TIME: NumberFormat = {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"}
_SERIAL_EPOCH = datetime(1899, 12, 30)
_MONTHS = [calendar.month_name[i] for i in range(1, 13)]
_DAYS = list(calendar.day_name)
# Sheets' date-time pattern tokens (Google's "Date and time format patterns" table); `m`/`mm`
# are minutes right after an hour or right before seconds, else the month.
_DATE_TOKEN = re.compile(
    r'"[^"]*"|\\.|am/pm|a/p|y{1,4}|m{1,5}|d{1,4}|h{1,2}|s{1,2}|\.0+|.', re.IGNORECASE
)


def format_serial(serial: float, pattern: str, number_format: NumberFormat) -> str | None:
    """A date serial (days since 1899-12-30, the fraction the time of day) as `pattern` shows
    it; None for a number no date can be (Sheets then shows the number)."""
    if not 0 <= serial < 2_958_466:  # 9999-12-31 is the last day Sheets has
        return None
    pattern = pattern or _DEFAULT_PATTERNS.get(number_format.get("type", ""), "")
    at = _SERIAL_EPOCH + timedelta(seconds=round(serial * 86_400))
    tokens = _DATE_TOKEN.findall(pattern)
    twelve = any(t.lower() in ("am/pm", "a/p") for t in tokens)
    out = []
    for i, tok in enumerate(tokens):
        low = tok.lower()
        if low.startswith("m") and len(low) <= 2 and _is_minutes(tokens, i):
            out.append(f"{at.minute:0{len(low)}d}")
        elif low.startswith("m"):
            name = _MONTHS[at.month - 1]
            months = {1: str(at.month), 2: f"{at.month:02d}", 3: name[:3], 4: name}
            out.append(months.get(len(low), name[0]))
        elif low.startswith("y"):
            out.append(f"{at.year % 100:02d}" if len(low) <= 2 else f"{at.year:04d}")
        elif low.startswith("d"):
            days = {1: str(at.day), 2: f"{at.day:02d}", 3: _DAYS[at.weekday()][:3]}
            out.append(days.get(len(low), _DAYS[at.weekday()]))
        elif low.startswith("h"):
            hour = (at.hour % 12 or 12) if twelve else at.hour
            out.append(f"{hour:0{len(low)}d}")
        elif low.startswith("s"):
            out.append(f"{at.second:0{len(low)}d}")
        elif low in ("am/pm", "a/p"):
            mark = "AM" if at.hour < 12 else "PM"
            out.append(mark if low == "am/pm" else mark[0])
        elif tok.startswith('"'):
            out.append(tok[1:-1])
        elif tok.startswith("\\"):
            out.append(tok[1:])
        elif tok.startswith("."):
            out.append("." + "0" * (len(tok) - 1))
        else:
            out.append(tok)
    return "".join(out)


def _is_minutes(tokens: list[str], i: int) -> bool:
    """Whether the `m`/`mm` at tokens[i] is minutes: the nearest date part before it is an
    hour, or the nearest after it is seconds."""
    parts = [(j, t.lower()[0]) for j, t in enumerate(tokens) if t[0].lower() in "ymdhs"]
    before = [c for j, c in parts if j < i]
    after = [c for j, c in parts if j > i]
    return (bool(before) and before[-1] == "h") or (bool(after) and after[0] == "s")


_TYPED_ISO = re.compile(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*")
_TYPED_LOCAL = re.compile(
    r"\s*(\d{1,2})([/.])(\d{1,2})\2(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::(\d{2}))?)?\s*"
)


def typed_date(text: str, locale: str = DEFAULT_LOCALE) -> tuple[float, NumberFormat] | None:
    """What typing `text` into a cell stores when it is a date, as Sheets reads it: the date
    serial and the number format the cell gets (DATE, or DATE_TIME with a time of day).
    ISO dates ("2026-10-04", "2026-10-04 15:17[:00]") everywhere; "4/10/2026" and "4.10.2026"
    in the locale's order. An impossible date ("2026-02-30") or an ISO stamp with "T" and an
    offset is not a date: it stays text, as in Sheets."""
    m = _TYPED_ISO.fullmatch(text)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        clock = m.group(4, 5, 6)
        fmt = ISO_DATE_TIME if clock[0] else ISO_DATE
    else:
        m = _TYPED_LOCAL.fullmatch(text)
        if not m:
            return None
        first, sep, second, y = int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))
        month_first = sep == "/" and locale_date_order(locale) == "month_first"
        mo, d = (first, second) if month_first else (second, first)
        clock = m.group(5, 6, 7)
        day = "m/d/yyyy" if month_first else f"d{sep}m{sep}yyyy"
        if clock[0]:
            fmt = {"type": "DATE_TIME", "pattern": day + " h:mm:ss"}
        else:
            fmt = {"type": "DATE", "pattern": day}
    try:
        at = datetime(y, mo, d, int(clock[0] or 0), int(clock[1] or 0), int(clock[2] or 0))
    except ValueError:
        return None
    return (at - _SERIAL_EPOCH) / timedelta(days=1), dict(fmt)


def _cell_key(r: int, c: int) -> str:
    """A cell's key in the data file's "formats": its A1 name (0-based r, c → "F2")."""
    return f"{col_letter(c)}{r + 1}"


_CELL_KEY = re.compile(r"([A-Z]{1,3})([1-9][0-9]*)")


def _key_cell(key: str) -> tuple[int, int]:
    m = _CELL_KEY.fullmatch(key)
    if not m:
        raise ValueError(f"not a cell name: {key!r}")
    return int(m.group(2)) - 1, col_index(m.group(1))


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def sheets_number(value: float) -> int | float:
    """A number as Sheets stores it: a double kept to 15 significant digits, so a 16-digit id
    written as a number loses digits (1234567890123456789 → 1.23456789012346E+18)."""
    if not math.isfinite(value):
        raise ApiError(400, "Invalid value: numbers must be finite")
    stored = float(f"{value:.15g}")
    return int(stored) if stored.is_integer() and abs(stored) < 1e15 else stored


def raw(v: Cell) -> Cell:
    """RAW: the value as given; only numbers change, to what a double cell can hold."""
    if isinstance(v, bool | str):
        return v
    return sheets_number(v)


def user_entered(
    v: Cell, locale: str = DEFAULT_LOCALE, number_format: NumberFormat | None = None
) -> tuple[Cell, NumberFormat | None]:
    """USER_ENTERED: what typing `v` into a cell stores, and the number format a typed date
    gives the cell (None: the cell keeps its own). As in Sheets, a cell formatted as plain text
    keeps what is typed as text, and only a cell without a format takes the typed date's form
    (a date typed into a date cell shows in the cell's format)."""
    if not isinstance(v, str):
        return raw(v), None
    if v.startswith("'"):
        return v[1:], None  # a leading apostrophe forces text and is not part of the value
    if number_format is not None and number_format.get("type") == "TEXT":
        return v, None
    s = v.strip()
    if s.upper() in ("TRUE", "FALSE"):
        return s.upper() == "TRUE", None
    if _NUMBER.fullmatch(s):
        return sheets_number(float(s)), None
    date = typed_date(s, locale)
    if date is not None:
        return sheets_number(date[0]), (date[1] if number_format is None else None)
    # Real Sheets would also evaluate "=..." formulas; the emulator does not, so such text is
    # stored as the text it is (as RAW stores it).
    return v, None


_CELL_TYPES = (str, int, float, bool)


def _check_cell(v: object, where: str) -> None:
    if v is not None and not isinstance(v, _CELL_TYPES):
        raise ApiError(400, f"Invalid value at '{where}': cells hold strings, numbers or booleans")


# ---------------------------------------------------------------------------------------------
# Partial responses (the `fields` parameter)


def _parse_fields(mask: str) -> dict[str, Any]:
    """`properties(title,timeZone),sheets.properties` → {"properties": {...}, "sheets": {...}}."""
    pos = 0

    def parse_list() -> dict[str, Any]:
        nonlocal pos
        tree: dict[str, Any] = {}
        while pos < len(mask):
            m = re.compile(r"[A-Za-z0-9_./*]+").match(mask, pos)
            if not m:
                raise ApiError(400, f"Invalid field selection {mask}")
            pos = m.end()
            node = tree
            names = re.split(r"[./]", m.group(0))
            for name in names[:-1]:
                node = node.setdefault(name, {})
                if node is None:
                    break
            leaf: dict[str, Any] | None = None
            if pos < len(mask) and mask[pos] == "(":
                pos += 1
                leaf = parse_list()
                if pos >= len(mask) or mask[pos] != ")":
                    raise ApiError(400, f"Invalid field selection {mask}")
                pos += 1
            if node is not None:
                node[names[-1]] = leaf
            if pos < len(mask) and mask[pos] == ",":
                pos += 1
            elif pos < len(mask) and mask[pos] == ")":
                return tree
        return tree

    return parse_list()


def _select(obj: Any, tree: dict[str, Any] | None) -> Any:
    if tree is None or "*" in tree:
        return obj
    if isinstance(obj, list):
        return [_select(item, tree) for item in obj]
    if isinstance(obj, dict):
        return {k: _select(obj[k], sub) for k, sub in tree.items() if k in obj}
    return obj


# ---------------------------------------------------------------------------------------------
# The emulator


_FAULT_SPEC = (
    'send {"status": 429|500|403, "count": N}, and to fail only some calls "method" (say '
    '"values.get") and "params" (query parameters they carry, say {"valueRenderOption": '
    '"UNFORMATTED_VALUE"})'
)


@dataclass(frozen=True)
class Fault:
    """An injected error: `status` for the next call of `method` (None: any) that carries
    every query parameter in `params`."""

    status: int
    method: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    def hits(self, method: str, args: Mapping[str, str]) -> bool:
        return self.method in (None, method) and all(
            args.get(k) == v for k, v in self.params.items()
        )


class SheetsEmulator:
    """The spreadsheets, the file they live in, call counts and injected faults."""

    def __init__(self, data_path: str | Path | None = None, data: dict[str, Any] | None = None):
        self.path = Path(data_path) if data_path is not None else None
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        # The latest requests, oldest first: {"method", "ranges"} (ranges as the caller wrote
        # them), so a test can say which ranges a pass read and wrote, not only how often.
        self.requests: deque[dict[str, Any]] = deque(maxlen=1000)
        self.changes = 0  # calls that changed data so far: what `grid_size` keeps until
        self._grids: dict[int, tuple[int, Rows, tuple[int, int]]] = {}
        # Injected faults, answered in turn, each for any call or only for the calls it names
        # (a method, and query parameters the call must carry): a test fails the call it
        # means even while other clients (a page refreshing its grid) use the emulator too.
        self.faults: deque[Fault] = deque()
        if data is not None:
            # A JSON round trip is a fast deep copy and proves the data is what the file holds.
            raw = json.loads(json.dumps(data))
        elif self.path is not None and self.path.exists():
            with self.path.open(encoding="utf-8") as f:
                raw = json.load(f)
        else:
            raw = {"spreadsheets": {}}
        self.data = _normalise(raw, str(self.path or "data"))

    # -- persistence ----------------------------------------------------------------------

    def save(self) -> None:
        """Write the data file atomically: a temp file in the same folder, then os.replace."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                # No indent: a 100,000-row tab is rewritten after every change.
                json.dump(self.data, f, ensure_ascii=False, separators=(",", ":"))
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- lookups --------------------------------------------------------------------------

    def spreadsheet(self, sid: str) -> dict[str, Any]:
        book = self.data["spreadsheets"].get(sid)
        if book is None:
            raise ApiError(404, "Requested entity was not found.")
        return book  # type: ignore[no-any-return]

    def resolve(self, sid: str, text: str) -> tuple[Rows, GridRange]:
        sheets = self.spreadsheet(sid)["sheets"]
        rng = parse_range(text, list(sheets))
        return sheets[rng.tab], rng

    def grid_size(self, rows: Rows) -> tuple[int, int]:
        """`_grid_size` of a tab, kept until the next change: measuring the widest of 100,000
        rows takes ~10 ms, and a batchGet asks once per range."""
        cached = self._grids.get(id(rows))
        if cached is not None and cached[0] == self.changes and cached[1] is rows:
            return cached[2]
        size = _grid_size(rows)
        self._grids[id(rows)] = (self.changes, rows, size)
        return size

    # -- reads ----------------------------------------------------------------------------

    def formats(self, sid: str, tab: str) -> dict[str, NumberFormat]:
        """The number formats of a tab's cells, by A1 cell name (the data file's "formats")."""
        book = self.spreadsheet(sid)
        return book.setdefault("formats", {}).setdefault(tab, {})  # type: ignore[no-any-return]

    def value_range(
        self, sid: str, text: str, render: str, major: str, date_render: str = "SERIAL_NUMBER"
    ) -> dict[str, Any]:
        """A values.get answer (and one of a values.batchGet's `valueRanges`).

        Google: the answer's `range` "indicates the entire requested range, even though the
        values will exclude trailing rows and columns", so an open end reaches the grid's edge
        (`Leads` → `Leads!A1:Z1000`), while `values` keeps leading empty rows ([]) and drops
        trailing ones. A range past the grid is refused ("exceeds grid limits").
        """
        rows, rng = self.resolve(sid, text)
        grid_rows, grid_cols = self.grid_size(rows)
        if (
            rng.r0 >= grid_rows
            or (rng.r1 is not None and rng.r1 > grid_rows)
            or rng.c0 >= grid_cols
            or (rng.c1 is not None and rng.c1 > grid_cols)
        ):
            ref = text.rsplit("!", 1)[1] if "!" in text else text
            raise ApiError(
                400,
                f"Range ('{rng.tab}'!{ref}) exceeds grid limits. Max rows: {grid_rows}, "
                f"max columns: {grid_cols}",
            )
        stop = len(rows) if rng.r1 is None else min(rng.r1, len(rows))
        block = rows[rng.r0 : stop]
        if rng.c0 or rng.c1 is not None:
            block = [_trim(r[rng.c0 : rng.c1]) for r in block]
        while block and not block[-1]:
            block.pop()
        r1 = rng.r1 if rng.r1 is not None else grid_rows
        c1 = rng.c1 if rng.c1 is not None else grid_cols
        answer: dict[str, Any] = {
            "range": format_range(rng.tab, rng.r0, rng.c0, r1, c1),
            "majorDimension": major,
        }
        dated = self._date_cells(sid, rng.tab, rng.r0, rng.c0, len(block))
        if render == "FORMATTED_VALUE":
            block = [
                [formatted(v, dated.get((rng.r0 + i, rng.c0 + j))) for j, v in enumerate(r)]
                for i, r in enumerate(block)
            ]
        elif date_render == "FORMATTED_STRING" and dated:
            # Google: dates, times and date-times "output as strings in their given number
            # format"; other numbers stay numbers (ignored with FORMATTED_VALUE).
            block = [list(r) for r in block]
            for (r, c), fmt in dated.items():
                i, j = r - rng.r0, c - rng.c0
                if j < len(block[i]) and isinstance(block[i][j], int | float):
                    block[i][j] = formatted(block[i][j], fmt)
        if major == "COLUMNS" and block:
            cols = max(map(len, block))
            block = [_trim([r[j] if j < len(r) else "" for r in block]) for j in range(cols)]
        if block:  # an empty range has no "values" key at all, as in Google's
            answer["values"] = block
        return answer

    def _date_cells(
        self, sid: str, tab: str, r0: int, c0: int, height: int
    ) -> dict[tuple[int, int], NumberFormat]:
        """The cells with a date or time format from row r0 (height rows) and column c0 on."""
        found = {}
        for key, fmt in self.formats(sid, tab).items():
            if fmt.get("type") in DATE_TYPES:
                r, c = _key_cell(key)
                if r0 <= r < r0 + height and c >= c0:
                    found[(r, c)] = fmt
        return found

    # -- writes ---------------------------------------------------------------------------

    def write(
        self, sid: str, text: str, values: Any, input_option: str, major: str = "ROWS"
    ) -> dict[str, Any]:
        rows, rng = self.resolve(sid, text)
        grid = self._grid(values, major)
        if rng.single:
            # Sheets takes a lone cell as the top-left corner of whatever is written.
            rng = GridRange(rng.tab, rng.r0, rng.c0, None, None)
        return self._put(sid, rows, rng.tab, rng, rng.r0, grid, input_option)

    def _grid(self, values: Any, major: str) -> list[list[Any]]:
        if values is None:
            return []
        if not isinstance(values, list) or not all(isinstance(r, list) for r in values):
            raise ApiError(400, "Invalid values: expected a list of rows (lists of cells)")
        for i, r in enumerate(values):
            for j, v in enumerate(r):
                if v is not None and not isinstance(v, _CELL_TYPES):  # where: named on failure
                    _check_cell(v, f"data.values[{i}][{j}]")
        if major == "COLUMNS" and values:
            height = max(map(len, values))
            return [[c[i] if i < len(c) else None for c in values] for i in range(height)]
        return values

    def _put(
        self,
        sid: str,
        rows: Rows,
        tab: str,
        rng: GridRange,
        top: int,
        grid: list[list[Any]],
        input_option: str,
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {"spreadsheetId": sid}
        if not grid:
            return answer
        width = max(map(len, grid))
        if rng.r1 is not None and top + len(grid) > rng.r1:
            within = format_range(tab, rng.r0, rng.c0, rng.r1, rng.c1 or rng.c0 + 1)
            raise ApiError(
                400,
                f"Requested writing within range [{within}], but tried writing to row "
                f"[{top + len(grid)}]",
            )
        if rng.c1 is not None and rng.c0 + width > rng.c1:
            within = format_range(tab, rng.r0, rng.c0, rng.r1 or rng.r0 + 1, rng.c1)
            raise ApiError(
                400,
                f"Requested writing within range [{within}], but tried writing to column "
                f"[{col_letter(rng.c0 + width - 1)}]",
            )
        formats = self.formats(sid, tab)
        locale = str(self.spreadsheet(sid).get("locale") or DEFAULT_LOCALE)
        cells, touched_rows, touched_cols = 0, 0, set[int]()
        while len(rows) < top + len(grid):
            rows.append([])
        for i, values in enumerate(grid):
            row = rows[top + i]
            if input_option != "USER_ENTERED" and None not in values:
                # RAW cells, none left as they are: what the loop below does, a row at a time
                # (a 100,000-lead first pass writes ~500,000 cells and appends ~190,000 rows).
                end = rng.c0 + len(values)
                if len(row) < end:
                    row.extend([""] * (end - len(row)))
                row[rng.c0 : end] = [v if type(v) is str else raw(v) for v in values]
                if values:
                    cells += len(values)
                    touched_rows += 1
                    touched_cols.update(range(rng.c0, end))
                rows[top + i] = _trim(row)
                continue
            wrote = False
            for j, v in enumerate(values):
                if v is None:  # null in a write means "leave this cell as it is"
                    continue
                c = rng.c0 + j
                if len(row) <= c:
                    row.extend([""] * (c + 1 - len(row)))
                if input_option == "USER_ENTERED":
                    key = _cell_key(top + i, c)
                    row[c], typed_format = user_entered(v, locale, formats.get(key))
                    if typed_format is not None:
                        formats[key] = typed_format
                else:
                    row[c] = raw(v)  # RAW: typed-looking dates stay text; formats stay put
                cells += 1
                wrote = True
                touched_cols.add(c)
            if wrote:
                touched_rows += 1
            rows[top + i] = _trim(row)
        _trim_rows(rows)
        answer["updatedRange"] = format_range(tab, top, rng.c0, top + len(grid), rng.c0 + width)
        if cells:
            answer |= {
                "updatedRows": touched_rows,
                "updatedColumns": len(touched_cols),
                "updatedCells": cells,
            }
        return answer

    def append(
        self, sid: str, text: str, values: Any, input_option: str, insert: str, major: str
    ) -> dict[str, Any]:
        rows, rng = self.resolve(sid, text)
        grid = self._grid(values, major)
        # Google: "The input range is used to search for existing data and find a table within
        # that range. Values will be appended to the next row of the table". The table is the
        # block of rows with data in the range's columns; a range that ends inside a table
        # (`Tab!A1`, `Tab!A1:E1`) finds the whole table, which goes on down through the rows
        # that follow without a gap. New rows go below its last non-empty row.
        last = -1
        stop = len(rows) if rng.r1 is None else min(rng.r1, len(rows))
        found_from_range = stop > rng.r0 and bool(_trim(rows[stop - 1][rng.c0 : rng.c1]))
        if found_from_range:
            while stop < len(rows) and _trim(rows[stop][rng.c0 : rng.c1]):
                stop += 1
        for i in range(stop - 1, rng.r0 - 1, -1):
            if _trim(rows[i][rng.c0 : rng.c1]):
                last = i
                break
        top = max(last + 1, rng.r0)
        answer: dict[str, Any] = {"spreadsheetId": sid}
        if last >= 0:
            # A table found from a cell or a row is as wide as its rows (A1 → A1:E2).
            end = None if found_from_range and rng.r1 is not None else rng.c1
            width = _width(rows, rng.r0, last + 1, rng.c0, end)
            answer["tableRange"] = format_range(rng.tab, rng.r0, rng.c0, last + 1, rng.c0 + width)
        if insert == "INSERT_ROWS" and top < len(rows):
            rows[top:top] = [[] for _ in grid]
            self._move_formats(sid, rng.tab, lambda r: r + len(grid) if r >= top else r)
        open_range = GridRange(rng.tab, top, rng.c0, None, None)
        answer["updates"] = self._put(sid, rows, rng.tab, open_range, top, grid, input_option)
        return answer

    def clear(self, sid: str, text: str) -> dict[str, Any]:
        rows, rng = self.resolve(sid, text)
        stop = len(rows) if rng.r1 is None else min(rng.r1, len(rows))
        for i in range(rng.r0, stop):
            row = rows[i]
            end = len(row) if rng.c1 is None else min(rng.c1, len(row))
            for c in range(rng.c0, end):
                row[c] = ""
            rows[i] = _trim(row)
        _trim_rows(rows)
        width = max(map(len, rows), default=0)
        r1 = rng.r1 if rng.r1 is not None else max(len(rows), rng.r0 + 1)
        c1 = rng.c1 if rng.c1 is not None else max(width, rng.c0 + 1)
        return {"spreadsheetId": sid, "clearedRange": format_range(rng.tab, rng.r0, rng.c0, r1, c1)}

    # -- spreadsheet level ----------------------------------------------------------------

    def describe(self, sid: str) -> dict[str, Any]:
        book = self.spreadsheet(sid)
        return {
            "spreadsheetId": sid,
            "properties": {
                "title": book["title"],
                "locale": str(book.get("locale") or DEFAULT_LOCALE),
                "autoRecalc": "ON_CHANGE",
                "timeZone": book["timeZone"],
            },
            "sheets": [
                {"properties": self._sheet_properties(i, tab, rows)}
                for i, (tab, rows) in enumerate(book["sheets"].items())
            ],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{sid}/edit",
        }

    @staticmethod
    def _sheet_properties(i: int, tab: str, rows: Rows) -> dict[str, Any]:
        # sheetId: the first tab is 0 as in Google; later ones keep their position (tabs are
        # only ever added here, so ids stay stable).
        row_count, column_count = _grid_size(rows)
        return {
            "sheetId": i,
            "title": tab,
            "index": i,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": row_count, "columnCount": column_count},
        }

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """spreadsheets.create: a new spreadsheet with the tabs asked for (default Sheet1)."""
        props = body.get("properties") or {}
        sid = str(body.get("spreadsheetId") or "")  # a test may pick the id; Google never does
        while not sid or sid in self.data["spreadsheets"]:
            sid = "emu-" + uuid.uuid4().hex[:20]
        tabs = [
            str((s.get("properties") or {}).get("title") or "") for s in body.get("sheets") or []
        ]
        tabs = [t or f"Sheet{i + 1}" for i, t in enumerate(tabs)] or ["Sheet1"]
        self.data["spreadsheets"][sid] = {
            "title": str(props.get("title") or "Untitled spreadsheet"),
            "timeZone": str(props.get("timeZone") or DEFAULT_TIME_ZONE),
            "sheets": {t: [] for t in tabs},
        }
        if props.get("locale"):
            self.data["spreadsheets"][sid]["locale"] = str(props["locale"])
        return self.describe(sid)

    def _move_formats(
        self, sid: str, tab: str, where: Callable[[int], int], cols: range | None = None
    ) -> None:
        """Rows moved (inserted above, sorted): each cell's format goes with its row (only the
        cells of `cols`, when given)."""
        formats = self.formats(sid, tab)
        moved = {}
        for key, fmt in formats.items():
            r, c = _key_cell(key)
            moved[_cell_key(where(r) if cols is None or c in cols else r, c)] = fmt
        formats.clear()
        formats.update(moved)

    def _grid_range(self, sid: str, where: str, grid: Any) -> tuple[str, int, int, int, int]:
        """A batchUpdate GridRange ({sheetId, startRowIndex, endRowIndex, startColumnIndex,
        endColumnIndex}; a missing end is the sheet's end) as (tab, r0, r1, c0, c1)."""
        if not isinstance(grid, dict):
            raise ApiError(400, f"Invalid {where}: a GridRange is required")
        tabs = list(self.spreadsheet(sid)["sheets"])
        sheet_id = grid.get("sheetId", 0)
        if not isinstance(sheet_id, int) or not 0 <= sheet_id < len(tabs):
            raise ApiError(400, f"Invalid {where}: No grid with id: {sheet_id}")
        tab = tabs[sheet_id]
        rows, cols = self.grid_size(self.spreadsheet(sid)["sheets"][tab])
        bounds = []
        for name, default in (
            ("startRowIndex", 0), ("endRowIndex", rows),
            ("startColumnIndex", 0), ("endColumnIndex", cols),
        ):  # fmt: skip
            value = grid.get(name, default)
            if not isinstance(value, int) or value < 0:
                raise ApiError(400, f"Invalid {where}.{name}: {value!r}")
            bounds.append(value)
        r0, r1, c0, c1 = bounds
        return tab, r0, max(r1, r0), c0, max(c1, c0)

    def _repeat_cell(self, sid: str, n: int, req: dict[str, Any]) -> None:
        """repeatCell with fields "userEnteredFormat.numberFormat": set (or, with no format,
        clear) the number format of every cell of the range. Values stay as they are."""
        where = f"requests[{n}].repeatCell"
        if req.get("fields") != "userEnteredFormat.numberFormat":
            raise ApiError(400, f"Invalid {where}: only fields userEnteredFormat.numberFormat "
                           "is emulated")  # fmt: skip
        fmt = ((req.get("cell") or {}).get("userEnteredFormat") or {}).get("numberFormat")
        if fmt is not None and (not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str)):
            raise ApiError(400, f"Invalid {where}.cell.userEnteredFormat.numberFormat")
        tab, r0, r1, c0, c1 = self._grid_range(sid, f"{where}.range", req.get("range"))
        formats = self.formats(sid, tab)
        for r in range(r0, r1):
            for c in range(c0, c1):
                if fmt is None:
                    formats.pop(_cell_key(r, c), None)
                else:
                    formats[_cell_key(r, c)] = {k: str(v) for k, v in fmt.items()}

    def _sort_range(self, sid: str, n: int, req: dict[str, Any]) -> None:
        """sortRange: the rows of the range in the order of the sort specs; the cells' formats
        move with their rows. Sheets' order: numbers (dates are numbers), then text
        (ignoring case), then booleans; empty cells last in either direction."""
        where = f"requests[{n}].sortRange"
        tab, r0, r1, c0, c1 = self._grid_range(sid, f"{where}.range", req.get("range"))
        specs = req.get("sortSpecs") or []
        rows = self.spreadsheet(sid)["sheets"][tab]
        r1 = min(r1, len(rows))
        order = list(range(r0, r1))  # the source row of each sorted position

        def cell(r: int, c: int) -> Cell:
            return rows[r][c] if c < len(rows[r]) else ""

        for k, spec in reversed(list(enumerate(specs))):
            col = spec.get("dimensionIndex") if isinstance(spec, dict) else None
            how = spec.get("sortOrder", "ASCENDING") if isinstance(spec, dict) else None
            if not isinstance(col, int) or how not in ("ASCENDING", "DESCENDING"):
                raise ApiError(400, f"Invalid {where}.sortSpecs[{k}]")
            keyed = [(_sort_key(cell(r, col)), r) for r in order if not _empty(cell(r, col))]
            keyed.sort(key=lambda kr: kr[0], reverse=how == "DESCENDING")
            order = [r for _, r in keyed] + [r for r in order if _empty(cell(r, col))]
        before = {r: list(rows[r]) for r in order}
        for new, old in enumerate(order, start=r0):
            row, src = list(rows[new]), before[old]
            row.extend([""] * (min(c1, max(len(src), len(row))) - len(row)))
            for c in range(c0, min(c1, len(row))):
                row[c] = src[c] if c < len(src) else ""
            rows[new] = _trim(row)
        to_new = {old: new for new, old in enumerate(order, start=r0)}
        self._move_formats(sid, tab, lambda r: to_new.get(r, r), cols=range(c0, c1))

    def batch_update(self, sid: str, body: dict[str, Any]) -> dict[str, Any]:
        book = self.spreadsheet(sid)
        requests = body.get("requests") or []
        titles: list[str] = []
        for n, req in enumerate(requests):
            kind = set(req) if isinstance(req, dict) else set()
            if kind not in ({"addSheet"}, {"repeatCell"}, {"sortRange"}):
                raise ApiError(
                    400, f"Invalid requests[{n}]: only addSheet, repeatCell and sortRange are "
                    "emulated"
                )  # fmt: skip
            if "addSheet" not in kind:
                continue
            title = str(((req["addSheet"] or {}).get("properties") or {}).get("title") or "")
            if not title:
                title = f"Sheet{len(book['sheets']) + len(titles) + 1}"
            if title in book["sheets"] or title in titles:
                raise ApiError(
                    400,
                    f'Invalid requests[{n}].addSheet: A sheet with the name "{title}" already '
                    "exists. Please enter another name.",
                )
            titles.append(title)
        replies: list[dict[str, Any]] = []
        for n, req in enumerate(requests):
            if "repeatCell" in req:
                self._repeat_cell(sid, n, req["repeatCell"] or {})
                replies.append({})
            elif "sortRange" in req:
                self._sort_range(sid, n, req["sortRange"] or {})
                replies.append({})
            else:
                title = titles.pop(0)
                book["sheets"][title] = []
                i = len(book["sheets"]) - 1
                replies.append({"addSheet": {"properties": self._sheet_properties(i, title, [])}})
        return {"spreadsheetId": sid, "replies": replies}


def _sort_key(v: Cell) -> tuple[int, Any]:
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, int | float):
        return (0, v)
    return (1, v.casefold())


def _grid_size(rows: Rows) -> tuple[int, int]:
    """A tab's grid (rows, columns): at least a new sheet's 1000 x 26, and as large as its data
    (a write here grows the grid; Google would need the rows or columns added first)."""
    return max(1000, len(rows)), max(26, max(map(len, rows), default=0))


def _normalise(raw: Any, source: str) -> dict[str, Any]:
    """Check the data file's shape (docs/local-stand-ins.md) and trim empty ends."""
    if not isinstance(raw, dict) or not isinstance(raw.get("spreadsheets", {}), dict):
        raise ValueError(f'{source}: expected {{"spreadsheets": {{"<id>": {{...}}}}}}')
    books = raw.setdefault("spreadsheets", {})
    for sid, book in books.items():
        if not isinstance(book, dict) or not isinstance(book.get("sheets", {}), dict):
            raise ValueError(f'{source}: spreadsheet {sid!r} needs "sheets": {{"<tab>": [[...]]}}')
        book.setdefault("title", sid)
        book.setdefault("timeZone", DEFAULT_TIME_ZONE)
        sheets = book.setdefault("sheets", {})
        formats = book.setdefault("formats", {})
        for tab, cells in formats.items():
            if tab not in sheets or not isinstance(cells, dict):
                raise ValueError(f'{source}: "formats" of {sid!r} names tab {tab!r}, not a tab')
            for key, fmt in cells.items():
                if not _CELL_KEY.fullmatch(key) or not isinstance(fmt, dict):
                    raise ValueError(
                        f'{source}: "formats" of {tab!r}: {key!r} must be a cell name (F2) '
                        'with {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"}'
                    )
        for tab, rows in sheets.items():
            if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
                raise ValueError(f"{source}: tab {tab!r} of {sid!r} must be a list of rows")
            for i, row in enumerate(rows):
                if any(v is None for v in row):
                    row = ["" if v is None else v for v in row]
                rows[i] = _trim(row)
            _trim_rows(rows)
    return raw


# ---------------------------------------------------------------------------------------------
# HTTP

_VERB = re.compile(r"(.*):(append|clear|batchGet|batchUpdate|batchClear)")


def create_emulator(
    data_path: str | Path | None = None, data: dict[str, Any] | None = None
) -> Flask:
    """The emulator as a Flask app; `data` (else the file at `data_path`) is the starting state."""
    emu = SheetsEmulator(data_path, data)
    app = Flask(__name__)
    app.extensions["sheets_emulator"] = emu

    def reply(obj: Any, status: int = 200) -> Response:
        body = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return Response(body, status=status, content_type="application/json; charset=UTF-8")

    @app.get("/_emulator/stats")
    def stats() -> Response:
        with emu.lock:
            return reply({**emu.calls, "total": sum(emu.calls.values())})

    @app.post("/_emulator/stats/reset")
    def reset_stats() -> Response:
        with emu.lock:
            emu.calls.clear()
            emu.requests.clear()
        return reply({"ok": True})

    @app.get("/_emulator/requests")
    def requests_log() -> Response:
        with emu.lock:
            return reply({"requests": list(emu.requests)})

    @app.post("/_emulator/faults")
    def faults() -> Response:
        spec = request.get_json(silent=True) or {}
        status, count = spec.get("status"), spec.get("count", 1)
        method, params = spec.get("method"), spec.get("params", {})
        if (
            not isinstance(status, int)
            or not 400 <= status <= 599
            or not isinstance(count, int)
            or not (method is None or (isinstance(method, str) and method))
            or not isinstance(params, dict)
            or not all(isinstance(v, str) for v in params.values())
        ):
            return reply({"error": _FAULT_SPEC}, 400)
        with emu.lock:
            emu.faults.extend([Fault(status, method, params)] * count)
        return reply({"ok": True, "pending": len(emu.faults)})

    @app.get("/_emulator/data")
    def dump() -> Response:
        with emu.lock:
            return reply(emu.data)

    def run(
        method: str,
        handler: Handler,
        sid: str,
        ranges: list[str] | None = None,
        args: Mapping[str, str] | None = None,
    ) -> Response:
        """Count and log the call, answer an injected fault if one is due, else run it; save
        changes."""
        try:
            with emu.lock:
                emu.calls[method] += 1
                emu.requests.append({"method": method, "ranges": ranges or []})
                fault = next((f for f in emu.faults if f.hits(method, args or {})), None)
                if fault is not None:
                    emu.faults.remove(fault)
                    code = fault.status
                    raise ApiError(code, _FAULT_MESSAGES.get(code, "Injected fault."))
                try:
                    answer, changed = handler(sid)
                finally:
                    if method not in _READS:
                        emu.changes += 1  # even one that failed halfway
                if changed:
                    emu.save()
                return reply(answer)
        except ApiError as exc:
            return reply(exc.body(), exc.code)

    @app.post("/v4/spreadsheets")
    def create() -> Response:
        body = request.get_json(silent=True) or {}
        return run("spreadsheets.create", lambda _: (emu.create(body), True), "")

    @app.route("/v4/spreadsheets/<path:rest>", methods=["GET", "POST", "PUT"])
    def api(rest: str) -> Response:
        # The path is decoded here; ranges are the tail, so a tab name may even hold '/'.
        sid, _, tail = rest.partition("/")
        verb = ""
        if not tail and ":" in sid:
            sid, _, verb = sid.partition(":")
        http, args = request.method, request.args
        if http == "POST" and request.headers.get("X-HTTP-Method-Override", "").upper() == "GET":
            # A GET whose address would pass 2,048 characters (a batchGet of many ranges):
            # googleapiclient sends it as a POST of the form-encoded query, and Google serves it.
            http, args = "GET", request.form
        try:
            method, handler = _route(emu, http, tail, verb, args)
        except ApiError as exc:
            return reply(exc.body(), exc.code)
        return run(method, handler, sid, _ranges_asked(tail, args), args)

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return reply(ApiError(404, f"Not found: {request.path}").body(), 404)

    return app


Handler = Callable[[str], tuple[dict[str, Any], bool]]
_READS = frozenset({"spreadsheets.get", "values.get", "values.batchGet"})
# What valueRenderOption / dateTimeRenderOption / majorDimension may be (Sheets v4 enums).
_VALUE_RENDER = ("FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA")
_DATE_RENDER = ("SERIAL_NUMBER", "FORMATTED_STRING")
_DIMENSIONS = ("ROWS", "COLUMNS")


def _ranges_asked(tail: str, args: MultiDict[str, str]) -> list[str]:
    """The ranges a request names, for the request log: batchGet's `ranges` parameters, a
    batchUpdate's data ranges, or the one range in the path."""
    if tail == "values:batchGet":
        return args.getlist("ranges")
    if tail in ("values:batchUpdate", "values:batchClear"):
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return []
        if tail == "values:batchClear":
            return [str(r) for r in body.get("ranges") or []]
        return [str(d.get("range", "")) for d in body.get("data") or [] if isinstance(d, dict)]
    if tail.startswith("values/"):
        m = _VERB.fullmatch(tail[len("values/") :])
        return [m.group(1) if m else tail[len("values/") :]]
    return []


def _enum(
    args: MultiDict[str, str],
    name: str,
    field: str,
    kind: str,
    allowed: tuple[str, ...],
    default: str,
) -> str:
    """A query parameter that must be one of an enum's values, refused as Google words it."""
    value = args.get(name, default)
    if value not in allowed:
        raise ApiError(
            400,
            f"Invalid value at '{field}' (type.googleapis.com/google.apps.sheets.v4.{kind}), "
            f'"{value}"',
        )
    return value


def _route(
    emu: SheetsEmulator, http: str, tail: str, verb: str, args: MultiDict[str, str]
) -> tuple[str, Handler]:
    """Which API method a request is, and the function that answers it (given the sheet id)."""

    def body() -> dict[str, Any]:
        obj = request.get_json(silent=True)
        if not isinstance(obj, dict):
            raise ApiError(400, "Invalid JSON payload received.")
        return obj

    def input_option(value: str | None) -> str:
        if not value:
            raise ApiError(400, "'valueInputOption' is required but not specified")
        if value not in ("RAW", "USER_ENTERED"):
            raise ApiError(400, f"Invalid valueInputOption {value!r}: use RAW or USER_ENTERED")
        return value

    render = _enum(
        args, "valueRenderOption", "value_render_option", "ValueRenderOption", _VALUE_RENDER,
        "FORMATTED_VALUE",
    )  # fmt: skip
    # SERIAL_NUMBER: date cells as their serials; FORMATTED_STRING: as the text they show.
    date_render = _enum(
        args, "dateTimeRenderOption", "date_time_render_option", "DateTimeRenderOption",
        _DATE_RENDER, "SERIAL_NUMBER",
    )  # fmt: skip
    major = _enum(args, "majorDimension", "major_dimension", "Dimension", _DIMENSIONS, "ROWS")

    if tail == "" and verb == "" and http == "GET":
        fields = args.get("fields")

        def get_book(sid: str) -> tuple[dict[str, Any], bool]:
            answer = emu.describe(sid)
            return (_select(answer, _parse_fields(fields)) if fields else answer), False

        return "spreadsheets.get", get_book
    if tail == "" and verb == "batchUpdate" and http == "POST":
        return "spreadsheets.batchUpdate", lambda sid: (emu.batch_update(sid, body()), True)
    if tail == "values:batchGet" and http == "GET":
        # `ranges` is repeated, one parameter per range; the answers come in the order asked,
        # each shaped as values.get answers it.
        ranges = args.getlist("ranges")

        def batch_get(sid: str) -> tuple[dict[str, Any], bool]:
            got = [emu.value_range(sid, r, render, major, date_render) for r in ranges]
            answer: dict[str, Any] = {"spreadsheetId": sid}
            if got:
                answer["valueRanges"] = got
            return answer, False

        return "values.batchGet", batch_get
    if tail == "values:batchUpdate" and http == "POST":

        def batch_update(sid: str) -> tuple[dict[str, Any], bool]:
            b = body()
            option = input_option(b.get("valueInputOption"))
            data = b.get("data") or []
            emu.spreadsheet(sid)
            # Check every range first so a bad one changes nothing, as in Sheets.
            for d in data:
                emu.resolve(sid, str(d.get("range", "")))
                emu._grid(d.get("values"), d.get("majorDimension", "ROWS"))
            answers = [
                emu.write(sid, d["range"], d.get("values"), option, d.get("majorDimension", "ROWS"))
                for d in data
            ]
            totals = {
                "totalUpdatedRows": sum(a.get("updatedRows", 0) for a in answers),
                "totalUpdatedColumns": sum(a.get("updatedColumns", 0) for a in answers),
                "totalUpdatedCells": sum(a.get("updatedCells", 0) for a in answers),
                "totalUpdatedSheets": len(
                    {a["updatedRange"].rsplit("!", 1)[0] for a in answers if "updatedCells" in a}
                ),
            }
            answer = {"spreadsheetId": sid, **{k: v for k, v in totals.items() if v}}
            answer["responses"] = answers
            return answer, bool(totals["totalUpdatedCells"])

        return "values.batchUpdate", batch_update
    if tail == "values:batchClear" and http == "POST":

        def batch_clear(sid: str) -> tuple[dict[str, Any], bool]:
            got = [emu.clear(sid, r)["clearedRange"] for r in body().get("ranges") or []]
            return {"spreadsheetId": sid, "clearedRanges": got}, True

        return "values.batchClear", batch_clear
    if tail.startswith("values/"):
        text = tail[len("values/") :]
        m = _VERB.fullmatch(text)
        action = ""
        if m and m.group(2) in ("append", "clear"):
            text, action = m.group(1), m.group(2)
        if action == "" and http == "GET":

            def get(sid: str) -> tuple[dict[str, Any], bool]:
                return emu.value_range(sid, text, render, major, date_render), False

            return "values.get", get
        if action == "" and http == "PUT":

            def update(sid: str) -> tuple[dict[str, Any], bool]:
                b = body()
                option = input_option(args.get("valueInputOption"))
                answer = emu.write(
                    sid, text, b.get("values"), option, b.get("majorDimension", "ROWS")
                )
                return answer, "updatedCells" in answer

            return "values.update", update
        if action == "append" and http == "POST":

            def append(sid: str) -> tuple[dict[str, Any], bool]:
                b = body()
                option = input_option(args.get("valueInputOption"))
                insert = args.get("insertDataOption", "OVERWRITE")
                answer = emu.append(
                    sid, text, b.get("values"), option, insert, b.get("majorDimension", "ROWS")
                )
                return answer, "updatedCells" in answer["updates"]

            return "values.append", append
        if action == "clear" and http == "POST":
            return "values.clear", lambda sid: (emu.clear(sid, text), True)
    raise ApiError(404, f"The emulator does not serve {http} /v4/spreadsheets/.../{tail or verb}")


def serve(data_path: str, host: str, port: int) -> None:
    """Run the emulator in the foreground until interrupted (`sheet-bridge emulate sheets`)."""
    from werkzeug.serving import run_simple

    run_simple(host, port, create_emulator(data_path), threaded=True)
