"""The CAPI client over real loopback HTTP: retries, bisection, token handling, outcomes."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer

from sheet_bridge import __version__
from sheet_bridge.config import MetaConfig
from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.meta.client import (
    TOKEN_REJECTED,
    CapiClient,
    CapiError,
    SendOutcome,
    encode_events,
    request_bound,
)
from sheet_bridge.sync.run import capi_client
from tests.meta.conftest import PIXEL, TOKEN

DAY = 86400


def meta_error(
    code: int,
    message: str,
    *,
    subcode: int | None = None,
    user_msg: str | None = None,
    title: str | None = None,
    transient: bool = False,
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "is_transient": transient,
        "fbtrace_id": "AtraceErr1",
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if user_msg is not None:
        error["error_user_msg"] = user_msg
    if title is not None:
        error["error_user_title"] = title
    return {"error": error}


def ok(n: int, trace: str = "AtraceOk1") -> dict[str, Any]:
    return {"events_received": n, "messages": [], "fbtrace_id": trace}


def base(httpserver: HTTPServer) -> str:
    return httpserver.url_for("/").rstrip("/")


# ---- the request itself ------------------------------------------------------------------


def test_token_travels_in_the_body_only_with_partner_agent_and_no_test_code(
    httpserver, events_path, make_client, make_event, token
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(ok(2))
    client = make_client(base(httpserver), partner_agent=f"sheet-bridge/{__version__}")
    outcomes = client.send([make_event(1), make_event(2)])

    assert [o.state for o in outcomes] == ["sent", "sent"]
    (request, _), *_ = httpserver.log
    body = json.loads(request.get_data())
    assert body["access_token"] == token
    assert body["partner_agent"] == f"sheet-bridge/{__version__}"
    assert "test_event_code" not in body
    assert [e["event_id"] for e in body["data"]] == ["ev-1", "ev-2"]
    assert token not in request.url
    assert all(token not in value for value in request.headers.values())


def test_events_encoded_ahead_are_sent_byte_for_byte_as_the_client_would_encode_them(
    httpserver, events_path, make_client, make_event
):
    """The sender encodes a request's events on the pass's thread (encode_events): the body is
    the one the client makes itself, and httpx would make of the dict: UTF-8 as is, no spaces."""
    httpserver.expect_request(events_path, method="POST").respond_with_json(ok(2))
    client = make_client(base(httpserver), test_event_code="TEST123")
    events = [make_event(1), {**make_event(2), "custom_data": {"note": "Zoë ₹ 😀"}}]
    client.send(events)
    client.send(events, encoded=encode_events(events))
    (plain, _), (ahead, _) = httpserver.log
    assert ahead.get_data() == plain.get_data()
    assert ahead.headers["Content-Type"] == "application/json"
    expected = {"data": events, "access_token": TOKEN, "partner_agent": "sheet-bridge"}
    expected["test_event_code"] = "TEST123"
    as_httpx = json.dumps(expected, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert plain.get_data() == as_httpx.encode("utf-8")


class _Unread(Sequence[dict[str, Any]]):
    """Events a request encoded ahead carries, which no one may read (the sender's payloads
    are built only when read: sync/send.py Payloads)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> Any:
        raise AssertionError(f"event {i} was read")


