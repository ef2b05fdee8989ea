"""POST /api/edits with an edit event's rows (issue 13 "edits by what changed", issue 14 "an
edit costs what it changes"), through the real Flask app, the Sheets emulator and the fake
Meta: the backend decides which rows really changed, records those at the edit's time for the
right lead whatever happened to the rows since, sends them with one read of those rows, and
never loses an edit to a busy tab."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from flask.testing import FlaskClient

from sheet_bridge.sheets.client import SheetsClient
from sheet_bridge.sync.run import Bridge
from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_SECRET, WORLD_SHEET, World, lead_row
from tests.ledger_backends import lose, run_sql
from tests.web.test_api import em

MakeWorld = Callable[..., World]
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}


def client_of(bridge: Bridge) -> FlaskClient:
    app = create_app(bridges=[bridge], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})
    return app.test_client()


def synced(world: World) -> FlaskClient:
    """The app over `world`, after a first sync (every lead has its CAPI Key)."""
    client = client_of(world.bridge())
    first = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    assert first.status_code == 200, first.get_data(as_text=True)
    return client


def edit_event(at: datetime, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"spreadsheet_id": WORLD_SHEET, "tab": "Leads", "at": at.isoformat(), "rows": rows}


def one_row_form(row: int, old: str, new: str, at: datetime) -> dict[str, Any]:
    """The body add-ons sent before edit events carried rows."""
    return {
        "spreadsheet_id": WORLD_SHEET,
        "tab": "Leads",
        "row": row,
        "old_value": old,
        "new_value": new,
        "at": at.isoformat(),
    }


def as_the_add_on_sees(world: World, numbers: list[int]) -> list[dict[str, Any]]:
    """The rows an edit event covers, as the add-on reads them: status now, CAPI Key or null."""
    rows = world.rows()
    status = rows[0].index("Lead Status")
    key = rows[0].index("CAPI Key") if "CAPI Key" in rows[0] else None  # never synced: none
    out = []
    for n in numbers:
        row = rows[n - 1]
        cell = row[key] if key is not None and key < len(row) else ""
        out.append({"row": n, "status": str(row[status]), "key": cell or None})
    return out


def edit_transitions(world: World) -> list[tuple[str, str, float]]:
    """(lead key, status, at) of every status change the ledger recorded from an edit."""
    rows = run_sql(
        world.config.ledger_location({}),
        "SELECT lead_key, status, at FROM transitions WHERE source = 'edit' ORDER BY id",
    )
    return [(k, s, a) for k, s, a in rows]


def sheet_requests(world: World) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = httpx.get(world.sheets_url + "/_emulator/requests").json()[
        "requests"
    ]
    return log


def reset_sheet_requests(world: World) -> None:
    httpx.post(world.sheets_url + "/_emulator/stats/reset").raise_for_status()


def rows_in(a1: str) -> range:
    """The sheet rows an A1 range such as `Leads!J7:N9` covers."""
    m = re.fullmatch(r".*![A-Z]+(\d+)(?::[A-Z]+(\d+))?", a1)
    assert m is not None, a1
    return range(int(m.group(1)), int(m.group(2) or m.group(1)) + 1)


def swap_rows(world: World, a: int, b: int) -> None:
    """What a sort does to two rows: each takes the other's cells, CAPI columns included."""
    rows = world.rows()
    width = max(len(rows[a - 1]), len(rows[b - 1]))
    cells: list[tuple[int, int, object]] = []
    for here, there in ((a, b), (b, a)):
        source = rows[there - 1]
        cells += [(here, c, source[c] if c < len(source) else "") for c in range(width)]
    SheetsClient(world.config.sheets).write_cells(cells)


