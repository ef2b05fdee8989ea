"""The sheet as data, without I/O: A1 notation, the header map, and typed cells (dates)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

DateOrder = Literal["day_first", "month_first"]


class TableError(Exception):
    """A problem with the sheet's shape (headers, ranges) that a person can fix."""


class CellError(TableError):
    """A cell whose value cannot be read as the type it should hold."""


class AmountError(CellError):
    """A text cell that is not an amount, or reads as two different amounts: why, and the fix."""

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(f"{why}; {fix}")
        self.why = why
        self.fix = fix


# ---------------------------------------------------------------------------------------------
# A1 notation


def col_letter(index: int) -> str:
    """Column letters for a 0-based index: 0 → A, 25 → Z, 26 → AA."""
    if index < 0:
        raise ValueError(f"column index must be 0 or more, got {index}")
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return letters


def col_index(letters: str) -> int:
    """0-based column index for column letters: A → 0, Z → 25, AA → 26 (case-insensitive)."""
    if not letters or not letters.isascii() or not letters.isalpha():
        raise ValueError(f"{letters!r} is not a column name such as A, F or AB")
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - ord("A") + 1)
    return n - 1


# A name Sheets reads without quotes: letters, digits, underscore, not starting with a digit,
# and not something that itself reads as a cell (A1, XFD5) or an R1C1 reference (R1C1, RC).
_PLAIN_TAB = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CELL_LIKE = re.compile(r"[A-Za-z]{1,3}[0-9]+|[Rr][0-9]*[Cc][0-9]*")


def quote_tab(name: str) -> str:
    """The tab name as it goes before `!` in A1 notation: `Bob's Leads` → `'Bob''s Leads'`."""
    if _PLAIN_TAB.fullmatch(name) and not _CELL_LIKE.fullmatch(name):
        return name
    return "'" + name.replace("'", "''") + "'"


def a1(tab: str, row: int, col: int) -> str:
    """One cell: row 1-based, col 0-based → `Leads!C5`."""
    _check_row(row)
    return f"{quote_tab(tab)}!{col_letter(col)}{row}"


def a1_range(
    tab: str,
    start_row: int,
    start_col: int,
    end_row: int | None = None,
    end_col: int | None = None,
) -> str:
    """A rectangle (rows 1-based, cols 0-based, ends inclusive); leave one end open for `A2:F`.

    end_row=None → to the last row (`A2:F`); end_col=None → to the last column (`A2:5`).
    """
    _check_row(start_row)
    start = f"{col_letter(start_col)}{start_row}"
    if end_row is None and end_col is None:
        raise ValueError("a1_range needs end_row or end_col (or both); use a1() for one cell")
    if end_row is not None:
        _check_row(end_row)
    end = (col_letter(end_col) if end_col is not None else "") + (
        str(end_row) if end_row is not None else ""
    )
    return f"{quote_tab(tab)}!{start}:{end}"


def _check_row(row: int) -> None:
    if row < 1:
        raise ValueError(f"sheet rows are numbered from 1, got {row}")


# ---------------------------------------------------------------------------------------------
# Header row


def _header_key(value: object) -> str:
    # Trimmed, case-folded, inner runs of spaces folded: "Lead  status " matches "Lead Status".
    return " ".join(str(value).split()).casefold()


def _header_text(value: object) -> str:
    return " ".join(str(value).split()) if value is not None else ""


