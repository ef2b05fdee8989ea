"""The sheet as data: A1 notation, the header map, ragged rows and date cells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheet_bridge.sheets.table import (
    CellError,
    HeaderMap,
    SheetTable,
    TableError,
    a1,
    a1_range,
    col_index,
    col_letter,
    date_order_evidence,
    locale_date_order,
    parse_datetime,
    quote_tab,
)

KOLKATA = ZoneInfo("Asia/Kolkata")


# -- A1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "letters"), [(0, "A"), (5, "F"), (25, "Z"), (26, "AA"), (27, "AB"), (701, "ZZ")]
)
def test_column_letters_count_like_a_spreadsheet(index: int, letters: str) -> None:
    assert col_letter(index) == letters
    assert col_index(letters) == index
    assert col_index(letters.lower()) == index


@given(st.integers(min_value=0, max_value=18_277))
def test_column_letters_and_index_round_trip(index: int) -> None:
    assert col_index(col_letter(index)) == index


@pytest.mark.parametrize("bad", ["", "A1", "Ä", "-"])
def test_column_index_refuses_what_is_not_letters(bad: str) -> None:
    with pytest.raises(ValueError):
        col_index(bad)


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("Leads", "Leads"),
        ("Leads_2026", "Leads_2026"),
        ("CAPI Log", "'CAPI Log'"),
        ("Bob's Leads", "'Bob''s Leads'"),
        ("2026", "'2026'"),
        ("A1", "'A1'"),  # would read as a cell
        ("R1C1", "'R1C1'"),
        ("Leads-EU", "'Leads-EU'"),
        ("लीड्स", "'लीड्स'"),
    ],
)
def test_tab_names_are_quoted_when_a1_needs_it(name: str, quoted: str) -> None:
    assert quote_tab(name) == quoted


def test_a1_cells_and_ranges_use_1_based_rows_and_0_based_columns() -> None:
    assert a1("Leads", 5, 2) == "Leads!C5"
    assert a1_range("Leads", 2, 0, 40, 5) == "Leads!A2:F40"
    assert a1_range("Bob's Leads", 2, 0, end_col=5) == "'Bob''s Leads'!A2:F"
    assert a1_range("Leads", 7, 1, end_row=7) == "Leads!B7:7"


def test_a1_refuses_row_zero_and_a_range_with_no_end() -> None:
    with pytest.raises(ValueError):
        a1("Leads", 0, 0)
    with pytest.raises(ValueError):
        a1_range("Leads", 2, 0)


# -- header map ----------------------------------------------------------------------------


def test_headers_match_trimmed_and_case_insensitively() -> None:
    headers = HeaderMap(["Lead Status", " email ", "", "Leadgen  ID", None, 2024])
    assert headers.index("lead status") == 0
    assert headers.index("EMAIL") == 1
    assert headers.index("Leadgen ID") == 3
    assert headers.index("2024") == 5
    assert headers.index("Phone") is None
    assert headers.width == 6


def test_duplicate_headers_error_names_both_columns() -> None:
    with pytest.raises(TableError) as err:
        HeaderMap(["Status", "x", "Email", "y", "z", "email "])
    assert str(err.value) == "Columns C and F are both headed 'email'; rename one"


def test_empty_headers_may_repeat() -> None:
    assert HeaderMap(["A", "", "", "B"]).index("B") == 3


def test_require_maps_logical_fields_to_columns() -> None:
    headers = HeaderMap(["Lead Status", "Email", "Phone"])
    assert headers.require({"status": "lead status", "phone": "Phone"}) == {
        "status": 0,
        "phone": 2,
    }


def test_missing_columns_error_lists_missing_and_existing_headers() -> None:
    headers = HeaderMap(["Lead Status", "E-mail", "Mobile"])
    with pytest.raises(TableError) as err:
        headers.require({"status": "Lead Status", "email": "Email", "phone": "Phone"})
    message = str(err.value)
    assert "'Email' (columns.email)" in message
    assert "'Phone' (columns.phone)" in message
    assert "its headers are: 'Lead Status', 'E-mail', 'Mobile'" in message


def test_sheet_table_cells_tolerate_ragged_rows() -> None:
    table = SheetTable(
        title="CRM",
        tab="Leads",
        time_zone="Asia/Kolkata",
        header=["Status", "Email", "Phone"],
        rows=[["MQL", "a@b.co", "+91 98"], ["New"], []],
    )
    assert table.cell(0, 2) == "+91 98"
    assert table.cell(1, 0) == "New"
    assert table.cell(1, 2) is None
    assert table.cell(2, 0) is None
    assert table.cell(3, 0) is None
    assert table.row_number(1) == 3
    assert table.zone == KOLKATA


# -- dates -----------------------------------------------------------------------------------


def test_serial_number_is_a_date_in_the_spreadsheets_zone() -> None:
    got = parse_datetime(45322, KOLKATA, "day_first")
    assert got == datetime(2024, 1, 31, tzinfo=KOLKATA)
    assert got.utcoffset() == timedelta(hours=5, minutes=30)


def test_serial_fraction_is_the_time_of_day_to_the_millisecond() -> None:
    # 14:30 is 0.6041666… of a day; the float must not read as 14:29:59.999.
    got = parse_datetime(45322 + 14.5 / 24, KOLKATA, "day_first")
    assert got == datetime(2024, 1, 31, 14, 30, tzinfo=KOLKATA)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-31T14:30:00+05:30", datetime(2024, 1, 31, 9, 0, tzinfo=UTC)),
        ("2024-01-31T09:00:00Z", datetime(2024, 1, 31, 9, 0, tzinfo=UTC)),
        ("2024-01-31 14:30", datetime(2024, 1, 31, 14, 30, tzinfo=KOLKATA)),
        ("2024-01-31", datetime(2024, 1, 31, tzinfo=KOLKATA)),
        ("31/01/2024 14:30", datetime(2024, 1, 31, 14, 30, tzinfo=KOLKATA)),
        ("01/31/2024 2:30 PM", datetime(2024, 1, 31, 14, 30, tzinfo=KOLKATA)),
        ("01/31/2024 12:05 am", datetime(2024, 1, 31, 0, 5, tzinfo=KOLKATA)),
        ("31-01-2024", datetime(2024, 1, 31, tzinfo=KOLKATA)),
        ("31.01.2024", datetime(2024, 1, 31, tzinfo=KOLKATA)),
        ("2024/01/31", datetime(2024, 1, 31, tzinfo=KOLKATA)),
        ("31 Jan 2024", datetime(2024, 1, 31, tzinfo=KOLKATA)),
        ("Jan 31, 2024 14:30", datetime(2024, 1, 31, 14, 30, tzinfo=KOLKATA)),
        ("September 3rd 2024", datetime(2024, 9, 3, tzinfo=KOLKATA)),
        ("  31/01/2024 14:30:15  ", datetime(2024, 1, 31, 14, 30, 15, tzinfo=KOLKATA)),
    ],
)
def test_text_dates_in_common_forms_are_read(text: str, expected: datetime) -> None:
    got = parse_datetime(text, KOLKATA, "day_first")
    assert got == expected
    assert got.tzinfo is not None


def test_ambiguous_text_date_follows_date_order() -> None:
    assert parse_datetime("03/04/2026", KOLKATA, "day_first").date().isoformat() == "2026-04-03"
    assert parse_datetime("03/04/2026", KOLKATA, "month_first").date().isoformat() == "2026-03-04"


@pytest.mark.parametrize("order", ["day_first", "month_first"])
def test_unambiguous_text_date_reads_the_same_whatever_the_order(order: str) -> None:
    assert parse_datetime("31/01/2024", KOLKATA, order).date().isoformat() == "2024-01-31"  # type: ignore[arg-type]
    assert parse_datetime("01/31/2024", KOLKATA, order).date().isoformat() == "2024-01-31"  # type: ignore[arg-type]


def test_naive_iso_time_is_in_the_sheets_zone_not_utc() -> None:
    got = parse_datetime("2026-11-24 14:30", ZoneInfo("America/New_York"), "day_first")
    assert got.astimezone(UTC) == datetime(2026, 11, 24, 19, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "soon",
        "",
        "   ",
        "31/31/2024",
        "2024-02-30",
        "13:45",
        "31/01/24",
        "Foo 3, 2024",
        "01/31/2024 13:30 PM",
        True,
        False,
        float("nan"),
        float("inf"),
        -5,
        0,
        1,  # 1899-12-31: a number, but not a stage time
        80000,  # 2119
        "1999-12-31",
        "2101-01-01 00:00",
        None,
        [2024, 1, 31],
    ],
)
def test_what_is_not_a_plausible_date_raises_cell_error(value: object) -> None:
    with pytest.raises(CellError) as err:
        parse_datetime(value, KOLKATA, "day_first")
    assert "is not a date/time" in str(err.value)
    assert "2026-11-24 14:30" in str(err.value)


def test_cell_error_is_a_table_error() -> None:
    assert issubclass(CellError, TableError)


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59)).map(
        lambda d: d.replace(microsecond=(d.microsecond // 1000) * 1000)
    )
)
def test_any_serial_number_reads_back_as_the_wall_time_it_encodes(moment: datetime) -> None:
    serial = (moment - datetime(1899, 12, 30)) / timedelta(days=1)
    assert parse_datetime(serial, KOLKATA, "day_first") == moment.replace(tzinfo=KOLKATA)


@pytest.mark.parametrize(
    ("locale", "order"),
    [
        ("en_US", "month_first"),
        ("es_US", "month_first"),
        ("en_PH", "month_first"),
        ("en_GB", "day_first"),
        ("en_IN", "day_first"),
        ("de_DE", "day_first"),
        ("xx_XX", "day_first"),
    ],
)
def test_text_dates_follow_the_spreadsheets_locale(locale: str, order: str) -> None:
    """Sheets renders and reads dates by the spreadsheet's locale
    (https://developers.google.com/workspace/sheets/api/guides/formats): en_US month first."""
    assert locale_date_order(locale) == order
    december_1 = parse_datetime("12/01/2026 09:00", KOLKATA, locale_date_order(locale))
    assert (december_1.month, december_1.day) == ((12, 1) if order == "month_first" else (1, 12))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("25/11/2026 09:00", "day_first"),
        ("11/25/2026", "month_first"),
        ("01/12/2026", None),
        ("2026-11-25", None),
        (46000.5, None),
    ],
)
def test_a_text_date_says_its_order_only_when_one_number_is_above_12(
    text: object, said: str | None
) -> None:
    assert date_order_evidence(text) == said