def test_a_paste_of_30_rows_where_3_statuses_changed_records_and_sends_only_those_3(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(
        [lead_row(i, ("New", "MQL", "SQL")[i % 3], now=world_now) for i in range(30)]
    )
    client = synced(world)
    sent_before = len(world.meta_events())
    # Rows 2..31 pasted over; only three of them got a new status (leads 3, 15 and 24).
    world.edit_cells(
        [(5, "Lead Status", "MQL"), (17, "Lead Status", "SQL"), (26, "Lead Status", "Opportunity")]
    )
    at = world_now - timedelta(minutes=3)

    response = client.post(
        "/api/edits",
        json=edit_event(at, as_the_add_on_sees(world, list(range(2, 32)))),
        headers=AUTH,
    )

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["changed"] == [5, 17, 26]
    assert body["unchanged"] == [n for n in range(2, 32) if n not in (5, 17, 26)]
    assert body["moved"] == []
    assert body["queued"] is False
    assert [r["row"] for r in body["rows"]] == [5, 17, 26]
    assert body["message"].startswith("3 status changes recorded; ")
    recorded = edit_transitions(world)
    assert [(s, a) for _, s, a in recorded] == [
        ("MQL", at.timestamp()),
        ("SQL", at.timestamp()),
        ("Opportunity", at.timestamp()),
    ]
    new = world.meta_events()[sent_before:]
    assert {e["user_data"]["em"] for e in new} == {em(3), em(15), em(24)}
    assert {e["event_time"] for e in new} == {int(at.timestamp())}
    assert body["events_sent"] == len(new)


def test_an_edit_whose_keyed_row_was_sorted_away_before_the_call_is_refused_for_that_key(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """Issue 20: a key present in no row the backend read is refused, not recorded (it may
    be anything a caller typed); the next pass finds the lead wherever it is and dates its
    change by the pass rules."""
    world = make_world([lead_row(1, "New", now=world_now), lead_row(2, "New", now=world_now)])
    client = synced(world)
    edited = as_the_add_on_sees(world, [2])  # lead 1, at row 2 when its trigger fired …
    edited[0]["status"] = "MQL"
    world.edit_cells([(2, "Lead Status", "MQL")])
    swap_rows(world, 2, 3)  # … and a sort moved it to row 3 before the call landed
    key_1 = edited[0]["key"]
    assert as_the_add_on_sees(world, [2])[0]["key"] != key_1  # lead 2 sits at row 2 now
    sent_before = len(world.meta_events())
    at = world_now - timedelta(minutes=1)

    response = client.post("/api/edits", json=edit_event(at, edited), headers=AUTH)

    body = response.get_json()
    assert response.status_code == 200, body
    assert (body["changed"], body["unchanged"], body["refused"]) == ([], [], [2])
    assert edit_transitions(world) == []  # never lead 2's, and not lead 1's from a stray key
    assert world.meta_events()[sent_before:] == []
    again = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    assert again.status_code == 200
    new = world.meta_events()[sent_before:]
    assert [(e["user_data"]["em"], e["event_name"]) for e in new] == [(em(1), "QualifiedLead")]
    assert new[0]["event_time"] == int(world_now.timestamp())  # seen by the pass: a scan


def test_an_old_one_row_edit_whose_row_was_sorted_away_is_never_given_to_the_lead_now_there(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now), lead_row(2, "New", now=world_now)])
    client = synced(world)
    world.edit_cells([(2, "Lead Status", "MQL")])
    swap_rows(world, 2, 3)
    at = world_now - timedelta(minutes=1)
    response = client.post("/api/edits", json=one_row_form(2, "New", "MQL", at), headers=AUTH)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert edit_transitions(world) == []  # row 2 holds lead 2 at New now: nothing is its
    assert response.get_json()["moved"] == [2]


@pytest.mark.parametrize("form", ["rows", "one row"])
def test_an_edit_that_leaves_the_status_as_it_was_does_nothing(
    make_world: MakeWorld, world_now: datetime, form: str
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now)])
    client = synced(world)
    requests_before = world.meta_stats()["requests"]
    reset_sheet_requests(world)
    at = world_now - timedelta(minutes=1)
    if form == "rows":
        body = edit_event(at, as_the_add_on_sees(world, [2]))
    else:
        body = one_row_form(2, "MQL", "MQL", at)

    response = client.post("/api/edits", json=body, headers=AUTH)

    answer = response.get_json()
    assert response.status_code == 200, answer
    assert edit_transitions(world) == []
    assert world.meta_stats()["requests"] == requests_before
    assert world.sheets_stats() == {"values.batchGet": 1, "total": 1}  # no write
    assert (answer["changed"], answer["unchanged"], answer["moved"]) == ([], [2], [])
    assert answer["rows"] == []


def test_an_edit_while_a_pass_runs_is_answered_at_once_then_sent_once_with_no_other_call(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now), lead_row(2, "New", now=world_now)])
    client = synced(world)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        assert release.wait(30)

    running = world.bridge(before_write_back=hold)
    sent_before = len(world.meta_events())
    failures: list[BaseException] = []

    def full_pass() -> None:
        try:
            running.sync()
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    thread = threading.Thread(target=full_pass)
    thread.start()
    try:
        assert inside.wait(30)  # the pass read the sheet and holds the tab
        world.edit_cells([(3, "Lead Status", "SQL")])
        at = world_now - timedelta(minutes=1)
        response = client.post(
            "/api/edits", json=edit_event(at, as_the_add_on_sees(world, [3])), headers=AUTH
        )
    finally:
        release.set()
        thread.join(30)

    answer = response.get_json()
    assert response.status_code == 200, answer
    assert answer["changed"] == [3]
    assert answer["sending"] is True  # answered while the tab was held, not after
    assert "sending in the background" in answer["message"]
    assert failures == []
    # Issue 20: the edit's send takes the tab once the pass lets go, with no further call.
    deadline = time.monotonic() + 10
    while len(world.meta_events()) - sent_before < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    first = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    assert first.status_code == 200
    new = world.meta_events()[sent_before:]
    assert [(e["user_data"]["em"], e["event_name"]) for e in new] == [
        (em(2), "QualifiedLead"),
        (em(2), "Schedule"),
    ]
    assert {e["event_time"] for e in new} == {int(at.timestamp())}


