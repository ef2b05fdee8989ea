"""The fake Meta at Meta's real speed: latency per request and per event, and a rate limit
answered the way Graph throttles (HTTP 400, code 80004/4/17/32/613, is_transient, usage header)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from sheet_bridge.local.fake_meta import MetaSpeed, create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from tests.meta.conftest import PIXEL, TOKEN, VERSION, RunningFake, make_event


def body(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": events, "access_token": TOKEN}


def set_speed(fake: RunningFake, **spec: Any) -> httpx.Response:
    return httpx.post(f"{fake.url}/_fake/speed", json=spec, timeout=10)


def timed_post(fake: RunningFake, events: int = 1) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = fake.post(body([make_event(i) for i in range(events)]))
    return response, time.monotonic() - started


def test_latency_delays_every_answer(fake_meta: RunningFake) -> None:
    set_speed(fake_meta, latency_ms=300).raise_for_status()

    response, took = timed_post(fake_meta)

    assert response.status_code == 200
    assert took >= 0.3


def test_per_event_latency_grows_with_the_batch(fake_meta: RunningFake) -> None:
    set_speed(fake_meta, per_event_ms=20).raise_for_status()

    response, took = timed_post(fake_meta, events=20)

    assert response.status_code == 200
    assert took >= 0.4


def test_a_refusal_also_waits_for_the_latency(fake_meta: RunningFake) -> None:
    set_speed(fake_meta, latency_ms=300).raise_for_status()
    started = time.monotonic()

    response = fake_meta.post({"data": [make_event(1)], "access_token": "wrong"})

    assert response.json()["error"]["code"] == 190
    assert time.monotonic() - started >= 0.3


def test_requests_wait_their_latency_side_by_side(fake_meta: RunningFake) -> None:
    set_speed(fake_meta, latency_ms=400).raise_for_status()

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: timed_post(fake_meta)[0].status_code, range(4)))

    assert answers == [200] * 4
    assert fake_meta.stats()["peak_in_flight"] == 4
    log = httpx.get(f"{fake_meta.url}/_fake/requests").json()["requests"]
    assert len(log) == 4
    assert max(r["started"] for r in log) < min(r["finished"] for r in log)  # all at once


def test_the_request_log_says_what_each_request_carried(fake_meta: RunningFake) -> None:
    fake_meta.post(body([make_event(1), make_event(2)]))
    fake_meta.post({"data": [make_event(3)], "access_token": "wrong"})

    log = httpx.get(f"{fake_meta.url}/_fake/requests").json()["requests"]

    assert [r["event_ids"] for r in log] == [["ev-1", "ev-2"], ["ev-3"]]
    assert [r["status"] for r in log] == [200, 400]
    assert log[1]["code"] == 190
    assert all(r["started"] <= r["finished"] for r in log)


def test_calls_past_the_rate_limit_get_metas_business_use_case_throttle(
    fake_meta: RunningFake,
) -> None:
    set_speed(fake_meta, rate_limit=2, rate_window=150).raise_for_status()

    answers = [fake_meta.post(body([make_event(i)])) for i in range(3)]

    assert [a.status_code for a in answers] == [200, 200, 400]
    error = answers[2].json()["error"]
    assert error["code"] == 80004
    assert error["is_transient"] is True
    assert error["type"] == "OAuthException"
    assert error["message"].startswith("(#80004) There have been too many calls")
    usage = json.loads(answers[2].headers["X-Business-Use-Case-Usage"])
    (limit,) = usage[PIXEL]
    assert limit["type"] == "ads_management"
    assert limit["call_count"] == 100
    assert limit["estimated_time_to_regain_access"] == 2  # whole minutes, as Meta says it
    assert [e["event_id"] for e in fake_meta.events()] == ["ev-0", "ev-1"]
    assert fake_meta.stats()["throttled"] == 1


def test_the_limit_is_a_sliding_window_and_throttled_calls_do_not_count(
    fake_meta: RunningFake,
) -> None:
    set_speed(fake_meta, rate_limit=1, rate_window=0.5).raise_for_status()
    assert fake_meta.post(body([make_event(1)])).status_code == 200
    throttled = fake_meta.post(body([make_event(2)]))
    usage = json.loads(throttled.headers["X-Business-Use-Case-Usage"])
    assert usage[PIXEL][0]["estimated_time_to_regain_access"] == 0  # within the minute

    time.sleep(0.6)

    assert fake_meta.post(body([make_event(3)])).status_code == 200
    assert [e["event_id"] for e in fake_meta.events()] == ["ev-1", "ev-3"]


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (4, "(#4) Application request limit reached"),
        (17, "(#17) User request limit reached"),
        (32, "(#32) Page request limit reached"),
        (613, "(#613) Calls to this api have exceeded the rate limit."),
    ],
)
def test_graph_platform_throttles_answer_with_their_code_and_app_usage(
    code: int, words: str, fake_meta: RunningFake
) -> None:
    set_speed(fake_meta, rate_limit=1, rate_window=60, throttle_code=code).raise_for_status()
    fake_meta.post(body([make_event(1)]))

    answer = fake_meta.post(body([make_event(2)]))

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == code
    assert answer.json()["error"]["message"] == words
    assert answer.json()["error"]["is_transient"] is True
    assert json.loads(answer.headers["X-App-Usage"])["call_count"] == 100
    assert "X-Business-Use-Case-Usage" not in answer.headers


def test_speed_changes_only_what_is_sent_and_reset_restores_the_constructors() -> None:
    app = create_fake_meta(access_token=TOKEN, speed=MetaSpeed(latency_ms=5, rate_limit=100))
    with BackgroundServer(app) as server:
        fake = RunningFake(app, server.url)
        assert set_speed(fake, per_event_ms=2).json() == {
            "latency_ms": 5,
            "per_event_ms": 2,
            "rate_limit": 100,
            "rate_window": 1.0,
            "throttle_code": 80004,
        }
        assert set_speed(fake, rate_limit=None).json()["rate_limit"] is None

        httpx.post(f"{fake.url}/_fake/reset").raise_for_status()

        speed = httpx.get(f"{fake.url}/_fake/speed").json()
        assert (speed["latency_ms"], speed["per_event_ms"], speed["rate_limit"]) == (5, 0, 100)


@pytest.mark.parametrize(
    "spec",
    [
        {"latency_ms": -1},
        {"per_event_ms": "fast"},
        {"rate_limit": 0},
        {"rate_limit": 2.5},
        {"rate_window": 0},
        {"throttle_code": 100},
        {"latency": 150},
        [],
    ],
)
def test_a_speed_that_makes_no_sense_is_refused(spec: Any, fake_meta: RunningFake) -> None:
    answer = httpx.post(f"{fake_meta.url}/_fake/speed", json=spec)

    assert answer.status_code == 400
    assert answer.json()["error"]["message"]
    assert httpx.get(f"{fake_meta.url}/_fake/speed").json() == MetaSpeed().to_json()


def test_emulate_meta_takes_latency_and_rate_limit_from_the_command_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [
        *("emulate", "meta", "--port", str(port), "--token", TOKEN),
        *("--latency-ms", "150", "--per-event-ms", "0.5"),
        *("--rate-limit", "20", "--rate-window", "2", "--throttle-code", "613"),
    ]
    code = f"from sheet_bridge.cli import main; main({args!r})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                speed = httpx.get(f"http://127.0.0.1:{port}/_fake/speed").json()
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        started = time.monotonic()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/{VERSION}/{PIXEL}/events", json=body([make_event(1)])
        )
        took = time.monotonic() - started
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert speed == {
        "latency_ms": 150,
        "per_event_ms": 0.5,
        "rate_limit": 20,
        "rate_window": 2,
        "throttle_code": 613,
    }
    assert answer.status_code == 200 and took >= 0.15
