"""SheetsClient through Google's real client against the emulator: reads, writes, retries."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from sheet_bridge.config import LOG_TAB, SheetsConfig
from sheet_bridge.sheets.client import (
    SheetsAccessDenied,
    SheetsClient,
    SheetsError,
    SheetsNotFound,
    SheetsQuotaExceeded,
    SheetsUnavailable,
    _encoded_chunks,
    build_service,
)

if TYPE_CHECKING:
    from conftest import Emulator


# -- reading -------------------------------------------------------------------------------


def test_read_table_gives_header_ragged_rows_title_and_time_zone(emulator: Emulator) -> None:
    table = emulator.client().read_table()
    assert table.title == "CRM leads"
    assert table.tab == "Leads"
    assert table.time_zone == "Asia/Kolkata"
    assert table.header == ["Lead Status", "Email", "Leadgen ID"]
    assert table.rows == [["MQL", "a@example.com", "1234567890123456"], ["New", "b@example.com"]]
    assert table.first_row == 2
    assert table.cell(1, 2) is None


def test_read_table_gives_the_spreadsheets_locale(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    data = sheet_data()
    data["spreadsheets"]["sheet-1"]["locale"] = "de_DE"
    assert start_emulator(data).client().read_table().locale == "de_DE"


def test_steady_state_read_is_one_values_get(emulator: Emulator) -> None:
    client = emulator.client()
    client.read_table()
    assert emulator.stats() == {"spreadsheets.get": 1, "values.get": 1, "total": 2}
    emulator.reset_stats()
    client.read_table()
    emulator.client().read_table()  # a new client shares the cached time zone
    assert emulator.stats() == {"values.get": 2, "total": 2}
    assert client.stats == 3


def test_read_rows_reads_the_header_and_those_rows_in_one_batch_get(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    rows = [["Lead Status", "Email"], *([f"S{n}", f"r{n}@x.co"] for n in range(2, 3001))]
    emulator = start_emulator(sheet_data(rows))
    client = emulator.client()
    client.read_table()  # the time zone is cached
    emulator.reset_stats()

    table = client.read_rows([9, 7, 8, 2500, 8])

    assert emulator.stats() == {"values.batchGet": 1, "total": 1}
    log = httpx.get(f"{emulator.url}/_emulator/requests").json()["requests"]
    assert log == [
        {"method": "values.batchGet", "ranges": ["Leads!1:1", "Leads!7:9", "Leads!2500:2500"]}
    ]
    assert table.header == ["Lead Status", "Email"]
    assert table.row_numbers == [7, 8, 9, 2500]
    assert [table.row_number(i) for i in range(4)] == [7, 8, 9, 2500]
    assert table.rows == [
        ["S7", "r7@x.co"],
        ["S8", "r8@x.co"],
        ["S9", "r9@x.co"],
        ["S2500", "r2500@x.co"],
    ]
    assert table.time_zone == "Asia/Kolkata"


def test_read_rows_past_the_end_and_past_the_grid_read_as_empty(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    """Rows deleted since the edit: below the data they are empty; past the grid (1000 rows
    in a new tab) Google refuses the range, and the read is made again without them."""
    emulator = start_emulator(sheet_data([["Lead Status"], ["MQL"], [], ["SQL"]]))
    client = emulator.client()

    table = client.read_rows([2, 3, 4, 5, 1200])

    assert table.row_numbers == [2, 3, 4, 5, 1200]
    assert table.rows == [["MQL"], [], ["SQL"], [], []]
    assert emulator.stats()["values.batchGet"] == 2


def test_500_scattered_rows_are_still_one_batch_get(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    """500 ranges (the header joins row 2's) make an address of ~15 KB: googleapiclient
    sends it as a POST with X-HTTP-Method-Override: GET, which Google (and the emulator) serve
    as the GET."""
    rows = [["Lead Status"], *([f"S{n}"] for n in range(2, 2002))]
    emulator = start_emulator(sheet_data(rows))
    client = emulator.client()
    client.read_table()
    emulator.reset_stats()
    wanted = list(range(2, 2002, 4))  # 500 rows, none next to another

    table = client.read_rows(wanted)

    assert emulator.stats() == {"values.batchGet": 1, "total": 1}
    (request,) = httpx.get(f"{emulator.url}/_emulator/requests").json()["requests"]
    assert request["ranges"][:2] == ["Leads!1:2", "Leads!6:6"]
    assert len(request["ranges"]) == 500
    assert table.row_numbers == wanted
    assert table.rows == [[f"S{n}"] for n in wanted]


def test_text_lead_id_keeps_every_digit_and_numeric_id_stays_a_number(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    emulator = start_emulator(
        sheet_data([["Leadgen ID"], ["1234567890123456"], [1234567890123456], ["0012"]])
    )
    rows = emulator.client().read_table().rows
    assert rows[0] == ["1234567890123456"]
    assert isinstance(rows[1][0], int | float)
    assert not isinstance(rows[1][0], bool)
    assert rows[2] == ["0012"]


def test_a_whole_tab_reads_as_googleapiclient_would_parse_it(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    # read_table parses the answer itself, its bytes let go first (sheets/client.py
    # _execute_large): the same rows as googleapiclient's own execute gives, any text included.
    rows = [["Name", "Note"], ["Zoë Ødegård", "日本語 \u2028 😀"], ['a"b\\c', 1.5], [True, None]]
    emulator = start_emulator(sheet_data(rows))
    client = emulator.client()
    table = client.read_table()
    answer = client._values_api.get(
        spreadsheetId=client.config.spreadsheet_id,
        range="Leads",
        valueRenderOption="UNFORMATTED_VALUE",
        dateTimeRenderOption="SERIAL_NUMBER",
        majorDimension="ROWS",
    ).execute()
    assert [table.header, *table.rows] == answer["values"]
    assert table.rows[0] == ["Zoë Ødegård", "日本語 \u2028 😀"]


def test_empty_tab_reads_as_no_header_and_no_rows(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    table = start_emulator(sheet_data([])).client().read_table()
    assert table.header == []
    assert table.rows == []


def test_tab_named_with_an_apostrophe_reads_and_writes(
    start_emulator: Callable[..., Emulator], sheet_data: Callable[..., Any]
) -> None:
    emulator = start_emulator(sheet_data([["Status"], ["MQL"]], tab="Bob's Leads"))
    client = emulator.client(tab="Bob's Leads")
    assert client.read_table().rows == [["MQL"]]
    client.write_cells([(1, 1, "CAPI Status"), (2, 1, "sent")])
    assert emulator.tab("Bob's Leads") == [["Status", "CAPI Status"], ["MQL", "sent"]]


# -- writing -------------------------------------------------------------------------------


def test_write_cells_is_one_batch_update_with_adjacent_cells_grouped(emulator: Emulator) -> None:
    client = emulator.client()
    written = client.write_cells(
        [
            (1, 3, "CAPI Key"),  # header cells for new bridge columns, in the same call
            (1, 4, "CAPI Status"),
            (2, 3, "k1"),
            (2, 4, "sent"),
            (3, 4, "failed"),
            (3, 6, "far"),
        ]
    )
    assert written == 6
    assert emulator.stats() == {"values.batchUpdate": 1, "total": 1}
    assert client.stats == 1
    assert emulator.tab() == [
        ["Lead Status", "Email", "Leadgen ID", "CAPI Key", "CAPI Status"],
        ["MQL", "a@example.com", "1234567890123456", "k1", "sent"],
        ["New", "b@example.com", "", "", "failed", "", "far"],
    ]


def test_write_cells_raw_keeps_formula_like_text_as_text(emulator: Emulator) -> None:
    emulator.client().write_cells([(2, 5, "=SUM(A1)"), (2, 6, "'quoted"), (2, 7, "0012")])
    assert emulator.tab()[1][5:] == ["=SUM(A1)", "'quoted", "0012"]


def test_write_cells_with_nothing_makes_no_call(emulator: Emulator) -> None:
    client = emulator.client()
    assert client.write_cells([]) == 0
    assert client.stats == 0
    assert emulator.stats() == {"total": 0}


def test_write_cells_none_clears_the_cell(emulator: Emulator) -> None:
    emulator.client().write_cells([(2, 1, None)])
    assert emulator.tab()[1] == ["MQL", "", "1234567890123456"]


def test_write_cells_refuses_values_a_sheet_cannot_hold(emulator: Emulator) -> None:
    with pytest.raises(TypeError, match=r"cell \(2, 1\): dict"):
        emulator.client().write_cells([(2, 1, {"a": 1})])


@pytest.mark.parametrize("row, col", [(0, 1), (2, -1)])
def test_write_cells_refuses_a_cell_outside_the_sheet(
    emulator: Emulator, row: int, col: int
) -> None:
    with pytest.raises(ValueError, match=rf"cell \({row}, {col}\) is outside the sheet"):
        emulator.client().write_cells([(2, 1, "fine"), (row, col, "x")])
    assert emulator.stats() == {"total": 0}  # nothing written, not even the fine cell


def test_write_cells_keeps_numbers_and_booleans_as_they_are(emulator: Emulator) -> None:
    emulator.client().write_cells([(2, 4, 5), (2, 5, 2.5), (2, 6, True), (2, 7, "x")])
    assert emulator.tab()[1][4:8] == [5, 2.5, True, "x"]


def test_write_too_large_for_one_request_is_split_under_2_mb(emulator: Emulator) -> None:
    client = emulator.client()
    cells = [(row, 3, "x" * 100) for row in range(2, 20_002)]  # ~2.8 MB of JSON
    assert client.write_cells(cells) == 20_000
    assert emulator.stats()["values.batchUpdate"] == 2
    assert len(emulator.tab()) == 20_001
    assert emulator.tab()[-1][3] == "x" * 100


def test_size_split_counts_the_ascii_escapes_the_client_sends(emulator: Emulator) -> None:
    # googleapiclient sends json.dumps' default ASCII escapes: an emoji is 12 bytes on the
    # wire, not 4. ~1.3 MB as UTF-8 but ~4 MB as sent: must be split, or Google refuses it.
    client = emulator.client()
    cells = [(row, 3, "🙂" * 40) for row in range(2, 8_002)]
    assert client.write_cells(cells) == 8_000
    assert emulator.stats()["values.batchUpdate"] >= 2
    assert emulator.tab()[-1][3] == "🙂" * 40


def test_a_cell_given_twice_takes_the_later_value_and_counts_once(emulator: Emulator) -> None:
    client = emulator.client()
    assert client.write_cells([(2, 4, "first"), (2, 5, "b"), (2, 4, "second")]) == 2
    assert emulator.tab()[1][4:6] == ["second", "b"]


def test_building_the_service_skips_its_66_mb_of_docstrings(emulator: Emulator) -> None:
    # googleapiclient renders every method's docstring from the discovery schema (~66 MB for
    # Sheets; googleapis/google-api-python-client#2779). build_service blanks that renderer on
    # its own service; if a library release moves it, this fails and says so.
    import tracemalloc

    tracemalloc.start()
    try:
        service = build_service(emulator.config())
        service.spreadsheets().values()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 15_000_000, f"building the Sheets service took {peak / 1e6:.0f} MB"


def test_concurrent_writes_from_threads_lose_nothing(emulator: Emulator) -> None:
    def writer(col: int) -> None:
        client = emulator.client()  # one client per thread: httplib2 is not thread-safe
        for row in range(1, 21):
            client.write_cells([(row, col, f"t{col}r{row}")])

    threads = [threading.Thread(target=writer, args=(col,)) for col in range(3, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = emulator.tab()
    for col in range(3, 11):
        for row in range(1, 21):
            assert rows[row - 1][col] == f"t{col}r{row}"
    assert emulator.file_data() == emulator.data()


# -- the log tab ---------------------------------------------------------------------------


def test_append_log_creates_the_log_tab_with_its_header_then_appends(emulator: Emulator) -> None:
    client = emulator.client()
    header = ["At", "Lead", "Outcome"]
    client.append_log([["2026-01-01", "L1", "=sent"]], header)
    assert emulator.tab(LOG_TAB) == [header, ["2026-01-01", "L1", "=sent"]]
    assert emulator.stats()["spreadsheets.batchUpdate"] == 1
    emulator.reset_stats()
    client.append_log([["2026-01-02", "L2", "failed"]], header)
    assert emulator.stats() == {"values.append": 1, "total": 1}
    assert emulator.tab(LOG_TAB)[-1] == ["2026-01-02", "L2", "failed"]
    assert len(emulator.tab(LOG_TAB)) == 3


def test_append_log_says_where_the_log_ends_and_a_read_after_a_line_reads_only_below_it(
    emulator: Emulator,
) -> None:
    """The append's `updates.updatedRange` ends at the Log's last line
    (https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values/append);
    `'CAPI Log'!A4:B` reads from row 4 down to the last row with data, in one call, and a
    row past the grid is refused by Google ("exceeds grid limits"): no line, not an error."""
    client = emulator.client()
    header = ["At", "Lead"]
    assert client.append_log([["t1", "L1"], ["t2", "L2"]], header) == 3
    assert client.append_log([["t3", "L3"]], header) == 4
    emulator.reset_stats()

    assert client.read_log_after(3, 2) == (header, [["t3", "L3"]])
    assert emulator.stats() == {"values.batchGet": 1, "total": 1}
    assert client.read_log_after(4, 2) == (header, [])
    assert client.read_log_after(5000, 2) == ([], [])


def test_append_log_with_no_rows_makes_no_call(emulator: Emulator) -> None:
    emulator.client().append_log([], ["At"])
    assert emulator.stats() == {"total": 0}


# -- retries and errors --------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_error_is_retried_with_backoff_then_succeeds(
    emulator: Emulator, status: int
) -> None:
    client = emulator.client()
    client.read_table()
    emulator.fault(status, count=2)
    assert client.read_table().header[0] == "Lead Status"
    assert len(emulator.sleeps) == 2
    assert 1 <= emulator.sleeps[0] < emulator.sleeps[1]
    assert client.stats == 2 + 3


def test_quota_still_exceeded_after_every_attempt_says_so_in_words(emulator: Emulator) -> None:
    client = SheetsClient(emulator.config(), sleep=emulator.sleeps.append, max_attempts=3)
    client.read_table()
    emulator.fault(429, count=10)
    with pytest.raises(SheetsQuotaExceeded, match=r"quota exceeded .* wait a minute"):
        client.read_table()
    assert client.stats == 2 + 3
    assert len(emulator.sleeps) == 2


def test_server_failing_every_attempt_is_unavailable(emulator: Emulator) -> None:
    client = SheetsClient(emulator.config(), sleep=emulator.sleeps.append, max_attempts=2)
    emulator.fault(500, count=5)
    with pytest.raises(SheetsUnavailable, match="HTTP 500 after 2 tries"):
        client.read_table()


def test_unreachable_endpoint_is_unavailable_after_retries(tmp_path: Path) -> None:
    config = SheetsConfig(
        spreadsheet_id="s", api_endpoint="http://127.0.0.1:9", credentials="anonymous"
    )
    sleeps: list[float] = []
    client = SheetsClient(config, sleep=sleeps.append, max_attempts=2)
    with pytest.raises(SheetsUnavailable, match=r"Could not reach the Sheets API at http://127"):
        client.read_table()
    assert len(sleeps) == 1


def test_403_names_the_service_account_and_says_to_share_the_sheet(
    emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "key.json").write_text(
        json.dumps({"client_email": "bridge@p.iam.gserviceaccount.com"})
    )
    config = emulator.config(credentials="service_account", service_account_file="key.json")
    service = build_service(emulator.config())  # the emulator needs no real token
    client = SheetsClient(config, service, sleep=emulator.sleeps.append, base_dir=tmp_path)
    emulator.fault(403)
    with pytest.raises(SheetsAccessDenied) as err:
        client.read_table()
    assert str(err.value) == (
        "The service account bridge@p.iam.gserviceaccount.com cannot open spreadsheet sheet-1: "
        "share the spreadsheet with bridge@p.iam.gserviceaccount.com (Editor)"
    )
    assert emulator.sleeps == []  # 403 is not retried


def test_unknown_spreadsheet_says_which_and_where_to_find_the_id(emulator: Emulator) -> None:
    with pytest.raises(
        SheetsNotFound, match="Spreadsheet nope was not found: check spreadsheet_id"
    ):
        emulator.client(spreadsheet_id="nope").read_table()


def test_missing_tab_names_the_tab_and_lists_the_tabs_there_are(emulator: Emulator) -> None:
    with pytest.raises(SheetsNotFound) as err:
        emulator.client(tab="Leads 2026").read_table()
    assert str(err.value).startswith(
        "Spreadsheet sheet-1 has no tab 'Leads 2026'; its tabs are: 'Leads'."
    )


def test_anonymous_credentials_are_refused_outside_loopback() -> None:
    # model_construct skips the config's own check: build_service must refuse on its own.
    config = SheetsConfig.model_construct(
        spreadsheet_id="s",
        tab="Leads",
        api_endpoint=None,
        credentials="anonymous",
        service_account_file=None,
        date_order="day_first",
    )
    with pytest.raises(SheetsError, match="only works with the local emulator"):
        build_service(config)


def test_missing_key_file_is_explained(tmp_path: Path) -> None:
    config = SheetsConfig(spreadsheet_id="s", service_account_file="missing.json")
    with pytest.raises(SheetsError, match=r"key file .*missing.json does not exist"):
        build_service(config, base_dir=tmp_path)


def test_service_account_key_gets_a_token_and_its_calls_reach_the_emulator(
    emulator: Emulator, tmp_path: Path, httpserver: HTTPServer
) -> None:
    # A real service-account key whose token_uri is a loopback server: nothing reaches Google.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    (tmp_path / "key.json").write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "p",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "bridge@p.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": httpserver.url_for("/token"),
            }
        )
    )
    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"access_token": "ya29.test", "expires_in": 3600, "token_type": "Bearer"}
    )
    config = emulator.config(credentials="service_account", service_account_file="key.json")
    client = SheetsClient(config, base_dir=tmp_path)
    assert client.read_table().header[0] == "Lead Status"
    assert len(httpserver.log) == 1
    assert emulator.stats()["values.get"] == 1


@given(
    st.lists(
        st.lists(
            st.one_of(st.text(max_size=40), st.integers(), st.floats(allow_nan=False), st.none()),
            max_size=6,
        ),
        max_size=300,
    ),
    st.sampled_from([1, 30, 200, 2_000, 20_000]),
)
def test_bodies_are_split_as_measuring_row_by_row_would(
    rows: list[list[object]], limit: int
) -> None:
    """`_encoded_chunks` measures rows 64 at a time: the same calls as one json.dumps per row,
    each with the JSON of its rows as json.dumps would write them (the body sent as it is)."""

    def row_by_row() -> list[list[list[object]]]:
        chunks: list[list[list[object]]] = []
        chunk: list[list[object]] = []
        size = 0
        for row in rows:
            n = len(json.dumps(row)) + 1
            if chunk and size + n > limit:
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(row)
            size += n
        return [*chunks, chunk] if chunk else chunks

    chunks = list(_encoded_chunks(iter(rows), limit))
    assert [chunk for chunk, _ in chunks] == row_by_row()
    assert all(f"[{text}]" == json.dumps(chunk) for chunk, text in chunks)