def test_the_old_one_row_form_still_records_sends_and_answers_its_row(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = synced(world)
    world.edit_cells([(2, "Lead Status", "MQL")])
    at = world_now - timedelta(minutes=1)
    response = client.post("/api/edits", json=one_row_form(2, "New", "MQL", at), headers=AUTH)

    answer = response.get_json()
    assert response.status_code == 200, answer
    assert (answer["changed"], answer["queued"]) == ([2], False)
    assert answer["row"]["row"] == 2
    assert answer["row"]["outcome"] == "sent"
    assert [(e["event_name"], e["event_time"]) for e in world.meta_events()[-1:]] == [
        ("QualifiedLead", int(at.timestamp()))
    ]


@pytest.mark.parametrize("form", ["rows", "one row"])
@pytest.mark.parametrize("leads", [10, 1500])
def test_an_edit_costs_one_read_of_its_rows_and_the_writes_whatever_the_sheet_size(
    make_world: MakeWorld, world_now: datetime, leads: int, form: str
) -> None:
    world = make_world([lead_row(i, "New", now=world_now) for i in range(1, leads + 1)])
    client = synced(world)
    world.edit_cells([(7, "Lead Status", "MQL")])
    reset_sheet_requests(world)
    at = world_now - timedelta(minutes=1)
    if form == "rows":
        body = edit_event(at, as_the_add_on_sees(world, [7]))
    else:
        body = one_row_form(7, "New", "MQL", at)

    response = client.post("/api/edits", json=body, headers=AUTH)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert world.sheets_stats() == {
        "values.batchGet": 2,
        "values.batchUpdate": 1,
        "values.append": 1,
        "total": 4,
    }
    assert response.get_json()["changed"] == [7]
    requests = sheet_requests(world)
    assert [r["method"] for r in requests] == [
        "values.batchGet",
        "values.batchGet",
        "values.batchUpdate",
        "values.append",
    ]
    assert requests[0]["ranges"] == ["Leads!1:1", "Leads!7:7"]
    # The CAPI Log's lines below the ledger's count only (docs/operations.md, "Restoring a
    # ledger"): none since the sync, whatever the Log's size (its header and one line a lead).
    assert requests[1]["ranges"] == ["'CAPI Log'!1:1", f"'CAPI Log'!A{leads + 2}:I"]
    # The write-back touches the edited row's bridge cells only.
    assert {n for r in requests[2]["ranges"] for n in rows_in(r)} == {7}


def test_an_edit_of_a_row_the_ledger_has_no_record_of_sending_is_kept_and_not_sent(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """The ledger-behind check on an edit's rows: the row says Lead was sent, the ledger (lost,
    replaced by an empty one) does not know it; sending could send it twice."""
    world = make_world([lead_row(1, "New", now=world_now), lead_row(2, "New", now=world_now)])
    synced(world)
    lose(world.config.ledger_location({}), "missing")
    client = client_of(world.bridge())
    sent_before = len(world.meta_events())
    world.edit_cells([(2, "Lead Status", "MQL")])
    at = world_now - timedelta(minutes=1)
    typed = as_the_add_on_sees(world, [2])
    typed[0]["old_status"] = "New"  # typed: the ledger (empty now) takes it as a change

    response = client.post("/api/edits", json=edit_event(at, typed), headers=AUTH)

    answer = response.get_json()
    assert response.status_code == 200, answer
    assert answer["changed"] == [2]
    assert "sheet-bridge adopt" in answer["message"]
    assert answer["rows"] == []
    assert world.meta_events()[sent_before:] == []
    assert [s for _, s, _ in edit_transitions(world)] == ["MQL"]  # the edit is kept


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([], "rows: Value error, 0 rows; send 1 to 500 rows per edit event"),
        (
            [{"row": n, "status": "MQL", "key": None} for n in range(2, 503)],
            "rows: Value error, 501 rows; send 1 to 500 rows per edit event",
        ),
        (
            [{"row": 4, "status": "MQL", "key": None}, {"row": 4, "status": "SQL", "key": None}],
            "rows: Value error, row 4 is listed twice (rows.0 and rows.1); send each edited "
            "row once",
        ),
        (
            [{"row": 1, "status": "Lead Status", "key": None}],
            "rows.0.row: Value error, 1 is not a data row; send the sheet row number of each "
            "edited row (2 to 10,000,000: row 1 is the header)",
        ),
        ([{"row": 2, "key": None}], "rows.0.status: Field required"),
        ([{"row": 2, "status": "MQL", "key": 7}], "rows.0.key: Input should be a valid string"),
        ([{"row": 2, "status": "MQL", "colour": "red"}], "rows.0.colour: Extra inputs"),
    ],
    ids=["none", "501", "twice", "header", "no-status", "key-number", "unknown-field"],
)
def test_an_edit_event_body_that_cannot_be_used_is_400_saying_which_row_and_what_to_do(
    make_world: MakeWorld, world_now: datetime, rows: list[dict[str, Any]], words: str
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = client_of(world.bridge())

    response = client.post("/api/edits", json=edit_event(world_now, rows), headers=AUTH)

    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith(words), error["message"]
    assert world.sheets_stats()["total"] == 0  # refused before the sheet was read
    assert edit_transitions(world) == []
