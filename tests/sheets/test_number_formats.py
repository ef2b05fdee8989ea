"""The emulator keeps a number format per cell, as Google Sheets does: a date is a serial number
in a cell with a date format, shown as a date (FORMATTED_VALUE) and read as its serial
(UNFORMATTED_VALUE); a date typed with USER_ENTERED becomes one, with RAW it stays text.

Google's pages: https://developers.google.com/sheets/api/reference/rest/v4/ValueRenderOption,
https://developers.google.com/sheets/api/reference/rest/v4/DateTimeRenderOption,
https://developers.google.com/sheets/api/reference/rest/v4/ValueInputOption and
https://developers.google.com/sheets/api/guides/formats (date and time patterns).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from sheet_bridge.local.sheets_emulator import format_serial, typed_date
from sheet_bridge.sheets.client import build_service

if TYPE_CHECKING:
    from conftest import Emulator

DATE_TIME = {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"}


def serial(at: datetime) -> float:
    return round((at - datetime(1899, 12, 30)) / timedelta(days=1), 9)


CREATED = serial(datetime(2026, 10, 4, 15, 17))


@pytest.fixture
def emu(start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]) -> Emulator:
    data = sheet_data([["Lead Status", "Created At", "Score"], ["New", CREATED, CREATED]])
    data["spreadsheets"]["sheet-1"]["formats"] = {"Leads": {"B2": DATE_TIME}}
    return start_emulator(data)


def get(emu: Emulator, rng: str, **params: Any) -> list[list[Any]]:
    answer = (
        build_service(emu.config())
        .spreadsheets()
        .values()
        .get(spreadsheetId="sheet-1", range=rng, **params)
        .execute()
    )
    return answer.get("values", [])  # type: ignore[no-any-return]


def put(emu: Emulator, rng: str, values: list[list[Any]], option: str) -> None:
    build_service(emu.config()).spreadsheets().values().update(
        spreadsheetId="sheet-1", range=rng, valueInputOption=option, body={"values": values}
    ).execute()


def batch_update(emu: Emulator, *requests: dict[str, Any]) -> None:
    build_service(emu.config()).spreadsheets().batchUpdate(
        spreadsheetId="sheet-1", body={"requests": list(requests)}
    ).execute()


def formats(emu: Emulator) -> dict[str, Any]:
    data = json.loads(emu.path.read_text(encoding="utf-8"))
    return data["spreadsheets"]["sheet-1"]["formats"]["Leads"]  # type: ignore[no-any-return]


def test_a_date_time_cell_shows_its_format_and_reads_as_its_serial(emu: Emulator) -> None:
    # FORMATTED_VALUE: "Values will be calculated & formatted in the response according to the
    # cell's formatting"; the same number in a cell without a date format stays a number.
    assert get(emu, "Leads!B2:C2") == [["2026-10-04 15:17:00", "46299.636805556"]]
    assert get(emu, "Leads!B2:C2", valueRenderOption="UNFORMATTED_VALUE") == [[CREATED, CREATED]]
    assert get(emu, "Leads!B2:C2", valueRenderOption="FORMULA") == [[CREATED, CREATED]]
    # DateTimeRenderOption FORMATTED_STRING: date cells "as strings in their given number
    # format"; other numbers stay numbers.
    assert get(
        emu,
        "Leads!B2:C2",
        valueRenderOption="UNFORMATTED_VALUE",
        dateTimeRenderOption="FORMATTED_STRING",
    ) == [["2026-10-04 15:17:00", CREATED]]


def test_user_entered_dates_become_serials_with_a_date_format_raw_keeps_text(
    emu: Emulator,
) -> None:
    put(
        emu,
        "Leads!D2:G2",
        [["2026-10-05 09:30", "2026-10-05", "10/5/2026", "2026-02-30"]],
        "USER_ENTERED",
    )
    put(emu, "Leads!H2", [["2026-10-05"]], "RAW")
    assert get(emu, "Leads!D2:H2") == [
        ["2026-10-05 09:30:00", "2026-10-05", "10/5/2026", "2026-02-30", "2026-10-05"]
    ]
    unformatted = get(emu, "Leads!D2:H2", valueRenderOption="UNFORMATTED_VALUE")
    day = serial(datetime(2026, 10, 5))
    assert unformatted == [[pytest.approx(day + 9.5 / 24), day, day, "2026-02-30", "2026-10-05"]]
    stored = formats(emu)
    assert stored["D2"] == DATE_TIME
    assert stored["E2"] == {"type": "DATE", "pattern": "yyyy-mm-dd"}
    assert stored["F2"]["type"] == "DATE"
    assert "G2" not in stored and "H2" not in stored
    # A number typed into a date cell keeps the cell's format, as Sheets keeps it.
    put(emu, "Leads!B2", [[CREATED + 1]], "USER_ENTERED")
    assert get(emu, "Leads!B2") == [["2026-10-05 15:17:00"]]


def test_typed_dates_follow_the_spreadsheet_locale() -> None:
    us = typed_date("4/10/2026", "en_US")
    de = typed_date("4.10.2026", "de_DE")
    gb = typed_date("4/10/2026", "en_GB")
    assert us is not None and de is not None and gb is not None
    assert us[0] == serial(datetime(2026, 4, 10))
    assert de[0] == gb[0] == serial(datetime(2026, 10, 4))
    assert typed_date("2026-12-03T10:15:00+05:30") is None  # an ISO stamp stays text
    assert format_serial(serial(datetime(2026, 10, 4, 15, 17)), "d mmm yyyy h:mm am/pm", {}) == (
        "4 Oct 2026 3:17 PM"
    )


def test_a_plain_text_cell_keeps_a_typed_date_as_text(emu: Emulator) -> None:
    # repeatCell with userEnteredFormat.numberFormat sets the format; TEXT ("@") keeps what is
    # typed as typed, as Format → Number → Plain text does.
    batch_update(
        emu,
        {
            "repeatCell": {
                "range": {"sheetId": 0, "startRowIndex": 1, "endRowIndex": 3,
                          "startColumnIndex": 3, "endColumnIndex": 4},
                "cell": {"userEnteredFormat": {"numberFormat": {"type": "TEXT", "pattern": "@"}}},
                "fields": "userEnteredFormat.numberFormat",
            }
        },
    )  # fmt: skip
    put(emu, "Leads!D2:D3", [["2026-10-05 09:30"], ["0042"]], "USER_ENTERED")
    assert get(emu, "Leads!D2:D3", valueRenderOption="UNFORMATTED_VALUE") == [
        ["2026-10-05 09:30"],
        ["0042"],
    ]
    assert formats(emu)["D3"] == {"type": "TEXT", "pattern": "@"}


def test_sorting_moves_each_cell_format_with_its_row(emu: Emulator) -> None:
    put(emu, "Leads!A3:B3", [["Customer", 46000]], "RAW")  # no format: a plain number
    batch_update(
        emu,
        {
            "sortRange": {
                "range": {"sheetId": 0, "startRowIndex": 1, "endRowIndex": 3},
                "sortSpecs": [{"dimensionIndex": 0, "sortOrder": "ASCENDING"}],
            }
        },
    )
    assert get(emu, "Leads!A2:B3") == [["Customer", "46000"], ["New", "2026-10-04 15:17:00"]]
    assert formats(emu) == {"B3": DATE_TIME}
