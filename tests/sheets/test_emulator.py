"""The Sheets emulator answers Google's real client as the Sheets v4 API does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from googleapiclient.errors import HttpError

from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import (
    ApiError,
    GridRange,
    create_emulator,
    format_number,
    parse_range,
)
from sheet_bridge.sheets.client import build_service

if TYPE_CHECKING:
    from conftest import Emulator

Rows = list[list[Any]]


def grid() -> Rows:
    # A 6 x 5 block with holes: row 3 is empty, row 5 stops after column B.
    return [
        ["Status", "Email", "Phone", "City", "Score"],
        ["MQL", "a@x.co", "+91 1", "Pune", 3],
        [],
        ["New", "", "+91 2", "", 7],
        ["SQL", "d@x.co"],
        ["Won", "e@x.co", "+91 5", "Goa", True],
    ]


@pytest.fixture
def emu(start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]) -> Emulator:
    data = sheet_data(grid())
    data["spreadsheets"]["sheet-1"]["sheets"]["Bob's Leads"] = [["Name"], ["Bob"]]
    return start_emulator(data)


def values(emu: Emulator) -> Any:
    return build_service(emu.config()).spreadsheets().values()


def get(emu: Emulator, rng: str, **params: Any) -> dict[str, Any]:
    params.setdefault("valueRenderOption", "UNFORMATTED_VALUE")
    answer: dict[str, Any] = values(emu).get(spreadsheetId="sheet-1", range=rng, **params).execute()
    return answer


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(HttpError) as err:
        call()
    body: dict[str, Any] = json.loads(err.value.content)
    return body


# -- reading ranges ------------------------------------------------------------------------


def test_bare_tab_name_reads_the_whole_tab_with_ragged_rows(emu: Emulator) -> None:
    answer = get(emu, "Leads")
    # Google: the range "indicates the entire requested range", the grid (a new tab: 1000 x 26).
    assert answer["range"] == "Leads!A1:Z1000"
    assert answer["majorDimension"] == "ROWS"
    assert answer["values"] == [
        ["Status", "Email", "Phone", "City", "Score"],
        ["MQL", "a@x.co", "+91 1", "Pune", 3],
        [],
        ["New", "", "+91 2", "", 7],
        ["SQL", "d@x.co"],
        ["Won", "e@x.co", "+91 5", "Goa", True],
    ]


def test_open_range_reads_from_a_row_down_to_the_last(emu: Emulator) -> None:
    answer = get(emu, "Leads!B2:C")
    assert answer["range"] == "Leads!B2:C1000"
    assert answer["values"] == [
        ["a@x.co", "+91 1"],
        [],
        ["", "+91 2"],
        ["d@x.co"],
        ["e@x.co", "+91 5"],
    ]


def test_trailing_empty_cells_and_rows_are_dropped(emu: Emulator) -> None:
    assert get(emu, "Leads!D4:E5")["values"] == [["", 7]]
    assert get(emu, "Leads!C5:E5").get("values") is None


def test_whole_columns_and_whole_rows(emu: Emulator) -> None:
    assert get(emu, "Leads!D:E")["values"] == [
        ["City", "Score"],
        ["Pune", 3],
        [],
        ["", 7],
        [],
        ["Goa", True],
    ]
    assert get(emu, "Leads!2:3") == {
        "range": "Leads!A2:Z3",
        "majorDimension": "ROWS",
        "values": [["MQL", "a@x.co", "+91 1", "Pune", 3]],
    }


def test_empty_range_has_no_values_key(emu: Emulator) -> None:
    answer = get(emu, "Leads!G1:H10")
    assert answer == {"range": "Leads!G1:H10", "majorDimension": "ROWS"}


def test_quoted_tab_name_with_apostrophe_reads_and_answers_quoted(emu: Emulator) -> None:
    answer = get(emu, "'Bob''s Leads'!A1:A")
    assert answer["range"] == "'Bob''s Leads'!A1:A1000"
    assert answer["values"] == [["Name"], ["Bob"]]
    assert get(emu, "'Bob''s Leads'")["values"] == [["Name"], ["Bob"]]


def test_formatted_values_are_strings_as_sheets_shows_them(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    emu = start_emulator(sheet_data([[42, 1234567890123456, True, False, 0.5, "x", 45322.5]]))
    answer = get(emu, "Leads", valueRenderOption="FORMATTED_VALUE")
    assert answer["values"] == [["42", "1.23457E+15", "TRUE", "FALSE", "0.5", "x", "45322.5"]]
    assert get(emu, "Leads")["values"] == [[42, 1234567890123456, True, False, 0.5, "x", 45322.5]]


@pytest.mark.parametrize(
    ("number", "shown"),
    [
        (0, "0"),
        (-7, "-7"),
        (999999999999999, "999999999999999"),
        (1e15, "1E+15"),
        (12.25, "12.25"),
        (-1.5e16, "-1.5E+16"),
    ],
)
def test_numbers_format_like_a_general_cell(number: float, shown: str) -> None:
    assert format_number(number) == shown


def test_columns_major_dimension_transposes(emu: Emulator) -> None:
    answer = get(emu, "Leads!A1:B3", majorDimension="COLUMNS")
    assert answer["values"] == [["Status", "MQL"], ["Email", "a@x.co"]]


def test_batch_get_answers_each_range(emu: Emulator) -> None:
    answer = (
        values(emu)
        .batchGet(spreadsheetId="sheet-1", ranges=["Leads!A1:A2", "'Bob''s Leads'!A2"])
        .execute()
    )
    assert [vr["values"] for vr in answer["valueRanges"]] == [[["Status"], ["MQL"]], [["Bob"]]]


def test_batch_get_answers_as_google_documents_it(emu: Emulator) -> None:
    """Sheets v4 values.batchGet: `ranges` repeated, one value range per range in the order
    asked, each with the entire requested range in A1 (tab quoted as Google quotes it) and its
    values without trailing empty cells or rows; leading empty rows stay (as [])."""
    answer = (
        values(emu)
        .batchGet(
            spreadsheetId="sheet-1",
            ranges=["Leads!5:6", "Leads!1:1", "Leads!3:4", "'Bob''s Leads'!2:2", "Leads!9:12"],
            valueRenderOption="UNFORMATTED_VALUE",
            dateTimeRenderOption="SERIAL_NUMBER",
            majorDimension="ROWS",
        )
        .execute()
    )
    assert answer == {
        "spreadsheetId": "sheet-1",
        "valueRanges": [
            {
                "range": "Leads!A5:Z6",
                "majorDimension": "ROWS",
                "values": [["SQL", "d@x.co"], ["Won", "e@x.co", "+91 5", "Goa", True]],
            },
            {
                "range": "Leads!A1:Z1",
                "majorDimension": "ROWS",
                "values": [["Status", "Email", "Phone", "City", "Score"]],
            },
            {
                "range": "Leads!A3:Z4",
                "majorDimension": "ROWS",
                "values": [[], ["New", "", "+91 2", "", 7]],
            },
            {"range": "'Bob''s Leads'!A2:Z2", "majorDimension": "ROWS", "values": [["Bob"]]},
            {"range": "Leads!A9:Z12", "majorDimension": "ROWS"},  # empty: no values key
        ],
    }
    # The URL carried each range as its own `ranges` parameter.
    log = httpx.get(f"{emu.url}/_emulator/requests").json()["requests"]
    assert log[-1] == {
        "method": "values.batchGet",
        "ranges": ["Leads!5:6", "Leads!1:1", "Leads!3:4", "'Bob''s Leads'!2:2", "Leads!9:12"],
    }


def test_batch_get_formats_values_unless_asked_otherwise(emu: Emulator) -> None:
    answer = values(emu).batchGet(spreadsheetId="sheet-1", ranges=["Leads!2:2"]).execute()
    assert answer["valueRanges"][0]["values"] == [["MQL", "a@x.co", "+91 1", "Pune", "3"]]


@pytest.mark.parametrize(
    ("param", "field", "kind"),
    [
        ("valueRenderOption", "value_render_option", "ValueRenderOption"),
        ("dateTimeRenderOption", "date_time_render_option", "DateTimeRenderOption"),
        ("majorDimension", "major_dimension", "Dimension"),
    ],
)
def test_batch_get_refuses_an_unknown_render_option_as_google_words_it(
    emu: Emulator, param: str, field: str, kind: str
) -> None:
    response = httpx.get(
        f"{emu.url}/v4/spreadsheets/sheet-1/values:batchGet",
        params={"ranges": "Leads!1:1", param: "SIDEWAYS"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f"Invalid value at '{field}' (type.googleapis.com/google.apps.sheets.v4.{kind}), "
        '"SIDEWAYS"'
    )


def test_the_grid_grows_with_a_write_past_its_last_column(emu: Emulator) -> None:
    assert get(emu, "Leads!2:2")["range"] == "Leads!A2:Z2"
    values(emu).update(
        spreadsheetId="sheet-1", range="Leads!AB2", valueInputOption="RAW", body={"values": [["x"]]}
    ).execute()
    assert get(emu, "Leads!2:2")["range"] == "Leads!A2:AB2"
    assert get(emu, "Leads!AB2")["values"] == [["x"]]


def test_a_range_past_the_grid_is_refused_as_google_refuses_it(emu: Emulator) -> None:
    body = error_of(
        lambda: values(emu).batchGet(spreadsheetId="sheet-1", ranges=["Leads!1001:1001"]).execute()
    )
    assert body["error"]["code"] == 400
    assert body["error"]["message"] == (
        "Range ('Leads'!1001:1001) exceeds grid limits. Max rows: 1000, max columns: 26"
    )
    assert get(emu, "Leads!1000:1000") == {"range": "Leads!A1000:Z1000", "majorDimension": "ROWS"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Leads", GridRange("Leads", 0, 0, None, None)),
        ("Leads!A2:F", GridRange("Leads", 1, 0, None, 6)),
        ("Leads!A:C", GridRange("Leads", 0, 0, None, 3)),
        ("Leads!2:5", GridRange("Leads", 1, 0, 5, None)),
        ("Leads!C3", GridRange("Leads", 2, 2, 3, 3, single=True)),
        ("Leads!B7:7", GridRange("Leads", 6, 1, 7, None)),
        ("Leads!F10:A2", GridRange("Leads", 1, 0, 10, 6)),
        ("A1:B2", GridRange("Leads", 0, 0, 2, 2)),  # no tab: the first sheet
        ("'Bob''s Leads'!A1", GridRange("Bob's Leads", 0, 0, 1, 1, single=True)),
        ("'CAPI Log'", GridRange("CAPI Log", 0, 0, None, None)),
    ],
)
def test_a1_ranges_parse_as_sheets_reads_them(text: str, expected: GridRange) -> None:
    assert parse_range(text, ["Leads", "Bob's Leads", "CAPI Log"]) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Nope!A1",
        "Leads!",
        "Leads!A",
        "Leads!A:5",
        "Leads!2:F",
        "Leads!A1:B2:C3",
        "'Leads",
        "Leads!ABCD1",
    ],
)
def test_unreadable_ranges_are_refused_like_google(text: str) -> None:
    with pytest.raises(ApiError) as err:
        parse_range(text, ["Leads"])
    assert err.value.code == 400
    assert err.value.message == f"Unable to parse range: {text}"


def test_unknown_tab_answers_400_unable_to_parse_range_in_googles_envelope(emu: Emulator) -> None:
    body = error_of(lambda: get(emu, "Nope!A1:B2"))
    assert body == {
        "error": {
            "code": 400,
            "message": "Unable to parse range: Nope!A1:B2",
            "status": "INVALID_ARGUMENT",
        }
    }


def test_unknown_spreadsheet_answers_404_not_found(emu: Emulator) -> None:
    body = error_of(lambda: values(emu).get(spreadsheetId="nope", range="Leads").execute())
    assert body["error"] == {
        "code": 404,
        "message": "Requested entity was not found.",
        "status": "NOT_FOUND",
    }


# -- writing -------------------------------------------------------------------------------


def test_raw_update_stores_values_as_given_and_reports_what_changed(emu: Emulator) -> None:
    answer = (
        values(emu)
        .update(
            spreadsheetId="sheet-1",
            range="Leads!F1:H2",
            valueInputOption="RAW",
            body={"values": [["CAPI Status", "Note"], ["sent", "=SUM(A1)", "007"]]},
        )
        .execute()
    )
    assert answer == {
        "spreadsheetId": "sheet-1",
        "updatedRange": "Leads!F1:H2",
        "updatedRows": 2,
        "updatedColumns": 3,
        "updatedCells": 5,
    }
    assert emu.tab()[0][5:] == ["CAPI Status", "Note"]
    assert emu.tab()[1][5:] == ["sent", "=SUM(A1)", "007"]


def test_user_entered_turns_typed_text_into_numbers_and_booleans(emu: Emulator) -> None:
    values(emu).update(
        spreadsheetId="sheet-1",
        range="Leads!A8",
        valueInputOption="USER_ENTERED",
        body={
            "values": [
                ["123", "1.5", "TRUE", "false", "'0123", "=SUM(A1)", "12345678901234567", "hi"]
            ]
        },
    ).execute()
    # "=SUM(A1)" stays text: the emulator does not evaluate formulas.
    assert emu.tab()[7] == [123, 1.5, True, False, "0123", "=SUM(A1)", 1.23456789012346e16, "hi"]


def test_numbers_keep_15_significant_digits_as_in_sheets(emu: Emulator) -> None:
    values(emu).update(
        spreadsheetId="sheet-1",
        range="Leads!A8",
        valueInputOption="RAW",
        body={"values": [[1234567890123456789, 42]]},
    ).execute()
    assert emu.tab()[7] == [1.23456789012346e18, 42]


def test_null_leaves_a_cell_and_empty_string_clears_it(emu: Emulator) -> None:
    values(emu).update(
        spreadsheetId="sheet-1",
        range="Leads!A2:E2",
        valueInputOption="RAW",
        body={"values": [[None, "", None, None, ""]]},
    ).execute()
    assert emu.tab()[1] == ["MQL", "", "+91 1", "Pune"]


def test_writing_past_a_bounded_range_is_refused(emu: Emulator) -> None:
    body = error_of(
        lambda: (
            values(emu)
            .update(
                spreadsheetId="sheet-1",
                range="Leads!A8:B8",
                valueInputOption="RAW",
                body={"values": [["a", "b", "c"]]},
            )
            .execute()
        )
    )
    assert body["error"]["code"] == 400
    assert "tried writing to column [C]" in body["error"]["message"]


def test_batch_update_with_one_bad_range_changes_nothing(emu: Emulator) -> None:
    before = emu.tab()
    error_of(
        lambda: (
            values(emu)
            .batchUpdate(
                spreadsheetId="sheet-1",
                body={
                    "valueInputOption": "RAW",
                    "data": [
                        {"range": "Leads!A2", "values": [["changed"]]},
                        {"range": "Nope!A1", "values": [["x"]]},
                    ],
                },
            )
            .execute()
        )
    )
    assert emu.tab() == before


def test_batch_update_reports_totals_and_each_range(emu: Emulator) -> None:
    answer = (
        values(emu)
        .batchUpdate(
            spreadsheetId="sheet-1",
            body={
                "valueInputOption": "RAW",
                "data": [
                    {"range": "Leads!F2:G2", "values": [["sent", "ok"]]},
                    {"range": "Leads!F4", "values": [["failed"]]},
                ],
            },
        )
        .execute()
    )
    assert answer["totalUpdatedCells"] == 3
    assert answer["totalUpdatedRows"] == 2
    assert answer["totalUpdatedSheets"] == 1
    assert [r["updatedRange"] for r in answer["responses"]] == ["Leads!F2:G2", "Leads!F4"]


def test_value_input_option_is_required(emu: Emulator) -> None:
    body = error_of(
        lambda: (
            values(emu)
            .batchUpdate(
                spreadsheetId="sheet-1", body={"data": [{"range": "Leads!A1", "values": [["x"]]}]}
            )
            .execute()
        )
    )
    assert "'valueInputOption' is required" in body["error"]["message"]


# -- appending and adding tabs ---------------------------------------------------------------


def test_append_inserts_rows_after_the_last_non_empty_row(emu: Emulator) -> None:
    answer = (
        values(emu)
        .append(
            spreadsheetId="sheet-1",
            range="Leads",
            valueInputOption="RAW",
            insertDataOption="INSERT_ROWS",
            body={"values": [["Lost", "f@x.co"], ["Won"]]},
        )
        .execute()
    )
    assert answer["tableRange"] == "Leads!A1:E6"
    assert answer["updates"]["updatedRange"] == "Leads!A7:B8"
    assert answer["updates"]["updatedCells"] == 3
    assert emu.tab()[5:] == [["Won", "e@x.co", "+91 5", "Goa", True], ["Lost", "f@x.co"], ["Won"]]


def test_append_to_an_empty_tab_starts_at_row_1(emu: Emulator) -> None:
    service = build_service(emu.config())
    service.spreadsheets().batchUpdate(
        spreadsheetId="sheet-1",
        body={"requests": [{"addSheet": {"properties": {"title": "CAPI Log"}}}]},
    ).execute()
    answer = (
        service.spreadsheets()
        .values()
        .append(
            spreadsheetId="sheet-1",
            range="'CAPI Log'",
            valueInputOption="RAW",
            insertDataOption="INSERT_ROWS",
            body={"values": [["When", "What"]]},
        )
        .execute()
    )
    assert "tableRange" not in answer
    assert answer["updates"]["updatedRange"] == "'CAPI Log'!A1:B1"
    assert emu.tab("CAPI Log") == [["When", "What"]]


def test_add_sheet_with_a_taken_title_is_refused(emu: Emulator) -> None:
    service = build_service(emu.config())
    body = error_of(
        lambda: (
            service.spreadsheets()
            .batchUpdate(
                spreadsheetId="sheet-1",
                body={"requests": [{"addSheet": {"properties": {"title": "Leads"}}}]},
            )
            .execute()
        )
    )
    assert body["error"]["code"] == 400
    assert 'A sheet with the name "Leads" already exists' in body["error"]["message"]


def test_spreadsheet_metadata_honours_the_fields_mask(emu: Emulator) -> None:
    service = build_service(emu.config())
    answer = (
        service.spreadsheets()
        .get(
            spreadsheetId="sheet-1",
            fields="properties(title,timeZone),sheets.properties(title,sheetId)",
        )
        .execute()
    )
    assert answer == {
        "properties": {"title": "CRM leads", "timeZone": "Asia/Kolkata"},
        "sheets": [
            {"properties": {"sheetId": 0, "title": "Leads"}},
            {"properties": {"sheetId": 1, "title": "Bob's Leads"}},
        ],
    }


def test_spreadsheet_locale_comes_from_the_data_file_and_defaults_to_googles_en_us(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    data = sheet_data()
    data["spreadsheets"]["sheet-1"]["locale"] = "de_DE"
    data["spreadsheets"]["sheet-2"] = {"title": "Plain", "sheets": {"Leads": []}}
    emu = start_emulator(data)
    service = build_service(emu.config())

    def locale(sid: str) -> object:
        answer = service.spreadsheets().get(spreadsheetId=sid, fields="properties/locale")
        return answer.execute()["properties"]["locale"]

    assert locale("sheet-1") == "de_DE"
    assert locale("sheet-2") == "en_US"


# -- the data file ---------------------------------------------------------------------------


def test_data_file_equals_the_emulators_state_after_writes_and_no_temp_file_is_left(
    emu: Emulator,
) -> None:
    v = values(emu)
    v.update(
        spreadsheetId="sheet-1",
        range="Leads!F1",
        valueInputOption="RAW",
        body={"values": [["CAPI Status"]]},
    ).execute()
    v.append(
        spreadsheetId="sheet-1",
        range="'Bob''s Leads'",
        valueInputOption="RAW",
        insertDataOption="INSERT_ROWS",
        body={"values": [["Alice"]]},
    ).execute()
    assert emu.file_data() == emu.data()
    assert emu.file_data()["spreadsheets"]["sheet-1"]["sheets"]["Bob's Leads"] == [
        ["Name"],
        ["Bob"],
        ["Alice"],
    ]
    assert sorted(p.name for p in emu.path.parent.iterdir()) == [emu.path.name]


def test_reads_do_not_rewrite_the_data_file(emu: Emulator) -> None:
    before = emu.path.stat().st_mtime_ns
    text = emu.path.read_text()
    get(emu, "Leads")
    build_service(emu.config()).spreadsheets().get(spreadsheetId="sheet-1").execute()
    assert emu.path.stat().st_mtime_ns == before
    assert emu.path.read_text() == text


def test_missing_data_file_starts_empty_and_is_created_on_first_write(tmp_path: Path) -> None:
    path = tmp_path / "new" / "sheets.json"
    with BackgroundServer(create_emulator(path)) as server:
        assert httpx.get(f"{server.url}/_emulator/data").json() == {"spreadsheets": {}}
        assert not path.exists()
        created = httpx.post(
            f"{server.url}/v4/spreadsheets",
            json={
                "properties": {"title": "Demo", "timeZone": "Asia/Kolkata"},
                "sheets": [{"properties": {"title": "Leads"}}],
            },
        ).json()
        sid = created["spreadsheetId"]
        assert json.loads(path.read_text())["spreadsheets"][sid] == {
            "title": "Demo",
            "timeZone": "Asia/Kolkata",
            "sheets": {"Leads": []},
        }


def test_unreadable_data_file_is_refused_in_words(tmp_path: Path) -> None:
    path = tmp_path / "sheets.json"
    path.write_text(json.dumps({"spreadsheets": {"s": {"sheets": {"Leads": "not rows"}}}}))
    with pytest.raises(ValueError, match="tab 'Leads' of 's' must be a list of rows"):
        create_emulator(path)


# -- test hooks ------------------------------------------------------------------------------


def test_stats_count_calls_by_method_and_reset(emu: Emulator) -> None:
    get(emu, "Leads")
    get(emu, "Leads!A1")
    build_service(emu.config()).spreadsheets().get(spreadsheetId="sheet-1").execute()
    assert emu.stats() == {"values.get": 2, "spreadsheets.get": 1, "total": 3}
    emu.reset_stats()
    assert emu.stats() == {"total": 0}


@pytest.mark.parametrize(
    ("status", "google_status", "message"),
    [
        (429, "RESOURCE_EXHAUSTED", "Quota exceeded"),
        (500, "INTERNAL", "Internal error encountered."),
        (403, "PERMISSION_DENIED", "The caller does not have permission"),
    ],
)
def test_faults_answer_the_next_calls_in_googles_envelope(
    emu: Emulator, status: int, google_status: str, message: str
) -> None:
    emu.fault(status, count=2)
    for _ in range(2):
        body = error_of(lambda: get(emu, "Leads"))
        assert body["error"]["code"] == status
        assert body["error"]["status"] == google_status
        assert body["error"]["message"].startswith(message)
    assert get(emu, "Leads")["values"][0][0] == "Status"


def test_a_fault_for_one_call_leaves_the_others_alone(emu: Emulator) -> None:
    # Two clients read the same tab, one of them stored values: the fault is for that one.
    emu.fault(403, method="values.get", params={"valueRenderOption": "UNFORMATTED_VALUE"})
    build_service(emu.config()).spreadsheets().get(spreadsheetId="sheet-1").execute()
    formatted = get(emu, "Leads", valueRenderOption="FORMATTED_VALUE")
    assert formatted["values"][0][0] == "Status"  # not the fault's call
    assert error_of(lambda: get(emu, "Leads"))["error"]["code"] == 403
    assert get(emu, "Leads")["values"][0][0] == "Status"  # one call only


@pytest.mark.parametrize(
    "spec",
    [{"method": ""}, {"method": 3}, {"params": ["x"]}, {"params": {"majorDimension": 1}}],
)
def test_a_fault_spec_it_cannot_read_is_refused(emu: Emulator, spec: dict[str, Any]) -> None:
    answer = httpx.post(f"{emu.url}/_emulator/faults", json={"status": 403, **spec})
    assert answer.status_code == 400
    assert '"method"' in answer.json()["error"]
    assert get(emu, "Leads")["values"][0][0] == "Status"  # nothing was queued


@pytest.mark.parametrize("first_row", ["Leads!A1", "Leads!A1:E1"])
def test_append_to_the_first_row_finds_the_whole_table_below_it(
    emu: Emulator, first_row: str
) -> None:
    # Google appends "to the next row of the table" found from the range: a range on the
    # header row finds the block below it (A1:E2 here: row 3 is empty) and appends after it,
    # never between the header and the first row.
    before = emu.tab()
    answer = (
        values(emu)
        .append(
            spreadsheetId="sheet-1",
            range=first_row,
            valueInputOption="RAW",
            insertDataOption="INSERT_ROWS",
            body={"values": [["Lost", "f@x.co"]]},
        )
        .execute()
    )
    assert answer["tableRange"] == "Leads!A1:E2"
    assert answer["updates"]["updatedRange"] == "Leads!A3:B3"
    assert emu.tab() == [*before[:2], ["Lost", "f@x.co"], *before[2:]]