class HeaderMap:
    """Header text → column index, matched trimmed and case-insensitively."""

    def __init__(self, header: Sequence[object]) -> None:
        self._index: dict[str, int] = {}
        self.headers: list[tuple[int, str]] = []  # (column index, header text), non-empty only
        for i, cell in enumerate(header):
            text = _header_text(cell)
            if not text:
                continue
            key = _header_key(text)
            if key in self._index:
                first = self._index[key]
                raise TableError(
                    f"Columns {col_letter(first)} and {col_letter(i)} are both headed "
                    f"{text!r}; rename one"
                )
            self._index[key] = i
            self.headers.append((i, text))
        # One past the last non-empty header: where new columns go.
        self.width: int = self.headers[-1][0] + 1 if self.headers else 0

    def index(self, header: str) -> int | None:
        """The column index of this header, or None when the sheet has no such column."""
        return self._index.get(_header_key(header))

    def require(self, headers: Mapping[str, str]) -> dict[str, int]:
        """Logical field → column index for every header given; all must exist."""
        found: dict[str, int] = {}
        missing: list[str] = []
        for logical, text in headers.items():
            i = self.index(text)
            if i is None:
                missing.append(f"{text!r} (columns.{logical})")
            else:
                found[logical] = i
        if missing:
            existing = ", ".join(repr(t) for _, t in self.headers) or "none (row 1 is empty)"
            raise TableError(
                f"The sheet has no column headed {' or '.join(missing)}; its headers are: "
                f"{existing}. Fix the header row or [columns] in the config."
            )
        return found


@dataclass
class SheetTable:
    """One tab as read: the header row and the data rows below it (ragged, as the API sends).

    Either the whole tab (rows consecutive from `first_row`) or some rows of it (an edit's:
    `row_numbers` gives each row's own sheet row number, as the sheet numbers them)."""

    title: str  # the spreadsheet's title
    tab: str
    time_zone: str  # the spreadsheet's time zone: how serial dates and naive times are read
    header: list[object]
    rows: list[list[object]] = field(default_factory=list)
    first_row: int = 2  # sheet row number of rows[0] when the rows are consecutive
    # The spreadsheet's locale (File > Settings; spreadsheets.get `properties.locale`, e.g.
    # de_DE): how numbers typed as text are read. Google's default is en_US.
    locale: str = "en_US"
    # The sheet row number of each of `rows`, ascending, when only some rows were read; None
    # when the rows are the whole tab below the header.
    row_numbers: list[int] | None = None

    def __post_init__(self) -> None:
        numbers = self.row_numbers
        if numbers is not None and (
            len(numbers) != len(self.rows) or any(a >= b for a, b in pairwise(numbers))
        ):
            raise ValueError("row_numbers must give one ascending sheet row number per row")

    def cell(self, row_i: int, col: int) -> object | None:
        """The value at data row `row_i` (0-based), column `col`; None past a ragged row's end."""
        if row_i < 0 or col < 0 or row_i >= len(self.rows):
            return None
        row = self.rows[row_i]
        return row[col] if col < len(row) else None

    def row_number(self, row_i: int) -> int:
        """The sheet's row number (as a person sees it) of data row `row_i`."""
        if self.row_numbers is not None:
            return self.row_numbers[row_i]
        return self.first_row + row_i

    def numbers(self) -> Sequence[int]:
        """Every data row's sheet row number, in the order of `rows`."""
        if self.row_numbers is not None:
            return self.row_numbers
        return range(self.first_row, self.first_row + len(self.rows))

    def header_map(self) -> HeaderMap:
        return HeaderMap(self.header)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)


# ---------------------------------------------------------------------------------------------
# Typed cells: date/time

# Sheets' date serials count days from 1899-12-30
# (developers.google.com/sheets/api/reference/rest/v4/DateTimeRenderOption); the fraction is the
# time.
SERIAL_EPOCH = datetime(1899, 12, 30)
MIN_YEAR, MAX_YEAR = 2000, 2100
_LAST_SERIAL = 2_958_465  # 9999-12-31, the last date Sheets has

_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for name in names
}