def test_a_request_encoded_ahead_is_sent_without_reading_its_events(
    httpserver, events_path, make_client, make_event
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(ok(3))
    events = [make_event(i) for i in range(3)]
    outcomes = make_client(base(httpserver)).send(_Unread(3), encoded=encode_events(events))
    assert [o.state for o in outcomes] == ["sent"] * 3
    (request, _), *_ = httpserver.log
    assert json.loads(request.get_data())["data"] == events


def test_a_refused_batch_encoded_ahead_is_bisected_with_its_parts_encoded_anew(
    httpserver, events_path, make_client, make_event
):
    httpserver.expect_request(events_path, method="POST").respond_with_handler(
        _refuse_if_it_holds({"ev-3"}, meta_error(100, "(#100) Invalid parameter"))
    )
    client = make_client(base(httpserver), batch_size=8)
    events = [make_event(i) for i in range(8)]
    outcomes = client.send(events, encoded=encode_events(events))
    assert [i for i, o in enumerate(outcomes) if o.state != "sent"] == [3]
    bodies = [json.loads(r.get_data())["data"] for r, _ in httpserver.log]
    assert bodies[0] == events  # the whole batch as encoded ahead
    assert all(len(b) < 8 for b in bodies[1:])  # its parts, each encoded for its request


def test_test_event_code_is_sent_when_configured(httpserver, events_path, make_client, make_event):
    httpserver.expect_request(events_path, method="POST").respond_with_json(ok(1))
    make_client(base(httpserver), test_event_code="TEST123").send([make_event(1)])
    (request, _), *_ = httpserver.log
    assert json.loads(request.get_data())["test_event_code"] == "TEST123"


def test_events_go_in_batches_of_batch_size_and_progress_is_reported(
    httpserver, events_path, make_client, make_event
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(ok(2))
    progress: list[tuple[int, int]] = []
    client = make_client(base(httpserver), batch_size=2)
    outcomes = client.send(
        [make_event(i) for i in range(5)], on_progress=lambda *a: progress.append(a)
    )

    assert client.requests_made == 3
    assert [len(json.loads(r.get_data())["data"]) for r, _ in httpserver.log] == [2, 2, 1]
    assert progress == [(2, 5), (4, 5), (5, 5)]
    assert all(o.state == "sent" and o.fbtrace_id == "AtraceOk1" for o in outcomes)
    assert outcomes[0].summary == "ok · fbtrace_id AtraceOk1"


@pytest.mark.parametrize(("asked", "used"), [(0, 1), (-5, 1), (1, 1), (500, 500), (5000, 1000)])
def test_batch_size_is_clamped_to_what_meta_takes(asked, used, make_client):
    assert make_client("http://127.0.0.1:9", batch_size=asked).batch_size == used


def test_from_config_points_at_the_configured_graph_and_pixel(token):
    meta = MetaConfig(
        pixel_id="555", graph_url="http://127.0.0.1:8086/", api_version="v24.0", batch_size=250
    )
    client = capi_client(meta, token, max_attempts=2)
    assert client.url == "http://127.0.0.1:8086/v24.0/555/events"
    assert client.batch_size == 250
    assert client.max_attempts == 2
    assert client.partner_agent == f"sheet-bridge/{__version__}"  # the edge names the version
    client.close()


@pytest.mark.parametrize("url", ["graph.facebook.com", "ftp://example.com", "http://", ""])
def test_a_url_that_is_not_http_is_a_config_error_without_the_token(url, token):
    with pytest.raises(CapiError) as info:
        CapiClient(url, "v25.0", "123", token)
    assert token not in str(info.value)
    assert "graph_url" in str(info.value)


def test_a_pixel_id_that_is_not_a_number_is_a_config_error(token):
    with pytest.raises(CapiError, match="pixel_id"):
        CapiClient("http://127.0.0.1:9", "v25.0", "my-pixel", token)


# ---- retries -----------------------------------------------------------------------------


def test_a_500_is_retried_and_then_the_batch_goes(
    httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(
        meta_error(2, "Service temporarily unavailable", transient=True), status=500
    )
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(ok(2))
    client = make_client(base(httpserver))
    outcomes = client.send([make_event(1), make_event(2)])

    assert [o.state for o in outcomes] == ["sent", "sent"]
    assert client.requests_made == 2
    assert fake_clock.sleeps == [0.5]
    httpserver.check_assertions()


def test_an_html_503_without_meta_envelope_is_retried(
    httpserver, events_path, make_client, make_event
):
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_data(
        "<html>Service Unavailable</html>", status=503, content_type="text/html"
    )
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(ok(1))
    outcomes = make_client(base(httpserver)).send([make_event(1)])
    assert outcomes[0].state == "sent"


def test_throttling_code_4_is_retried_and_then_the_batch_goes(
    httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(
        meta_error(4, "(#4) Application request limit reached", transient=True), status=400
    )
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(
        meta_error(17, "(#17) User request limit reached"), status=400
    )
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(ok(1))
    client = make_client(base(httpserver))
    outcomes = client.send([make_event(1)])

    assert outcomes[0].state == "sent"
    assert client.requests_made == 3
    assert fake_clock.sleeps == [0.5, 1.0]  # exponential: base, 2 × base


def test_retries_are_bounded_by_max_attempts_and_then_the_batch_fails_transiently(
    httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(
        meta_error(1, "An unknown error occurred", transient=True), status=500
    )
    client = make_client(base(httpserver), batch_size=2, max_attempts=4)
    outcomes = client.send([make_event(1), make_event(2)])

    assert client.requests_made == 4
    assert fake_clock.sleeps == [0.5, 1.0, 2.0]
    assert {o.state for o in outcomes} == {"failed"}
    assert all(o.transient for o in outcomes)
    assert outcomes[0].message.startswith("Meta did not answer after 4 tries (HTTP 500")
    assert outcomes[0].message.endswith("will retry next sync")


def test_retries_stop_when_the_retry_time_budget_is_spent(
    httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_request(events_path, method="POST").respond_with_data("", status=502)
    client = make_client(base(httpserver), max_attempts=10, max_retry_seconds=3.0)
    outcomes = client.send([make_event(1)])

    # Pauses 0.5, 1, 2 would end at 3.5 s > 3 s: the third pause is never taken.
    assert fake_clock.sleeps == [0.5, 1.0]
    assert client.requests_made == 3
    assert outcomes[0].state == "failed" and outcomes[0].transient


def test_jitter_spreads_the_pause_between_half_and_all_of_the_backoff(
    httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_data("", status=500)
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_data("", status=500)
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(ok(1))
    make_client(base(httpserver), jitter=lambda: 0.0).send([make_event(1)])
    assert fake_clock.sleeps == [0.25, 0.5]


def test_a_refused_connection_is_a_transient_failure(make_client, make_event, fake_clock):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(f"http://127.0.0.1:{port}", max_attempts=3)
    outcomes = client.send([make_event(1)])
    assert client.requests_made == 3
    assert outcomes[0].state == "failed" and outcomes[0].transient
    assert "connection failed" in outcomes[0].message


def test_a_timeout_is_retried_and_the_events_then_go(fake_meta, make_client, make_event):
    fake_meta.fault("timeout", count=1, delay=1.0)
    client = make_client(fake_meta.url, timeout=0.3)
    outcomes = client.send([make_event(1), make_event(2)])

    assert [o.state for o in outcomes] == ["sent", "sent"]
    assert client.requests_made == 2
    # The fake answers the timed-out request late, as Graph may; wait for it so the server
    # stops cleanly. Both requests were received (docs/meta-errors.md: retries can duplicate).
    _wait_for(lambda: fake_meta.stats()["events"] == 4)
    assert fake_meta.stats()["requests"] == 2


def test_timeouts_every_time_end_as_a_transient_failure(fake_meta, make_client, make_event):
    fake_meta.fault("timeout", count=2, delay=0.6)
    client = make_client(fake_meta.url, timeout=0.2, max_attempts=2)
    outcomes = client.send([make_event(1)])
    assert outcomes[0].state == "failed" and outcomes[0].transient
    assert "after 2 tries (timed out)" in outcomes[0].message
    _wait_for(lambda: fake_meta.stats()["events"] == 2)


# ---- refusals that must not be retried ------------------------------------------------------


def test_an_invalid_parameter_is_not_retried(
    httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(
        meta_error(100, "Invalid parameter", subcode=2804050, user_msg="lead_id is not valid"),
        status=400,
    )
    client = make_client(base(httpserver))
    outcomes = client.send([make_event(1)])

    assert client.requests_made == 1
    assert fake_clock.sleeps == []
    assert outcomes == [
        SendOutcome("failed", "lead_id is not valid", "AtraceErr1", 100, 2804050, False)
    ]
    assert outcomes[0].summary == "error 100/2804050: lead_id is not valid · fbtrace_id AtraceErr1"


def test_a_rejected_token_mid_run_stops_and_the_rest_are_not_sent(
    httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(ok(2))
    httpserver.expect_ordered_request(events_path, method="POST").respond_with_json(
        meta_error(190, "Error validating access token: Session has expired", subcode=463),
        status=400,
    )
    client = make_client(base(httpserver), batch_size=2)
    progress: list[tuple[int, int]] = []
    outcomes = client.send(
        [make_event(i) for i in range(6)], on_progress=lambda *a: progress.append(a)
    )

    assert client.requests_made == 2
    assert fake_clock.sleeps == []
    assert [o.state for o in outcomes] == ["sent"] * 2 + ["not_sent"] * 4
    assert all(o.message == TOKEN_REJECTED and o.transient for o in outcomes[2:])
    assert outcomes[2].code == 190
    assert progress[-1] == (6, 6)
    httpserver.check_assertions()


def test_a_wrong_pixel_stops_at_once_instead_of_bisecting(
    httpserver, events_path, make_client, make_event
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(
        meta_error(
            100,
            "Unsupported post request. Object with ID '1234567890' does not exist",
            subcode=33,
        ),
        status=400,
    )
    client = make_client(base(httpserver), batch_size=4)
    outcomes = client.send([make_event(i) for i in range(12)])

    assert client.requests_made == 1
    assert {o.state for o in outcomes} == {"not_sent"}
    assert "does not exist" in outcomes[0].message


@pytest.mark.parametrize("code", [10, 200, 294])
def test_a_permission_error_is_not_retried_nor_bisected(
    code, httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(
        meta_error(code, f"(#{code}) Permission denied"), status=403
    )
    client = make_client(base(httpserver), batch_size=4)
    outcomes = client.send([make_event(i) for i in range(8)])
    assert client.requests_made == 1
    assert fake_clock.sleeps == []
    assert {(o.state, o.code) for o in outcomes} == {("not_sent", code)}


def test_a_404_from_a_wrong_graph_url_says_to_check_the_url(
    httpserver, events_path, make_client, make_event
):
    httpserver.expect_request(events_path).respond_with_data("Not Found", status=404)
    outcomes = make_client(base(httpserver)).send([make_event(1)])
    assert outcomes[0].state == "not_sent"
    assert "check graph_url and api_version" in outcomes[0].message


# ---- bisection against the fake Meta ---------------------------------------------------------


def test_one_bad_event_does_not_sink_the_batch(fake_meta, make_client, make_event):
    events = [make_event(i) for i in range(10)]
    events[6]["user_data"]["lead_id"] = str(events[6]["user_data"]["lead_id"])
    client = make_client(fake_meta.url, batch_size=10)
    outcomes = client.send(events)

    assert [o.state for o in outcomes] == ["sent"] * 6 + ["failed"] + ["sent"] * 3
    assert "lead_id must be an integer of 15 to 17 digits" in outcomes[6].message
    stored = [e["event_id"] for e in fake_meta.events()]
    assert sorted(stored) == sorted(f"ev-{i}" for i in range(10) if i != 6)  # each exactly once


def test_bisection_sends_every_good_event_once_and_names_each_bad_one(
    fake_meta, make_client, make_event
):
    n, batch = 2000, 500
    events = [make_event(i) for i in range(n)]
    events[17]["user_data"]["lead_id"] = str(events[17]["user_data"]["lead_id"])
    events[1234]["user_data"]["em"] = hashlib.md5(b"jane@example.com").hexdigest()
    events[1999]["event_time"] = events[1999]["event_time"] - 8 * DAY
    client = make_client(fake_meta.url, batch_size=batch)
    outcomes = client.send(events)

    bad = {17: "failed", 1234: "failed", 1999: "expired"}
    assert {i: o.state for i, o in enumerate(outcomes) if o.state != "sent"} == bad
    assert "lead_id must be an integer" in outcomes[17].message
    assert "SHA-256" in outcomes[1234].message
    assert outcomes[1999].subcode == 2804003
    assert "older than Meta's time window" in outcomes[1999].message
    assert "8.0 days old" in outcomes[1999].message

    stored = [e["event_id"] for e in fake_meta.events()]
    assert len(stored) == len(set(stored)) == n - 3
    assert fake_meta.stats()["events"] == 1997
    # One request per batch plus O(bad · log batch): far below one per event.
    assert client.requests_made <= request_bound(n, 3, batch) == 4 + 3 * 2 * 9
    assert client.requests_made > 4  # bisection did happen
    assert fake_meta.stats()["requests"] == client.requests_made


def test_a_batch_of_only_bad_events_ends_with_each_refused_alone(
    fake_meta, make_client, make_event
):
    events = [make_event(i, age=9 * DAY) for i in range(4)]
    client = make_client(fake_meta.url, batch_size=4)
    outcomes = client.send(events)
    assert {o.state for o in outcomes} == {"expired"}
    assert client.requests_made <= request_bound(4, 4, 4)
    assert fake_meta.stats()["events"] == 0


def test_a_stale_event_is_refused_with_2804003_and_marked_expired(
    fake_meta, make_client, make_event
):
    outcomes = make_client(fake_meta.url).send([make_event(1, age=7 * DAY + 60)])
    assert outcomes[0].state == "expired"
    assert (outcomes[0].code, outcomes[0].subcode) == (100, 2804003)
    assert not outcomes[0].transient
    assert outcomes[0].summary.startswith("error 100/2804003: older than Meta's time window")


def test_a_token_expiring_mid_run_against_the_fake_keeps_what_went(
    fake_meta, make_client, make_event
):
    client = make_client(fake_meta.url, batch_size=3)
    events = [make_event(i) for i in range(9)]
    outcomes = client.send(events[:3])
    fake_meta.fault("token_expired", count=5)
    outcomes += client.send(events[3:])

    assert [o.state for o in outcomes] == ["sent"] * 3 + ["not_sent"] * 6
    assert outcomes[3].subcode == 463
    assert client.requests_made == 2
    assert fake_meta.stats()["events"] == 3


def test_throttling_by_the_fake_is_retried(fake_meta, make_client, make_event, fake_clock):
    fake_meta.fault("throttle", count=2)
    client = make_client(fake_meta.url)
    outcomes = client.send([make_event(1)])
    assert outcomes[0].state == "sent"
    assert len(fake_clock.sleeps) == 2
    assert fake_meta.stats()["events"] == 1


# ---- the token never leaks -----------------------------------------------------------------


def test_the_token_never_appears_in_logs_reprs_errors_or_outcomes(
    fake_meta, make_client, make_event, token, caplog
):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    client = make_client(fake_meta.url, batch_size=4, timeout=0.3, max_attempts=2)
    seen.append(repr(client))

    events = [make_event(i) for i in range(8)]
    events[5]["user_data"]["em"] = "Jane@Example.com"
    outcomes = client.send(events)  # bisection
    fake_meta.fault("500", count=2)
    outcomes += client.send([make_event(20)])  # retries exhausted
    fake_meta.fault("timeout", count=1, delay=0.6)
    outcomes += client.send([make_event(21)])  # a timeout
    fake_meta.fault("token_expired", count=1)
    outcomes += client.send([make_event(22)])  # code 190
    outcomes += make_client(fake_meta.url, batch_size=1).send([make_event(23)])
    wrong = CapiClient(fake_meta.url, "v25.0", "1", "not-the-token")
    outcomes += wrong.send([make_event(24)])  # the fake refuses a wrong token
    wrong.close()
    with pytest.raises(CapiError) as info:
        CapiClient("nowhere", "v25.0", "1", token)
    seen.append(str(info.value))
    # The timed-out request is answered late; let it land before the fake stops.
    _wait_for(lambda: [e["event_id"] for e in fake_meta.events()].count("ev-21") == 2)

    assert {o.state for o in outcomes} == {"sent", "failed", "not_sent"}
    seen += [repr(o) for o in outcomes] + [o.summary for o in outcomes]
    seen += [caplog.text] + [r.getMessage() for r in caplog.records]
    seen += [repr(r.args) for r in caplog.records]
    assert any("POST" in r.getMessage() for r in caplog.records)  # the logs were captured
    assert all(token not in text for text in seen)


def test_meta_echoing_the_token_is_scrubbed(
    httpserver, events_path, make_client, make_event, token
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(
        meta_error(100, "Invalid parameter", user_msg=f"bad request with access_token={token}"),
        status=400,
    )
    outcomes = make_client(base(httpserver)).send([make_event(1)])
    assert outcomes[0].message == "bad request with access_token=[token]"


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_nothing_to_send_makes_no_request(httpserver, make_client):
    client = make_client(base(httpserver))
    assert client.send([]) == []
    assert client.requests_made == 0
    assert httpserver.log == []


# ---- request-level refusals halt; event-level ones are isolated (issue 16, finding 7) ----------


def test_an_invalid_test_event_code_is_one_request_and_blames_no_event(make_client, make_event):
    """Before: 24 events became 47 requests, each event refused and kept as refused."""
    app = create_fake_meta(access_token=TOKEN, test_event_codes=["TEST41541"])
    with BackgroundServer(app) as server:
        client = make_client(server.url, batch_size=10, test_event_code="TEST123")
        outcomes = client.send([make_event(i) for i in range(24)])
        requests = httpx.get(f"{server.url}/_fake/stats").json()["requests"]

    assert client.requests_made == requests == 1
    assert {(o.state, o.transient) for o in outcomes} == {("not_sent", True)}
    assert outcomes[0].message.startswith(
        "not sent: Meta refused the whole request: invalid test_event_code 'TEST123'; clear "
        "[meta] test_event_code or copy the current code from Events Manager → Test events"
    )
    assert "every event stays due" in outcomes[0].message


def test_a_deprecated_api_version_is_one_request_and_says_which_key_to_change(
    fake_meta, make_event, token
):
    with CapiClient(fake_meta.url, "v12.0", PIXEL, token, batch_size=4) as client:
        outcomes = client.send([make_event(i) for i in range(12)])
    assert client.requests_made == 1
    assert {o.state for o in outcomes} == {"not_sent"}
    assert outcomes[0].code == 2635
    assert "API version 'v12.0' is deprecated or unknown; set [meta] api_version" in (
        outcomes[0].message
    )


def test_a_request_level_refusal_in_meta_s_plainest_words_costs_three_requests(
    httpserver, events_path, make_client, make_event
):
    """Meta may say only "(#100) Invalid parameter": two single events refused exactly as the
    whole batch was, with nothing accepted, mean the request is at fault (docs/meta-errors.md)."""
    httpserver.expect_request(events_path, method="POST").respond_with_json(
        meta_error(100, "(#100) Invalid parameter"), status=400
    )
    client = make_client(base(httpserver), batch_size=500)
    outcomes = client.send([make_event(i) for i in range(500)])

    assert client.requests_made == 3  # the batch, then its first and last event alone
    assert {(o.state, o.transient) for o in outcomes} == {("not_sent", True)}
    assert "no event is to blame" in outcomes[0].message
    assert [len(json.loads(r.data)["data"]) for r, _ in httpserver.log] == [500, 1, 1]


def _refuse_if_it_holds(bad_ids: set[str], answer: dict[str, Any]) -> Callable[..., Any]:
    """Meta's plain invalid-parameter answer, given only when the batch holds a bad event."""
    from werkzeug import Response

    def handler(request: Any) -> Response:
        data = json.loads(request.data)["data"]
        if bad_ids & {e["event_id"] for e in data}:
            return Response(json.dumps(answer), status=400, content_type="application/json")
        return Response(json.dumps(ok(len(data))), content_type="application/json")

    return handler


def test_one_bad_event_refused_in_plain_words_is_still_isolated_and_kept(
    httpserver, events_path, make_client, make_event
):
    httpserver.expect_request(events_path, method="POST").respond_with_handler(
        _refuse_if_it_holds({"ev-9"}, meta_error(100, "(#100) Invalid parameter"))
    )
    client = make_client(base(httpserver), batch_size=24)
    outcomes = client.send([make_event(i) for i in range(24)])

    assert [i for i, o in enumerate(outcomes) if o.state != "sent"] == [9]
    assert outcomes[9].state == "failed"
    assert not outcomes[9].transient  # its own: kept until the row changes
    sent = [e["event_id"] for r, _ in httpserver.log for e in json.loads(r.data)["data"]]
    accepted = [
        e["event_id"]
        for request, response in httpserver.log
        if response.status_code == 200
        for e in json.loads(request.data)["data"]
    ]
    assert sorted(accepted) == sorted(f"ev-{i}" for i in range(24) if i != 9)  # each once
    assert len(sent) > 24  # bisection did happen
    assert client.requests_made <= 1 + 2 + request_bound(22, 1, 22)


def test_an_error_that_names_an_event_path_is_bisected_without_probing(
    httpserver, events_path, make_client, make_event
):
    answer = meta_error(100, "Invalid parameter", user_msg="data[0].user_data.ph is invalid")
    httpserver.expect_request(events_path, method="POST").respond_with_handler(
        _refuse_if_it_holds({"ev-5"}, answer)
    )
    client = make_client(base(httpserver), batch_size=8)
    outcomes = client.send([make_event(i) for i in range(8)])
    assert [o.state for o in outcomes] == ["sent"] * 5 + ["failed"] + ["sent"] * 2
    assert not outcomes[5].transient
    sizes = [len(json.loads(r.data)["data"]) for r, _ in httpserver.log]
    assert sizes[:2] == [8, 4]  # straight into halves: no single-event probes first


def test_a_lone_event_refused_in_plain_words_is_tried_again_not_kept(
    httpserver, events_path, make_client, make_event
):
    """Nothing shows whether the event or the setup is at fault: retry next sync."""
    httpserver.expect_request(events_path, method="POST").respond_with_json(
        meta_error(100, "(#100) Invalid parameter"), status=400
    )
    outcomes = make_client(base(httpserver)).send([make_event(1)])
    assert outcomes[0].state == "failed" and outcomes[0].transient


@pytest.mark.parametrize("code", [17, 613, 80004])
def test_an_ad_account_rate_limit_that_outlasts_the_retries_stops_the_pass(
    code, httpserver, events_path, make_client, make_event, fake_clock
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(
        meta_error(code, f"(#{code}) There have been too many calls to this ad-account."),
        status=400,
    )
    client = make_client(base(httpserver), batch_size=2, max_attempts=3)
    outcomes = client.send([make_event(i) for i in range(6)])
    assert client.requests_made == 3  # one batch's retries, then stop: the others wait
    assert len(fake_clock.sleeps) == 2
    assert {(o.state, o.transient) for o in outcomes} == {("not_sent", True)}
    assert "Meta is limiting calls and still refused after 3 tries" in outcomes[0].message


@pytest.mark.parametrize(
    ("answer", "fix"),
    [
        (meta_error(10, "(#10) Application does not have permission for this action"), "lacks"),
        (meta_error(200, "(#200) Permissions error"), "lacks permission"),
        (
            meta_error(
                100, "Unsupported post request. Object with ID '1' does not exist", subcode=33
            ),
            "does not exist or this token cannot use it",
        ),
        (meta_error(100, "Invalid parameter", title="Invalid test event code"), "test_event_code"),
    ],
)
def test_setup_refusals_are_one_request_and_say_what_to_fix(
    answer, fix, httpserver, events_path, make_client, make_event
):
    httpserver.expect_request(events_path, method="POST").respond_with_json(answer, status=400)
    client = make_client(base(httpserver), batch_size=4)
    outcomes = client.send([make_event(i) for i in range(8)])
    assert client.requests_made == 1
    assert {o.state for o in outcomes} == {"not_sent"}
    assert fix in outcomes[0].message and "Meta refused the whole request" in outcomes[0].message


def test_an_answer_and_its_request_body_are_freed_without_the_cyclic_collector(
    httpserver, events_path, make_client, make_event
):
    """httpx keeps a response and its stream in a reference cycle that holds the request's
    body; the client cuts it, so a pass may keep the collector off while it sends
    (sync/collector.py) without keeping every body it sent."""
    httpserver.expect_request(events_path, method="POST").respond_with_json(ok(1))
    client = make_client(base(httpserver))
    client.send([make_event(0)])  # the connection and httpx's lazy imports: made once
    gc.collect()
    gc.disable()
    try:
        for i in range(1, 4):
            assert [o.state for o in client.send([make_event(i)])] == ["sent"]
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        left = sorted({type(o).__name__ for o in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert found == 0, left
