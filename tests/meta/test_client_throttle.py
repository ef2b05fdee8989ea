"""The client under Meta's throttling: it waits as long as Meta says, never hammers, and can be
shared by the threads that keep a few requests in flight."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pytest_httpserver import HTTPServer
from werkzeug import Response

from sheet_bridge.meta.client import CapiClient
from tests.meta.conftest import PIXEL, TOKEN, VERSION, ClientFactory, FakeClock, RunningFake


def throttled_by_meta(minutes: int) -> Response:
    """Graph's business-use-case throttle, with the usage header and Meta's estimate."""
    usage = {
        "9876": [
            {
                "type": "ads_management",
                "call_count": 100,
                "total_cputime": 10,
                "total_time": 10,
                "estimated_time_to_regain_access": minutes,
            }
        ]
    }
    error = {
        "message": "(#80004) There have been too many calls to this ad-account.",
        "type": "OAuthException",
        "code": 80004,
        "is_transient": True,
        "fbtrace_id": "AtraceThrottle",
    }
    return Response(
        json.dumps({"error": error}),
        status=400,
        content_type="application/json",
        headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
    )


def ok(n: int) -> dict[str, Any]:
    return {"events_received": n, "messages": [], "fbtrace_id": "AtraceOk"}


def base(server: HTTPServer) -> str:
    return server.url_for("/").rstrip("/")


def test_a_throttle_with_metas_estimate_waits_that_long_then_sends(
    httpserver: HTTPServer,
    events_path: str,
    make_client: ClientFactory,
    make_event: Any,
    fake_clock: FakeClock,
) -> None:
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_response(
        throttled_by_meta(minutes=2)
    )
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(ok(2))
    client = make_client(base(httpserver), max_retry_seconds=600)

    outcomes = client.send([make_event(1), make_event(2)])

    assert [o.state for o in outcomes] == ["sent", "sent"]
    assert fake_clock.sleeps == [120.0]  # Meta's two minutes, not a half-second backoff
    assert client.requests_made == 2 and client.throttled == 1


def test_a_throttle_that_outlasts_the_retry_budget_is_not_retried(
    httpserver: HTTPServer,
    events_path: str,
    make_client: ClientFactory,
    make_event: Any,
    fake_clock: FakeClock,
) -> None:
    httpserver.expect_request(events_path, method="POST").respond_with_response(
        throttled_by_meta(minutes=19)
    )
    client = make_client(base(httpserver), max_retry_seconds=60)

    outcomes = client.send([make_event(i) for i in range(3)])

    assert client.requests_made == 1  # asking again inside the limit only extends it
    assert fake_clock.sleeps == []
    assert {(o.state, o.transient) for o in outcomes} == {("not_sent", True)}
    assert "access returns in about 19 min" in outcomes[0].message


def test_a_throttle_within_the_minute_backs_off_exponentially(
    httpserver: HTTPServer,
    events_path: str,
    make_client: ClientFactory,
    make_event: Any,
    fake_clock: FakeClock,
) -> None:
    for _ in range(2):
        httpserver.expect_ordered_request(events_path, method="POST").respond_with_response(
            throttled_by_meta(minutes=0)
        )
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(ok(1))
    client = make_client(base(httpserver), backoff_base=0.5)

    outcomes = client.send([make_event(1)])

    assert outcomes[0].state == "sent"
    assert fake_clock.sleeps == [0.5, 1.0]  # jitter fixed at 1.0 by the fixture


def test_an_unreadable_usage_header_is_a_plain_throttle(
    httpserver: HTTPServer,
    events_path: str,
    make_client: ClientFactory,
    make_event: Any,
    fake_clock: FakeClock,
) -> None:
    answer = throttled_by_meta(minutes=5)
    answer.headers["X-Business-Use-Case-Usage"] = "{not json"
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_response(answer)
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(ok(1))

    outcomes = make_client(base(httpserver), backoff_base=0.5).send([make_event(1)])

    assert outcomes[0].state == "sent"
    assert fake_clock.sleeps == [0.5]


def test_a_throttle_on_one_request_holds_back_the_others_of_the_client(
    fake_meta: RunningFake, make_event: Any
) -> None:
    """Two sends share a client (as the pass's worker threads do): once one is throttled, the
    other's next request waits out the same pause instead of adding to the limit."""
    fake_meta.fault("throttle", count=1)
    client = CapiClient(fake_meta.url, VERSION, PIXEL, TOKEN, backoff_base=0.6, jitter=lambda: 1)
    first = threading.Thread(target=client.send, args=([make_event(1)],))
    first.start()
    deadline = time.monotonic() + 10
    while client.throttled == 0 and time.monotonic() < deadline:
        time.sleep(0.005)

    second = client.send([make_event(2)])
    first.join(timeout=10)
    client.close()

    assert second[0].state == "sent"
    log = httpx.get(f"{fake_meta.url}/_fake/requests").json()["requests"]
    throttled = next(r for r in log if r["status"] == 400)
    later = [r for r in log if r is not throttled]
    assert len(later) == 2 and {e for r in later for e in r["event_ids"]} == {"ev-1", "ev-2"}
    assert all(r["started"] >= throttled["finished"] + 0.6 for r in later)


def test_one_client_serves_many_threads_and_counts_every_request(
    fake_meta: RunningFake, make_event: Any
) -> None:
    client = CapiClient(fake_meta.url, VERSION, PIXEL, TOKEN, batch_size=2)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda i: client.send([make_event(i), make_event(i + 100)]), range(40))
        )
    client.close()

    assert all(o.state == "sent" for outcomes in results for o in outcomes)
    assert client.requests_made == fake_meta.stats()["requests"] == 40
    assert len({e["event_id"] for e in fake_meta.events()}) == 80