_TIME = (
    r"(?:(?:\s+|\s*,\s*|T)(?P<h>\d{1,2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:\.(?P<fr>\d{1,6})\d*)?)?"
    r"\s*(?P<ampm>[AaPp]\.?[Mm]\.?)?)?"
)
_DATE_FORMS = [
    # 31/01/2024, 01/31/2024, 31-01-2024, 31.01.2024: which number is the day needs date_order
    re.compile(r"(?P<a>\d{1,2})(?P<sep>[/.-])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})" + _TIME),
    # 2024/01/31, 2024.01.31 (ISO's 2024-01-31 is handled by fromisoformat first)
    re.compile(r"(?P<y>\d{4})(?P<sep>[/.-])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})" + _TIME),
    # 31 Jan 2024, 31-Jan-2024
    re.compile(r"(?P<d>\d{1,2})[\s-]+(?P<mon>[A-Za-z]{3,9})\.?[\s,-]+(?P<y>\d{4})" + _TIME),
    # Jan 31, 2024 / January 31st 2024
    re.compile(
        r"(?P<mon>[A-Za-z]{3,9})\.?\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s+(?P<y>\d{4})" + _TIME
    ),
]


def _not_a_date(value: object, why: str = "") -> CellError:
    if isinstance(value, str) and len(value) > 60:
        value = value[:60] + "…"  # a cell may hold 50,000 characters; the message must not
    shown = repr(value) if not isinstance(value, str) or value.strip() else "an empty cell"
    extra = f" ({why})" if why else ""
    return CellError(
        f"{shown} is not a date/time{extra}; write it as 2026-11-24 14:30 or format the cell "
        "as Date time"
    )


def parse_datetime(value: object, tz: ZoneInfo, date_order: DateOrder) -> datetime:
    """A cell as an aware datetime: serial numbers and naive text are in the sheet's zone `tz`.

    Accepts Sheets serial numbers, ISO 8601 (with or without offset, `T` or space), and the
    common text forms (31/01/2024 14:30, 01/31/2024 2:30 PM, 31 Jan 2024, Jan 31, 2024).
    Text whose day and month could be swapped is read by `date_order`; when one of them is
    above 12 the date is read correctly either way.
    """
    if isinstance(value, datetime):
        result = value if value.tzinfo else value.replace(tzinfo=tz)
    elif isinstance(value, bool):
        # bool is an int in Python; a checkbox is not a date.
        raise _not_a_date(value)
    elif isinstance(value, int | float):
        result = _from_serial(value, tz)
    elif isinstance(value, str):
        result = _from_text(value, tz, date_order)
    else:
        raise _not_a_date(value)
    if not MIN_YEAR <= result.year <= MAX_YEAR:
        raise _not_a_date(value, f"year {result.year} is outside {MIN_YEAR}–{MAX_YEAR}")
    return result


