"""The fake Meta refuses what Meta refuses, keeps what Meta keeps, and fails on request."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.meta.identity import sha256_hex

DAY = 86400
Mutation = Callable[[dict[str, Any]], None]


def body(token: str, events: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"data": events, "access_token": token, **extra}


def _set(path: str, value: Any) -> Mutation:
    """A mutation that sets event[a][b] = value (path "a.b"); `...` deletes the key."""

    def mutate(event: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target = event
        for key in parents:
            target = target[key]
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value

    return mutate


def _age(seconds: float) -> Mutation:
    def mutate(event: dict[str, Any]) -> None:
        event["event_time"] = int(time.time() - seconds)

    return mutate


def _only_user_data(**user_data: Any) -> Mutation:
    def mutate(event: dict[str, Any]) -> None:
        event["user_data"] = dict(user_data)

    return mutate


H = sha256_hex("x")
RULES: list[tuple[str, Mutation, int, str]] = [
    ("no event_name", _set("event_name", ...), 2804001, "event_name"),
    ("empty event_name", _set("event_name", "  "), 2804001, "event_name"),
    ("event_time as text", _set("event_time", "1700000000"), 2804004, "integer Unix"),
    ("event_time in ms", _set("event_time", int(time.time() * 1000)), 2804004, "milliseconds"),
    ("event_time in future", _age(-3600), 2804004, "in the future"),
    ("event_time 8 days old", _age(8 * DAY), 2804003, "8.0 days old"),
    ("no action_source", _set("action_source", ...), 2804005, "action_source"),
    ("unknown action_source", _set("action_source", "crm"), 2804005, "action_source"),
    ("no user_data", _set("user_data", ...), 2804006, "user_data"),
    ("empty user_data", _only_user_data(), 2804006, "at least one"),
    ("only country+city", _only_user_data(country=H, ct=H), 2804006, "cannot be matched"),
    ("only fn+ge", _only_user_data(fn=H, ge=H), 2804006, "cannot be matched"),
    ("plain e-mail", _set("user_data.em", "Jane@Example.com"), 2804007, "user_data.em"),
    ("md5 e-mail", _set("user_data.em", hashlib.md5(b"j").hexdigest()), 2804007, "SHA-256"),
    ("uppercase hash", _set("user_data.ph", H.upper()), 2804007, "user_data.ph"),
    ("one bad hash in a list", _set("user_data.em", [H, "x"]), 2804007, "user_data.em"),
    ("lead_id as text", _set("user_data.lead_id", "12345678901234567"), 2804008, "lead_id"),
    ("lead_id of 14 digits", _set("user_data.lead_id", 10**13), 2804008, "lead_id"),
    ("lead_id of 18 digits", _set("user_data.lead_id", 10**17), 2804008, "lead_id"),
    ("malformed fbc", _set("user_data.fbc", "fb.1.abc"), 2804009, "fbc"),
    ("value as text", _set("custom_data.value", "100"), 2804010, "value"),
    ("value without currency", _set("custom_data.currency", ...), 2804010, "currency"),
    ("currency of 4 letters", _set("custom_data.currency", "EURO"), 2804010, "currency"),
]


@pytest.mark.parametrize(("rule", "mutate", "subcode", "says"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_refuses_the_whole_batch_and_keeps_nothing(
    rule, mutate, subcode, says, fake_meta, make_event, token
):
    events = [make_event(i) for i in range(3)]
    mutate(events[1])
    response = fake_meta.post(body(token, events))

    assert response.status_code == 400, rule
    error = response.json()["error"]
    assert (error["code"], error["error_subcode"]) == (100, subcode)
    assert error["message"] == "Invalid parameter"
    assert error["type"] == "OAuthException"
    assert error["is_transient"] is False
    assert says in error["error_user_msg"]
    assert "index 1" in error["error_user_msg"]
    assert error["error_user_title"] and error["fbtrace_id"]
    assert fake_meta.events() == []
    assert fake_meta.stats()["rejections"] == 1


def test_a_clean_batch_is_kept_with_pixel_and_arrival_time(fake_meta, make_event, token):
    events = [make_event(i) for i in range(3)]
    events[2]["user_data"]["fbc"] = "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrStUvWxYz1234567890"
    events[2]["user_data"]["em"] = [sha256_hex("a@b.co"), sha256_hex("c@d.co")]
    before = time.time()
    response = fake_meta.post(body(token, events, test_event_code="TEST42"))

    assert response.status_code == 200
    answer = response.json()
    assert answer["events_received"] == 3 and answer["messages"] == []
    assert answer["fbtrace_id"]
    kept = fake_meta.events()
    assert [e["event_id"] for e in kept] == ["ev-0", "ev-1", "ev-2"]
    assert {e["pixel_id"] for e in kept} == {"1234567890"}
    assert all(before - 1 <= e["received_at"] <= time.time() + 1 for e in kept)
    assert kept[0]["test_event_code"] == "TEST42"
    assert kept[0]["user_data"] == events[0]["user_data"]


def test_custom_event_names_are_accepted_and_counted(fake_meta, make_event, token):
    events = [
        make_event(1, event_name="QualifiedLead"),
        make_event(2, event_name="QualifiedLead"),
        make_event(3, event_name="Schedule"),
        make_event(4, event_name="INITIAL_LEAD"),
    ]
    assert fake_meta.post(body(token, events)).status_code == 200
    stats = fake_meta.stats()
    assert stats["custom_event_names"] == {"QualifiedLead": 2, "INITIAL_LEAD": 1}
    assert (stats["requests"], stats["events"], stats["rejections"]) == (1, 4, 0)


def test_physical_store_events_keep_for_62_days_others_for_7(fake_meta, make_event, token):
    store_61 = make_event(1, age=61 * DAY, action_source="physical_store")
    store_63 = make_event(2, age=63 * DAY, action_source="physical_store")
    web_6 = make_event(3, age=6 * DAY)
    assert fake_meta.post(body(token, [store_61, web_6])).status_code == 200
    refused = fake_meta.post(body(token, [store_63]))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["error_subcode"] == 2804003
    assert error["error_user_title"] == "Event Timestamp Too Old"
    assert "63.0 days old" in error["error_user_msg"]
    assert "within 62 days" in error["error_user_msg"]
    assert [e["event_id"] for e in fake_meta.events()] == ["ev-1", "ev-3"]


def test_the_window_is_measured_on_the_fakes_own_clock(make_event, token):
    frozen = time.time() + 30 * DAY  # a fake "now" a month ahead makes a fresh event stale
    with BackgroundServer(create_fake_meta(access_token=token, now=lambda: frozen)) as server:
        response = httpx.post(
            f"{server.url}/v25.0/1/events", json=body(token, [make_event(1, age=0)])
        )
    assert response.json()["error"]["error_subcode"] == 2804003


@pytest.mark.parametrize("sent", [None, "", "wrong-token"])
def test_a_missing_or_wrong_token_is_code_190(sent, fake_meta, make_event):
    request: dict[str, Any] = {"data": [make_event(1)]}
    if sent is not None:
        request["access_token"] = sent
    response = fake_meta.post(request)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 190
    assert error["message"] == "Invalid OAuth access token - Cannot parse access token"
    assert fake_meta.events() == []


def test_an_unknown_pixel_is_code_100_subcode_33(make_event, token):
    app = create_fake_meta(access_token=token, pixel_ids={"111"})
    with BackgroundServer(app) as server:
        good = httpx.post(f"{server.url}/v25.0/111/events", json=body(token, [make_event(1)]))
        bad = httpx.post(f"{server.url}/v25.0/222/events", json=body(token, [make_event(2)]))
    assert good.status_code == 200
    error = bad.json()["error"]
    assert (error["code"], error["error_subcode"]) == (100, 33)
    assert "Object with ID '222' does not exist" in error["message"]


def test_any_numeric_pixel_is_known_by_default_but_not_a_name(fake_meta, make_event, token):
    assert fake_meta.post(body(token, [make_event(1)]), pixel="987").status_code == 200
    refused = fake_meta.post(body(token, [make_event(1)]), pixel="my-pixel")
    assert refused.json()["error"]["error_subcode"] == 33


@pytest.mark.parametrize(
    ("count", "accepted"), [(0, False), (1, True), (1000, True), (1001, False)]
)
def test_data_holds_one_to_a_thousand_events(count, accepted, fake_meta, make_event, token):
    response = fake_meta.post(body(token, [make_event(i) for i in range(count)]))
    assert (response.status_code == 200) is accepted
    if not accepted:
        assert response.json()["error"]["code"] == 100
    assert fake_meta.stats()["events"] == (count if accepted else 0)


def test_a_form_encoded_post_with_data_as_json_text_is_accepted(fake_meta, make_event, token):
    form = {"data": json.dumps([make_event(1)]), "access_token": token}
    response = httpx.post(f"{fake_meta.url}/v25.0/1234567890/events", data=form)
    assert response.json()["events_received"] == 1


def test_accepted_events_are_recorded_as_json_lines(tmp_path, make_event, token):
    record = tmp_path / "meta.jsonl"
    app = create_fake_meta(access_token=token, record=record)
    with BackgroundServer(app) as server:
        url = f"{server.url}/v25.0/42/events"
        httpx.post(url, json=body(token, [make_event(1), make_event(2)]))
        httpx.post(url, json=body(token, [make_event(3, event_name="")]))  # refused
        httpx.post(url, json=body(token, [make_event(4)]))
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(e["event_id"], e["pixel_id"]) for e in lines] == [
        ("ev-1", "42"),
        ("ev-2", "42"),
        ("ev-4", "42"),
    ]
    assert token not in record.read_text()


# ---- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "code", "transient"),
    [("500", 500, 2, True), ("throttle", 400, 4, True), ("token_expired", 400, 190, False)],
)
def test_a_fault_answers_the_next_n_posts_then_meta_is_back(
    mode, status, code, transient, fake_meta, make_event, token
):
    fake_meta.fault(mode, count=2)
    answers = [fake_meta.post(body(token, [make_event(i)])) for i in range(3)]

    assert [a.status_code for a in answers] == [status, status, 200]
    error = answers[0].json()["error"]
    assert error["code"] == code and error["is_transient"] is transient
    if mode == "token_expired":
        assert error["error_subcode"] == 463
    assert [e["event_id"] for e in fake_meta.events()] == ["ev-2"]
    assert fake_meta.stats()["requests"] == 3


def test_a_timeout_fault_delays_the_answer(fake_meta, make_event, token):
    fake_meta.fault("timeout", count=1, delay=0.5)
    started = time.monotonic()
    response = fake_meta.post(body(token, [make_event(1)]))
    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200


@pytest.mark.parametrize(
    "spec", [{"mode": "explode"}, {"mode": "500", "count": -1}, {"mode": "timeout", "delay": "x"}]
)
def test_a_fault_request_that_makes_no_sense_is_refused(spec, fake_meta):
    assert httpx.post(f"{fake_meta.url}/_fake/faults", json=spec).status_code == 400


def test_reset_forgets_events_stats_and_faults(fake_meta, make_event, token):
    fake_meta.post(body(token, [make_event(1, event_name="Custom")]))
    fake_meta.fault("500", count=5)
    httpx.post(f"{fake_meta.url}/_fake/reset").raise_for_status()
    assert fake_meta.stats() == {
        "requests": 0,
        "events": 0,
        "rejections": 0,
        "custom_event_names": {},
        "throttled": 0,
        "peak_in_flight": 0,
    }
    assert fake_meta.post(body(token, [make_event(2)])).status_code == 200


def test_serve_runs_the_fake_and_its_request_log_hides_a_token_in_the_query(
    make_event, token, tmp_path
):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    record = tmp_path / "served.jsonl"
    code = (
        "from sheet_bridge.local.fake_meta import serve; "
        f"serve('127.0.0.1', {port}, {str(record)!r}, {token!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}/v25.0/7/events"
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.post(f"{url}?access_token={token}", json={"data": [make_event(1)]})
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert response.status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert "POST /v25.0/7/events HTTP/1.1" in err  # the request was logged...
    assert token not in out + err  # ...without the token
    assert json.loads(record.read_text())["event_id"] == "ev-1"


def test_concurrent_posts_are_all_kept(fake_meta, make_event, token):
    from concurrent.futures import ThreadPoolExecutor

    def post(i: int) -> int:
        return fake_meta.post(body(token, [make_event(i * 10 + j) for j in range(10)])).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(post, range(40)))
    assert statuses == [200] * 40
    stats = fake_meta.stats()
    assert stats["requests"] == 40 and stats["events"] == 400
    assert stats["rejections"] == stats["throttled"] == 0
    assert 1 <= stats["peak_in_flight"] <= 8


# ---- whole-request refusals (issue 16, finding 7) ---------------------------------------------


@pytest.mark.parametrize(
    ("known", "sent", "accepted"),
    [
        (None, "TEST12345", True),  # shaped like Events Manager's codes
        (None, "test-123", False),
        (None, "TEST", False),
        (["TEST41541"], "TEST41541", True),
        (["TEST41541"], "TEST123", False),  # a code of another dataset, or an old one
    ],
)
def test_a_test_event_code_meta_did_not_give_refuses_the_whole_request(
    known, sent, accepted, make_event, token
):
    app = create_fake_meta(access_token=token, test_event_codes=known)
    with BackgroundServer(app) as server:
        url = f"{server.url}/v25.0/1234567890/events"
        events = [make_event(i) for i in range(3)]  # every event valid
        response = httpx.post(url, json=body(token, events, test_event_code=sent))
        stored = httpx.get(f"{server.url}/_fake/events").json()["events"]
    assert (response.status_code == 200) is accepted
    if not accepted:
        error = response.json()["error"]
        assert error["code"] == 100 and "error_subcode" not in error
        assert error["error_user_title"] == "Invalid test_event_code"
        assert "index" not in error["error_user_msg"]  # no event is to blame
        assert stored == []


def test_without_a_test_event_code_nothing_is_checked(make_event, token):
    app = create_fake_meta(access_token=token, test_event_codes=["TEST41541"])
    with BackgroundServer(app) as server:
        response = httpx.post(
            f"{server.url}/v25.0/1/events", json=body(token, [make_event(1)], test_event_code="")
        )
    assert response.status_code == 200


@pytest.mark.parametrize(("version", "code"), [("v25.0", None), ("v21.0", None), ("v12.0", 2635)])
def test_a_deprecated_api_version_is_code_2635_for_the_whole_request(
    version, code, make_event, token
):
    app = create_fake_meta(access_token=token)
    with BackgroundServer(app) as server:
        response = httpx.post(f"{server.url}/{version}/1/events", json=body(token, [make_event(1)]))
    if code is None:
        assert response.status_code == 200
    else:
        error = response.json()["error"]
        assert error["code"] == code and error["type"] == "OAuthException"
        assert error["message"].startswith("(#2635) You are calling a deprecated version")
        assert "v26.0" in error["message"]  # the latest (Graph API changelog)


def test_an_unknown_pixel_answers_in_graphs_words(make_event, token):
    app = create_fake_meta(access_token=token, pixel_ids={"111"})
    with BackgroundServer(app) as server:
        error = httpx.post(
            f"{server.url}/v25.0/222/events", json=body(token, [make_event(1)])
        ).json()["error"]
    assert error["type"] == "GraphMethodException"
    assert error["message"].startswith("Unsupported post request. Object with ID '222'")


@pytest.mark.parametrize(
    ("fields", "accepted"),
    [
        ({"data_processing_options": []}, True),
        ({"data_processing_options": ["LDU"]}, True),
        (
            {
                "data_processing_options": ["LDU"],
                "data_processing_options_country": 1,
                "data_processing_options_state": 1000,
            },
            True,
        ),
        ({"data_processing_options": "LDU"}, False),
        ({"data_processing_options": ["GDPR"]}, False),
        ({"data_processing_options": ["LDU"], "data_processing_options_country": "US"}, False),
        ({"data_processing_options_state": 1000}, False),
    ],
)
def test_data_processing_options_are_checked_as_meta_documents_them(
    fields, accepted, fake_meta, make_event, token
):
    response = fake_meta.post(body(token, [make_event(1), make_event(2, **fields)]))
    assert (response.status_code == 200) is accepted
    if not accepted:
        error = response.json()["error"]
        assert error["error_subcode"] == 2804011 and "index 1" in error["error_user_msg"]


def test_a_lead_id_meta_does_not_know_refuses_that_event(fake_meta, make_event, token):
    events = [make_event(i) for i in range(3)]
    unknown = events[1]["user_data"]["lead_id"]
    httpx.post(f"{fake_meta.url}/_fake/unknown_lead_ids", json={"lead_ids": [unknown]})
    refused = fake_meta.post(body(token, events))
    error = refused.json()["error"]
    assert (error["code"], error["error_subcode"]) == (100, 2804008)
    assert "index 1" in error["error_user_msg"] and str(unknown) in error["error_user_msg"]
    assert fake_meta.post(body(token, [events[0], events[2]])).status_code == 200
    httpx.post(f"{fake_meta.url}/_fake/reset")
    assert fake_meta.post(body(token, [events[1]])).status_code == 200
