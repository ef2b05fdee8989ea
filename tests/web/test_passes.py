"""Passes that outlive their request (issue 13 "Passes that outlive a request", issue 14
"Passes as records"): a pass longer than the caller's wait answers 202 and its id, any
process reading the same ledger reports its phase and progress, the answer carries counts and
the rows needing attention (paged), and alerts tell everyone what stops events reaching Meta."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from flask.testing import FlaskClient

from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_SECRET, WORLD_SHEET, World, lead_row

MakeWorld = Callable[..., World]
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}
ENV = {"SHEET_BRIDGE_SECRET": WORLD_SECRET}


def client_for(world: World, **bridge_kw: Any) -> FlaskClient:
    return create_app(bridges=[world.bridge(**bridge_kw)], environ=ENV).test_client()


def poll(client: FlaskClient, pass_id: str, until: Callable[[dict[str, Any]], bool]) -> Any:
    deadline = time.monotonic() + 30
    while True:
        body = client.get(f"/api/passes/{pass_id}", headers=AUTH).get_json()
        if until(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def test_a_pass_longer_than_the_wait_answers_202_and_any_process_reports_its_progress(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(i, "MQL", now=world_now) for i in range(1, 7)])
    gate = threading.Event()
    client = client_for(world, before_write_back=lambda: gate.wait(30))
    # A second backend over the same ledger file: another replica, or the next request.
    other = client_for(world)

    started = time.monotonic()
    answer = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET, "wait": 1}, headers=AUTH)
    waited = time.monotonic() - started

    assert answer.status_code == 202, answer.get_json()
    body = answer.get_json()
    assert body["state"] == "running" and body["pass_id"]
    assert waited < 5
    # Meta has the events already; the pass is held before writing the sheet.
    seen = poll(other, body["pass_id"], lambda b: b["phase"] == "send" and b["done"] == 12)
    assert (seen["state"], seen["phase"], seen["done"], seen["total"]) == (
        "running",
        "send",
        12,
        12,
    )
    assert seen["summary"] is None
    status = other.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH).get_json()
    assert status["running_pass"]["pass_id"] == body["pass_id"]

    gate.set()
    done = poll(other, body["pass_id"], lambda b: b["state"] != "running")
    assert done["state"] == "done" and done["phase"] == "done"
    assert done["summary"]["sent"] == 6 and done["summary"]["events_sent"] == 12
    assert len(world.meta_events()) == 12  # each lead's two events, once


def test_the_hourly_trigger_does_not_wait_and_a_second_pass_is_told_which_one_runs(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    gate = threading.Event()
    client = client_for(world, before_write_back=lambda: gate.wait(30), lock_wait=0.2)

    hourly = client.post(
        "/api/sync",
        json={"spreadsheet_id": WORLD_SHEET, "trigger": "hourly", "wait": 0},
        headers=AUTH,
    )
    again = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    gate.set()

    assert hourly.status_code == 202
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "sync_running"
    assert again.get_json()["pass_id"] == hourly.get_json()["pass_id"]
    done = poll(client, hourly.get_json()["pass_id"], lambda b: b["state"] != "running")
    assert (done["state"], done["trigger"]) == ("done", "hourly")


def test_the_answer_lists_rows_needing_attention_page_by_page(
    make_world: MakeWorld, world_now: datetime
) -> None:
    good = [lead_row(i, "New", now=world_now) for i in range(1, 4)]
    # 60 rows whose stage is not in the map: each says why it was skipped.
    odd = [lead_row(i, "Maybe later", now=world_now) for i in range(4, 64)]
    world = make_world(good + odd)
    client = client_for(world)

    first = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)

    body = first.get_json()
    assert first.status_code == 200
    assert (body["sent"], body["skipped"], body["rows_total"]) == (3, 60, 63)
    assert body["attention_total"] == 60
    assert len(body["rows"]) == 50 and body["next_rows_offset"] == 50
    assert all(r["outcome"] == "skipped" and r["message"] for r in body["rows"])
    rest = client.get(
        f"/api/passes/{body['pass_id']}?rows_offset=50&rows_limit=50", headers=AUTH
    ).get_json()["summary"]
    assert [r["row"] for r in rest["rows"]] == list(range(55, 65))
    assert rest["next_rows_offset"] is None
    bad = client.get(f"/api/passes/{body['pass_id']}?rows_offset=-1", headers=AUTH)
    assert bad.status_code == 400 and "rows_offset" in bad.get_json()["error"]["message"]


def test_a_pass_whose_process_died_is_reported_lost_with_what_happens_next(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    bridge = world.bridge()
    # What a process killed mid-pass leaves behind: a record nobody finishes.
    pass_id = bridge.ledger.start_pass(bridge.sheet_tab, "sync", False, world_now)
    bridge.ledger.pass_progress(pass_id, "send", 1, 3, world_now - timedelta(minutes=5))
    client = client_for(world)
    from sheet_bridge.web.passes import pass_ref

    body = client.get(f"/api/passes/{pass_ref(bridge.sheet_tab, pass_id)}", headers=AUTH)

    assert body.status_code == 200
    assert body.get_json()["state"] == "lost"
    assert "nothing is lost" in body.get_json()["error"]
    # And it does not block the next pass.
    assert (
        client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH).status_code
        == 200
    )


def test_a_pass_whose_process_died_is_lost_as_soon_as_the_next_pass_holds_its_tab(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    bridge = world.bridge()
    where = bridge.sheet_tab
    finished = bridge.ledger.start_pass(where, "sync", False, world_now)
    bridge.ledger.finish_pass(finished, {"sent": 0}, world_now)
    # A replica SIGKILLed a second ago: its heartbeat is fresh, its lock already gone.
    killed = bridge.ledger.start_pass(where, "sync", False, world_now)
    bridge.ledger.pass_progress(killed, "send", 1, 3, world_now)
    client = client_for(world)
    from sheet_bridge.web.passes import pass_ref

    before = client.get(f"/api/passes/{pass_ref(where, killed)}", headers=AUTH).get_json()
    answer = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    after = client.get(f"/api/passes/{pass_ref(where, killed)}", headers=AUTH).get_json()

    assert before["state"] == "running"
    assert answer.status_code == 200, answer.get_json()
    assert after["state"] == "lost"
    assert "nothing is lost" in after["error"]
    done = client.get(f"/api/passes/{pass_ref(where, finished)}", headers=AUTH).get_json()
    assert done["state"] == "done"
    status = client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH).get_json()
    assert status["running_pass"] is None
    assert answer.get_json()["sent"] == 1


def test_pass_ids_are_checked_against_the_callers_bridges(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = client_for(world)
    ran = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH).get_json()
    number = ran["pass_id"].split("-")[0]

    for ref in (f"{number}-0000000000", f"{int(number) + 1}-{ran['pass_id'][-10:]}"):
        answer = client.get(f"/api/passes/{ref}", headers=AUTH)
        assert answer.status_code == 404, ref
    assert client.get(f"/api/passes/{ran['pass_id']}").status_code == 401


def test_pass_ids_and_row_pages_in_other_digits_are_refused_in_words_not_a_500(
    make_world: MakeWorld, world_now: datetime
) -> None:
    # "²" and "١" are digits to str.isdigit(); int("²") raises, int("١") is 1.
    world = make_world([lead_row(1, "New", now=world_now)])
    client = client_for(world)
    ran = client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH).get_json()
    number, tag = ran["pass_id"].split("-")
    arabic = "".join(chr(ord("٠") + int(d)) for d in number)

    for ref in ("abc", f"²-{tag}", f"{arabic}-{tag}"):
        answer = client.get(f"/api/passes/{ref}", headers=AUTH)
        assert answer.status_code == 400, (ref, answer.get_data(as_text=True))
        assert "is not a pass id" in answer.get_json()["error"]["message"]
    for query in ("rows_limit=²", "rows_limit=٥", "rows_offset=¹"):
        answer = client.get(f"/api/passes/{ran['pass_id']}?{query}", headers=AUTH)
        assert answer.status_code == 400, (query, answer.get_data(as_text=True))
        assert "is not a whole number" in answer.get_json()["error"]["message"]


def test_alerts_name_an_expired_api_version_an_unreachable_sheet_and_failing_hourly_passes(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)], meta={"api_version": "v19.0"})
    client = client_for(world)
    world.sheets_fault(403, count=20)
    for _ in range(3):
        failed = client.post(
            "/api/sync", json={"spreadsheet_id": WORLD_SHEET, "trigger": "hourly"}, headers=AUTH
        )
        assert failed.status_code == 502

    alerts = client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH).get_json()[
        "alerts"
    ]

    codes = {a["code"]: a for a in alerts}
    assert set(codes) == {"api_version", "sheet_unreachable", "hourly_failing"}
    assert codes["api_version"]["severity"] == "error"
    assert "expired on 2026-05-21" in codes["api_version"]["message"]
    assert "3 hourly syncs failed" in codes["hourly_failing"]["message"]
    assert all(a["fix"] for a in alerts)


def test_two_failed_hourly_passes_are_not_yet_an_alert(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = client_for(world)
    world.sheets_fault(403, count=2)
    for _ in range(2):
        client.post(
            "/api/sync", json={"spreadsheet_id": WORLD_SHEET, "trigger": "hourly"}, headers=AUTH
        )

    alerts = client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH).get_json()[
        "alerts"
    ]

    assert alerts == []


def test_a_rejected_token_is_an_alert_for_everyone(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = client_for(world)
    world.meta_fault("token_expired", count=5)

    client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH)
    alerts = client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH).get_json()[
        "alerts"
    ]

    assert [a["code"] for a in alerts] == ["token_rejected"]
    assert world.config.meta.access_token_env in alerts[0]["fix"]