def is_date_only(value: object) -> bool:
    """A date cell with no time of day: a whole serial number, or text without a clock time.

    The planner reads such a change time as "some time that day" (see sync/plan.py)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value) and float(value).is_integer()
    if isinstance(value, datetime):
        return False
    return isinstance(value, str) and ":" not in value


def _from_serial(value: float, tz: ZoneInfo) -> datetime:
    if not math.isfinite(value) or not 0 < value <= _LAST_SERIAL:
        # Checked before any arithmetic: 1e308 days in milliseconds overflows a float, and
        # round() of that raised OverflowError out of the pass (issue 21).
        raise _not_a_date(value, "not a date serial number")
    # Round to the millisecond: Sheets keeps times to the ms, and 14:30 as a fraction of a day
    # comes back as 0.604166666... which would otherwise read as 14:29:59.999999.
    ms = round(value * 86_400_000)
    if not 0 < ms <= _LAST_SERIAL * 86_400_000:
        raise _not_a_date(value, "not a date serial number")
    return (SERIAL_EPOCH + timedelta(milliseconds=ms)).replace(tzinfo=tz)


_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}")


def _from_text(value: str, tz: ZoneInfo, date_order: DateOrder) -> datetime:
    text = value.strip()
    if not text:
        raise _not_a_date(value)
    if _ISO_START.match(text):
        iso = text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text
        try:
            parsed = datetime.fromisoformat(iso)
        except ValueError:
            pass  # not ISO after all (e.g. 2024-1-31 9:05); try the text forms
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)
    for form in _DATE_FORMS:
        m = form.fullmatch(text)
        if m:
            return _from_match(m, value, tz, date_order)
    raise _not_a_date(value)


def _from_match(m: re.Match[str], value: str, tz: ZoneInfo, date_order: DateOrder) -> datetime:
    g = m.groupdict()
    year = int(g["y"])
    if g.get("a") is not None:
        a, b = int(g["a"]), int(g["b"])
        if a > 12 >= b:
            day, month = a, b
        elif b > 12 >= a:
            month, day = a, b
        elif date_order == "day_first":
            day, month = a, b
        else:
            month, day = a, b
    elif g.get("mon") is not None:
        month_number = _MONTHS.get(g["mon"].lower())
        if month_number is None:
            raise _not_a_date(value, f"{g['mon']!r} is not a month")
        month, day = month_number, int(g["d"])
    else:
        month, day = int(g["m"]), int(g["d"])
    hour = int(g["h"]) if g.get("h") else 0
    minute = int(g["mi"]) if g.get("mi") else 0
    second = int(g["s"]) if g.get("s") else 0
    micro = int((g.get("fr") or "0").ljust(6, "0"))
    ampm = (g.get("ampm") or "").replace(".", "").lower()
    if ampm:
        if not 1 <= hour <= 12:
            raise _not_a_date(value, f"{hour} is not an hour on a 12-hour clock")
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:
        raise _not_a_date(value, str(exc)) from None


# Locales whose short dates put the month first (CLDR's M/d/y: en_US and the English of the US
# territories, es_US, en_PH, fil_PH). Every other locale writes the day first or the year
# first (2026/12/01 is never ambiguous), so day first is their reading of 01/12/2026.
# Google Sheets reads and shows dates by the spreadsheet's locale (File → Settings;
# https://developers.google.com/workspace/sheets/api/guides/formats).
_MONTH_FIRST_LOCALES = frozenset({
    "en_US", "en_AS", "en_GU", "en_MH", "en_MP", "en_PR", "en_UM", "en_VI", "es_US", "en_PH",
    "fil_PH", "tl_PH", "en",
})  # fmt: skip


def locale_date_order(locale: str) -> DateOrder:
    """How a sheet of this locale writes 01/12/2026: month first (en_US: 12 January) or day
    first (en_GB, de_DE, en_IN: 1 December)."""
    code = locale.replace("-", "_")
    return "month_first" if code in _MONTH_FIRST_LOCALES else "day_first"


def date_order_evidence(value: object) -> DateOrder | None:
    """What a text date says of its sheet's order on its own: 13/01/2026 can only be day
    first, 01/13/2026 only month first; None when it cannot tell (both ≤ 12, or not a/b/y)."""
    if not isinstance(value, str):
        return None
    m = _DATE_FORMS[0].fullmatch(value.strip())
    if m is None:
        return None
    a, b = int(m["a"]), int(m["b"])
    if a > 12 >= b >= 1:
        return "day_first"
    if b > 12 >= a >= 1:
        return "month_first"
    return None


# ---------------------------------------------------------------------------------------------
# Typed cells: amounts
#
# A number typed into a number cell reaches us as a number (UNFORMATTED_VALUE) whatever the
# locale. Only a text cell ("1.234,56" in a column formatted as Plain text, a CSV import, a
# Zapier write) needs the locale: the same text is 1234.56 in a de_DE sheet and unreadable in an
# en_US one. The text is read both ways (a '.' decimal point with ',' grouping, and the
# reverse); when only one reading is a well-formed number it is the one, and when both are
# (only "1,234" or "1.234": one separator, three digits after it) the sheet's locale decides.
# A locale this table does not know decides nothing: such a value is refused, never guessed.

# Languages whose locales write a decimal comma (CLDR), and the locales of a decimal-comma
# language that write a point instead (Swiss German and Italian, Mexican and US Spanish…).
_DECIMAL_COMMA_LANGUAGES = frozenset({
    "af", "az", "be", "bg", "bs", "ca", "cs", "da", "de", "el", "es", "et", "eu", "fi", "fr",
    "gl", "hr", "hu", "hy", "id", "is", "it", "ka", "kk", "lt", "lv", "mk", "nb", "nl", "nn",
    "no", "pl", "pt", "ro", "ru", "sk", "sl", "sq", "sr", "sv", "tr", "uk", "uz", "vi",
})  # fmt: skip
_DECIMAL_POINT_LANGUAGES = frozenset({
    "en", "ja", "zh", "ko", "hi", "th", "he", "iw", "ms", "ta", "te", "bn", "mr", "gu", "kn",
    "ml", "pa", "fil", "tl", "sw",
})  # fmt: skip
_DECIMAL_POINT_LOCALES = frozenset({
    "de_CH", "de_LI", "it_CH", "es_MX", "es_US", "es_419", "es_PR", "es_DO", "es_GT", "es_HN",
    "es_NI", "es_PA", "es_SV", "es_PE",
})  # fmt: skip
# Locales whose separator Google and CLDR may not agree on: decide nothing there.
_UNSURE_LOCALES = frozenset({"en_ZA", "fr_CH", "en_BE", "en_DK", "en_NL", "en_SE", "en_DE"})

# Thousands separators no one uses as a decimal mark: spaces (fr_FR writes a narrow no-break
# space) and apostrophes (de_CH).
_GROUPING_ONLY = " \u00a0\u202f'\u2019"
_MINUS = "-\u2212"  # ASCII hyphen-minus and the Unicode minus sign


def decimal_mark(locale: str) -> str | None:
    """The decimal mark a sheet of this locale writes ('.' or ','), None when not known."""
    code = locale.replace("-", "_")
    if code in _UNSURE_LOCALES:
        return None
    if code in _DECIMAL_POINT_LOCALES:
        return "."
    language = code.split("_")[0].lower()
    if language in _DECIMAL_COMMA_LANGUAGES:
        return ","
    if language in _DECIMAL_POINT_LANGUAGES:
        return "."
    return None


def parse_amount(value: object, locale: str) -> float:
    """An amount from a cell: a number as it is, text read with the sheet's `locale`.

    Text may carry a currency symbol or 3-letter code ("₹5,00,000", "5.000 EUR"), a sign or
    accounting brackets, and thousands separators in Western (1,234,567) or Indian (12,34,567)
    groups. Raises AmountError (why, fix) for text that is not an amount or that reads as two
    different amounts in a locale that cannot decide. The sign is kept: whether a negative
    amount is acceptable is the caller's call.
    """
    return parse_money(value, locale)[0]


def parse_money(value: object, locale: str) -> tuple[float, tuple[str, ...]]:
    """parse_amount, and the currency marks written around the amount, as written ("$",
    "USD", "US$", "Rs."): which currency they name is the caller's call (meta/money.py)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise AmountError("is not a number", "write a number such as 5000")
    if not isinstance(value, str):
        amount = float(value) if isinstance(value, float) or abs(value) < 10**300 else math.inf
        if not math.isfinite(amount):
            raise AmountError("is not a finite number", "write a number such as 5000")
        return amount, ()
    mark = decimal_mark(locale)
    example = "1234,56" if mark == "," else "1234.56"
    if len(value) > _LONGEST_AMOUNT:  # before any per-character work: a cell may be megabytes
        raise AmountError(
            f"is {len(value):,} characters long, not an amount",
            f"write the amount as digits, e.g. {example}",
        )
    body, negative, marks = _amount_body(value)
    if body is None or not any(ch.isdigit() for ch in body):
        raise AmountError(
            "is not a number",
            f"write the amount as digits, e.g. {example} (a currency code may go before it)",
        )
    readings = {m: r for m in ".," if (r := _read_with_mark(body, m)) is not None}
    if not readings:
        raise AmountError(
            "is not a number as written (check the separators)",
            f"write it without thousands separators, e.g. {example}",
        )
    values = set(readings.values())
    if len(values) == 1:
        amount = values.pop()
    elif mark is not None:
        amount = readings[mark]
    else:
        point, comma = readings["."], readings[","]
        raise AmountError(
            f"reads as {_plain(point)} or as {_plain(comma)}, and the sheet's locale "
            f"{locale!r} does not say which",
            f"write it without a thousands separator ({_plain(point)} or {_plain(comma)})",
        )
    if not math.isfinite(amount):  # hundreds of digits: float("1" * 400) is inf
        raise AmountError("is not a finite number", "write a number such as 5000")
    return (-amount if negative else amount), marks


