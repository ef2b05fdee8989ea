"""Sheet table → typed lead rows: the column layout, stable lead keys, and cell reading."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sheet_bridge.config import BRIDGE_COLUMNS, IDENTITY_COLUMNS, BridgeConfig
from sheet_bridge.meta.identity import FieldProblem, shown_as_sheet
from sheet_bridge.meta.money import CurrencyError, currency_of_mark, iso_currency, value_problem
from sheet_bridge.sheets.table import (
    AmountError,
    CellError,
    DateOrder,
    HeaderMap,
    SheetTable,
    is_date_only,
    locale_date_order,
    parse_datetime,
    parse_money,
)
from sheet_bridge.sync.plan import LeadRow

# A sheet keeps 15 significant digits (docs/normalization.md): a longer id typed as a number is
# lost.
_SHEET_DIGITS = 15


@dataclass(frozen=True)
class ColumnLayout:
    """Where each configured field and each bridge-owned column is (0-based indexes)."""

    fields: dict[str, int]
    bridge: dict[str, int]
    new_headers: list[tuple[int, str]]  # bridge columns to create: (index, header)


def column_layout(table: SheetTable, config: BridgeConfig) -> ColumnLayout:
    """Map the config's columns to the header; bridge columns go after the last header cell.

    Raises TableError naming the missing headers and those that exist.
    """
    headers = HeaderMap(table.header)
    fields = headers.require(config.columns)
    bridge: dict[str, int] = {}
    new: list[tuple[int, str]] = []
    next_index = len(table.header)
    for name in BRIDGE_COLUMNS:
        index = headers.index(name)
        if index is None:
            index = next_index
            next_index += 1
            new.append((index, name))
        bridge[name] = index
    return ColumnLayout(fields, bridge, new)


def bridge_cells(table: SheetTable, layout: ColumnLayout) -> Sequence[tuple[object, ...]]:
    """Each data row's bridge cells as read, in BRIDGE_COLUMNS order (() when it has none),
    at index (sheet row number − table.first_row): a list for a whole tab, and the same
    indexing for a read of some rows (a row that was not read has none)."""
    columns = [layout.bridge[name] for name in BRIDGE_COLUMNS]
    first = min(columns)
    cells = [
        tuple(row[c] if c < len(row) else "" for c in columns) if len(row) > first else ()
        for row in table.rows
    ]
    if table.row_numbers is None:
        return cells
    return RowsByNumber(table.first_row, table.row_numbers, cells)


class RowsByNumber(Sequence[tuple[object, ...]]):
    """Some rows' cells, indexed as a whole tab's list would be (sheet row number − first
    row), so code written for a whole tab reads an edit's rows by their real row numbers."""

    def __init__(
        self, first_row: int, numbers: Sequence[int], cells: Sequence[tuple[object, ...]]
    ) -> None:
        self._first = first_row
        self._by_number = dict(zip(numbers, cells, strict=True))
        self._len = max(numbers, default=first_row - 1) - first_row + 1

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> tuple[object, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[object, ...]]: ...
    def __getitem__(self, i: int | slice) -> tuple[object, ...] | Sequence[tuple[object, ...]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        if not 0 <= i < self._len:
            raise IndexError(i)
        return self._by_number.get(self._first + i, ())


def time_zone(table: SheetTable) -> ZoneInfo:
    try:
        return ZoneInfo(table.time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def date_order(config: BridgeConfig, table: SheetTable) -> DateOrder:
    """How the tab's text dates are read: [sheets] date_order when set, else the order of the
    spreadsheet's locale, as Sheets itself reads them (docs/identity-and-dates.md)."""
    return config.sheets.date_order or locale_date_order(table.locale)


def derive_lead_key(spreadsheet_id: str, row: list[object], layout: ColumnLayout, n: int) -> str:
    """A stable key for a row that has none yet: from the lead id, else e-mail or phone with the
    created time, else the row number. Deterministic, so a pass interrupted before the key is
    written back derives the same key again. No personal data in it (hashed)."""
    fields = layout.fields
    parts: list[str] = []
    for name in ("lead_id", "email", "phone", "external_id", "created_at"):
        if name in fields:
            cell = _cell(row, fields[name])
            if cell not in (None, ""):
                parts.append(f"{name}={_text(cell).strip().lower()}")
    if not any(p.split("=")[0] != "created_at" for p in parts):
        parts.append(f"row={n}")
    digest = hashlib.sha256(("\x1f".join([spreadsheet_id, *parts])).encode()).hexdigest()
    return "L" + digest[:15]


def lead_rows(
    table: SheetTable,
    config: BridgeConfig,
    layout: ColumnLayout,
    leave_out: Collection[int] = (),
) -> list[LeadRow]:
    """Every non-blank data row as a LeadRow (cells typed, problems in words), but the rows
    numbered in `leave_out` (a full pass's rows whose memo holds, sync/memo.py)."""
    tz = time_zone(table)
    fields = layout.fields
    key_col = layout.bridge["CAPI Key"]
    order = date_order(config, table)
    out: list[LeadRow] = []
    own = list(fields.values())
    identity_cols = [
        (key, fields[logical]) for logical, key in IDENTITY_COLUMNS.items() if logical in fields
    ]
    for number, row in zip(table.numbers(), table.rows, strict=True):
        if number in leave_out or all(_cell(row, c) in (None, "") for c in own):
            continue
        key_cell = _cell(row, key_col)
        # A blank-looking key (spaces pasted over it) is no key: derive one, never key "".
        key = _own_key(key_cell)
        derived = not key
        key = key or derive_lead_key(config.sheets.spreadsheet_id, row, layout, number)
        time_problems: list[str] = []
        changed = _time(row, fields, "status_changed_at", config, tz, order, time_problems)
        created = _time(row, fields, "created_at", config, tz, order, time_problems)
        changed_date_only = changed is not None and is_date_only(
            _cell(row, fields["status_changed_at"])
        )
        created_date_only = created is not None and is_date_only(_cell(row, fields["created_at"]))
        identity: dict[str, object] = {}
        field_problems: list[FieldProblem] = []
        for meta_key, col in identity_cols:
            cell = _cell(row, col)
            if cell in (None, ""):
                continue
            if meta_key == "lead_id" and _lost_digits(cell):
                field_problems.append(
                    FieldProblem(
                        "lead_id",
                        shown_as_sheet(cell),
                        "lost digits because the cell is a number",
                        "format the column as Plain text and paste the id again",
                    )
                )
                continue
            identity[meta_key] = cell
        refusals: list[str] = []
        value, currency = _money(row, fields, table.locale, config, field_problems, refusals)
        pixel_id = None
        if "pixel_event_id" in fields:
            cell = _cell(row, fields["pixel_event_id"])
            pixel_id = _text(cell).strip()[:200] if cell not in (None, "") else None
        status_cell = _cell(row, fields["status"])
        out.append(
            LeadRow(
                row_number=number,
                key=key,
                status="" if status_cell is None else _text(status_cell)[:_STATUS_LIMIT],
                status_changed_at=changed,
                created_at=created,
                identity=identity,
                pixel_event_id=pixel_id or None,
                value=value,
                currency=currency,
                changed_date_only=changed_date_only,
                created_date_only=created_date_only,
                derived_key=derived,
                time_problems=tuple(time_problems),
                field_problems=tuple(field_problems),
                refusals=tuple(refusals),
            )
        )
    return out


def is_lead_row(row: list[object], layout: ColumnLayout) -> bool:
    """Whether lead_rows makes a lead of this row (a configured cell is not blank)."""
    return not all(_cell(row, c) in (None, "") for c in layout.fields.values())


def own_key(row: list[object], layout: ColumnLayout) -> str:
    """The row's CAPI Key cell as lead_rows reads it ("" when a key would be derived)."""
    return _own_key(_cell(row, layout.bridge["CAPI Key"]))


def pixel_event_id(row: list[object], layout: ColumnLayout) -> str | None:
    """The row's pixel event id as lead_rows reads it (None: none, or no such column)."""
    if "pixel_event_id" not in layout.fields:
        return None
    cell = _cell(row, layout.fields["pixel_event_id"])
    return (_text(cell).strip()[:200] or None) if cell not in (None, "") else None


# Longer than any status a stage map names: the rest of a pasted megabyte is not kept (the
# ledger records each status a lead is seen at).
_STATUS_LIMIT = 1_000
# Longer than any key sheet-bridge writes (L + 15 hex digits) or an id a person would paste.
_KEY_LIMIT = 64


def _own_key(cell: object) -> str:
    """The CAPI Key cell as a lead key, or "" when it cannot be one: blank, longer than any
    key, or holding control characters (a paste gone wrong). A new key is then derived and
    written over it, so no such cell reaches the ledger (issue 21)."""
    if cell is None or isinstance(cell, bool):
        return ""
    text = _text(cell).strip() if not isinstance(cell, float) or abs(cell) < 1e21 else ""
    return text if len(text) <= _KEY_LIMIT and text.isprintable() else ""


def _cell(row: list[object], col: int) -> object:
    return row[col] if col < len(row) else None


def _text(cell: object) -> str:
    if isinstance(cell, float) and math.isfinite(cell) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def _time(
    row: list[object],
    fields: dict[str, int],
    name: str,
    config: BridgeConfig,
    tz: ZoneInfo,
    order: DateOrder,
    problems: list[str],
) -> datetime | None:
    if name not in fields:
        return None
    cell = _cell(row, fields[name])
    if cell in (None, ""):
        return None
    try:
        return parse_datetime(cell, tz, order)
    except CellError as exc:
        header = config.columns[name]
        problems.append(f"{header} {exc}")  # the error quotes the cell already
        return None
    except Exception:  # no cell may stop the tab (issue 21): this row is invalid, named
        problems.append(f"{config.columns[name]} could not be read as a date; retype the cell")
        return None


def _lost_digits(cell: object) -> bool:
    """A lead id stored as a number with more digits than a sheet keeps exactly."""
    if isinstance(cell, bool) or not isinstance(cell, int | float):
        return False
    if isinstance(cell, float) and not (math.isfinite(cell) and cell.is_integer()):
        return True
    return len(str(int(cell))) > _SHEET_DIGITS


def _money(
    row: list[object],
    fields: dict[str, int],
    locale: str,
    config: BridgeConfig,
    problems: list[FieldProblem],
    refusals: list[str],
) -> tuple[float | None, str | None]:
    """The row's value cell as (amount, its currency), or (None, None) with the problem in
    words. Its currency is the one written in the cell ("$5,000", "USD 5000", "5.000 €"),
    which must agree with the Currency cell (else the row is refused, both shown), else the
    Currency cell's, else None (the stage's or the bridge's: the planner's call). A value of 0,
    not finite, or absurd is dropped (meta/money.py value_problem); the text is read with the
    sheet's locale, never guessed (sheets/table.py parse_money)."""
    column = None
    column_cell = _cell(row, fields["currency"]) if "currency" in fields else None
    if column_cell is not None:
        column = _currency(column_cell, problems)
    if "value" not in fields:
        return None, column
    cell = _cell(row, fields["value"])
    if cell is None or isinstance(cell, bool) or (isinstance(cell, str) and not cell.strip()):
        return None, column
    shown = repr(_cut(_text(cell), 20))
    try:
        amount, marks = parse_money(cell, locale)
        currencies = {currency_of_mark(m, column, config.meta.currency) for m in marks}
    except (AmountError, CurrencyError) as exc:
        problems.append(FieldProblem("value", shown, exc.why, exc.fix))
        return None, column
    except Exception:  # no cell may stop the tab (issue 21)
        problems.append(FieldProblem("value", shown, "could not be read", "retype the cell"))
        return None, column
    if amount < 0:
        # A conversion is worth zero or more: a negative amount is a refund or a typo, and the
        # old reading (dropped without a word) hid which.
        problems.append(
            FieldProblem(
                "value",
                shown,
                "is negative, and a conversion's value cannot be below zero",
                "write the amount without a minus sign, or clear the cell",
            )
        )
        return None, column
    problem = value_problem(amount)
    if problem is not None:
        problems.append(FieldProblem("value", shown, *problem))
        return None, column
    if len(currencies) > 1:
        problems.append(
            FieldProblem(
                "value",
                shown,
                f"names two currencies ({', '.join(sorted(currencies))})",
                "write one currency with the amount",
            )
        )
        return None, column
    own = currencies.pop() if currencies else None
    if own is None and column is None and not _blank(column_cell):
        # The Currency cell says something that is not a currency: the amount's currency is
        # unknown, so the amount is not sent (its problem is reported already).
        return None, None
    if own is not None and column is not None and own != column:
        value_header = config.columns["value"]
        currency_header = config.columns["currency"]
        shown_currency = repr(_cut(_text(_cell(row, fields["currency"])), 20))
        refusals.append(
            f"{value_header} {shown} is in {own} but {currency_header} {shown_currency} says "
            f"{column}; make the two agree (Meta would value the conversion in the wrong "
            "currency)"
        )
        return None, column
    return amount, own or column


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _blank(cell: object) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _currency(cell: object, problems: list[FieldProblem]) -> str | None:
    if _blank(cell):
        return None
    text = _text(cell).strip()
    try:
        return iso_currency(text)
    except CurrencyError as exc:
        problems.append(FieldProblem("currency", repr(_cut(text, 20)), exc.why, exc.fix))
    return None