def _amount_body(text: str) -> tuple[str | None, bool, tuple[str, ...]]:
    """The digits-and-separators part of an amount's text, whether it is negative, and the
    currency marks around it; None when anything other than a sign, brackets, currency symbol
    or code surrounds it."""
    body = text.strip()
    negative = False
    marks: list[str] = []
    if body.startswith("(") and body.endswith(")"):
        negative, body = True, body[1:-1].strip()
    for _ in range(4):  # sign, symbol and code may come in any order on either side
        before = body
        if body[:1] in _MINUS or body[-1:] in _MINUS:
            negative = True
            body = body[1:] if body[:1] in _MINUS else body[:-1]
        body = body.removeprefix("+")
        for m in _CURRENCY_WORD.finditer(body):
            marks.append(m.group().strip())
        body = _CURRENCY_WORD.sub("", body).strip()
        if body[:1] and unicodedata.category(body[0]) == "Sc":
            marks.append(body[0])
            body = body[1:]
        if body[-1:] and unicodedata.category(body[-1]) == "Sc":
            marks.append(body[-1])
            body = body[:-1]
        body = body.strip()
        if body == before:
            break
    if not _AMOUNT_BODY.fullmatch(body):
        return None, negative, tuple(marks)
    return body, negative, tuple(marks)


def _read_with_mark(body: str, mark: str) -> float | None:
    """The amount `body` is when `mark` is its decimal point, or None when it is not then a
    well-formed number (one mark at most, digits after it, thousands groups in their places)."""
    other = "," if mark == "." else "."
    whole, has_mark, fraction = body.partition(mark)
    if mark in fraction or (has_mark and not fraction.isdigit()):
        return None
    separators = {ch for ch in whole if not ch.isdigit()}
    if separators:
        if len(separators) > 1 or not separators <= set(_GROUPING_ONLY + other):
            return None
        grouping = separators.pop()
        groups = whole.split(grouping)
        if not all(g.isdigit() for g in groups) or not _well_grouped(groups):
            return None
        whole = "".join(groups)
    if not whole and not fraction:
        return None
    return float(f"{whole or 0}.{fraction or 0}")


def _well_grouped(groups: list[str]) -> bool:
    """Thousands groups: 1–3 digits then threes (1,234,567), or the Indian lakh and crore
    grouping, 1–2 digits then twos and a last three (12,34,567)."""
    head, *rest = groups
    if not rest or not rest[-1] or len(rest[-1]) != 3:
        return False
    if 1 <= len(head) <= 3 and all(len(g) == 3 for g in rest):
        return True
    return 1 <= len(head) <= 2 and all(len(g) == 2 for g in rest[:-1])


def _plain(amount: float) -> str:
    return f"{amount:.15g}"


# A currency written as letters: an ISO code, a letter-prefixed dollar (US$, C$, HK$), or the
# rupee's, krona's and złoty's own words.
_MARK_WORD = r"(?:[A-Za-z]{1,3}\$|[A-Za-z]{3}|Rs\.?|kr\.?|zł)"
# Longer than any amount written by hand, currency and separators included.
_LONGEST_AMOUNT = 100
_CURRENCY_WORD = re.compile(rf"^{_MARK_WORD}\s*|\s*{_MARK_WORD}$")
_AMOUNT_BODY = re.compile(r"[0-9][0-9.,'\u2019 \u00a0\u202f]*|[.,][0-9]+")
