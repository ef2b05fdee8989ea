"""A local stand-in for Meta's Graph `/{version}/{pixel_id}/events` with Meta's rules and shapes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, run_simple

from sheet_bridge.meta.events import ACTION_SOURCES, STANDARD_EVENTS, send_window
from sheet_bridge.meta.identity import HASHED_FIELDS, INVALID_ALONE, USER_DATA_FIELDS

MAX_EVENTS = 1000  # docs/meta-errors.md
FUTURE_TOLERANCE = 300  # seconds; Meta documents none (docs/event-times.md), we allow clock skew
SUBCODE_TOO_OLD = 2804003  # seen in the wild (docs/meta-errors.md)
# Meta publishes no table of 2804xxx subcodes (docs/meta-errors.md). These are the fake's own,
# chosen to look like Meta's so a client cannot tell them from real ones; only 2804003 is real.
SUBCODE_BAD_NAME = 2804001
SUBCODE_BAD_TIME = 2804004
SUBCODE_BAD_SOURCE = 2804005
SUBCODE_BAD_USER_DATA = 2804006
SUBCODE_NOT_HASHED = 2804007
SUBCODE_BAD_LEAD_ID = 2804008
SUBCODE_BAD_FBC = 2804009
SUBCODE_BAD_VALUE = 2804010
SUBCODE_BAD_PROCESSING_OPTIONS = 2804011
SUBCODE_NO_SUCH_OBJECT = 33  # Graph's "object does not exist"
# Graph's answer to a version past its deprecation date (seen in facebook-python-business-sdk
# PR #582 and fbsamples/marketing-api-samples #3): "(#2635) You are calling a deprecated version
# of the Ads API. Please update to the latest version: v9.0.", type OAuthException.
CODE_DEPRECATED_VERSION = 2635
# The versions the fake serves. Meta keeps a Conversions API version at least two years
# (docs/meta-errors.md); the docs use v25.0. Older ones answer 2635, as Graph does.
OLDEST_VERSION = "v21.0"
LATEST_VERSION = "v26.0"  # Graph API changelog, versions table (2026-07-29)
# Meta's test codes, as Events Manager → Test events shows them: "TEST" and digits (TEST12345).
_TEST_CODE = re.compile(r"^TEST\d+$")

FAULT_MODES = frozenset({"500", "timeout", "throttle", "token_expired"})
# Graph's throttling answers (error-handling guide, rate-limiting page): HTTP 400, the code and
# Meta's words, is_transient true. Conversions API calls count as Marketing API calls
# (docs/meta-errors.md), whose business-use-case limit answers 80004; the others are Graph's
# app (4), user (17), page (32) and "calls within a window" (613) limits.
THROTTLE_MESSAGES: dict[int, str] = {
    4: "(#4) Application request limit reached",
    17: "(#17) User request limit reached",
    32: "(#32) Page request limit reached",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    80004: (
        "(#80004) There have been too many calls to this ad-account. Wait a bit and try again. "
        "For more info, please refer to "
        "https://developers.facebook.com/docs/graph-api/overview/rate-limiting#ads-management."
    ),
}
# Business-use-case limits (80000-80014) come with this header: per business object, the kind
# of limit, usage in percent and "estimated_time_to_regain_access" in minutes (rate-limiting page).
BUC_USAGE_HEADER = "X-Business-Use-Case-Usage"
APP_USAGE_HEADER = "X-App-Usage"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FBC = re.compile(r"^fb\.[0-2]\.\d+\..+$")
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_VERSION = re.compile(r"^v\d+\.\d+$")
_TEN_YEARS = 10 * 365 * 86400


@dataclass(frozen=True)
class MetaSpeed:
    """How fast the fake answers and how many calls it takes, so a pass meets Meta's real round
    trip (hundreds of milliseconds) and its throttling instead of a loopback millisecond."""

    latency_ms: float = 0.0  # added to every events POST
    per_event_ms: float = 0.0  # and this much per event in it
    # At most this many calls in any `rate_window` seconds; the calls past it get Meta's
    # throttling answer (`throttle_code`) and are not counted. None: no limit.
    rate_limit: int | None = None
    rate_window: float = 1.0
    throttle_code: int = 80004

    def __post_init__(self) -> None:
        if not _is_number(self.latency_ms) or self.latency_ms < 0:
            raise ValueError("latency_ms must be a number of milliseconds ≥ 0")
        if not _is_number(self.per_event_ms) or self.per_event_ms < 0:
            raise ValueError("per_event_ms must be a number of milliseconds ≥ 0")
        if self.rate_limit is not None and (not _is_int(self.rate_limit) or self.rate_limit < 1):
            raise ValueError("rate_limit must be a whole number of calls ≥ 1, or null")
        if not _is_number(self.rate_window) or self.rate_window <= 0:
            raise ValueError("rate_window must be a number of seconds > 0")
        if self.throttle_code not in THROTTLE_MESSAGES:
            codes = ", ".join(str(c) for c in THROTTLE_MESSAGES)
            raise ValueError(f"throttle_code must be one of Meta's throttling codes: {codes}")

    def delay(self, events: int) -> float:
        """Seconds an answer about `events` events takes."""
        return (self.latency_ms + self.per_event_ms * events) / 1000

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "per_event_ms": self.per_event_ms,
            "rate_limit": self.rate_limit,
            "rate_window": self.rate_window,
            "throttle_code": self.throttle_code,
        }


@dataclass(frozen=True)
class Throttled:
    """A call over the rate limit: when the oldest counted call leaves the window."""

    code: int
    regain_seconds: float


@dataclass
class FakeMetaState:
    """Everything the fake remembers; one lock guards it (werkzeug serves in threads)."""

    access_token: str
    pixel_ids: frozenset[str] | None
    # None: any code shaped like Meta's (TEST12345); else exactly these codes.
    test_event_codes: frozenset[str] | None
    now: Callable[[], float]
    record: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    rejections: int = 0
    custom_event_names: Counter[str] = field(default_factory=Counter)
    fault_mode: str | None = None
    fault_count: int = 0
    fault_delay: float = 3.0
    # Lead ids Meta has no lead for (POST /_fake/unknown_lead_ids): an event carrying one is
    # refused alone, an event-level error the planner cannot foresee.
    unknown_lead_ids: set[int] = field(default_factory=set)
    speed: MetaSpeed = field(default_factory=MetaSpeed)
    initial_speed: MetaSpeed = field(default_factory=MetaSpeed)
    # Monotonic times of the calls the rate limit counted, oldest first.
    counted_calls: deque[float] = field(default_factory=deque)
    throttled: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    # One entry per events POST, for tests of what was in flight together (GET /_fake/requests).
    request_log: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        with self.lock:
            self.events.clear()
            self.requests = 0
            self.rejections = 0
            self.custom_event_names.clear()
            self.unknown_lead_ids.clear()
            self.fault_mode, self.fault_count, self.fault_delay = None, 0, 3.0
            self.speed = self.initial_speed
            self.counted_calls.clear()
            self.throttled = 0
            self.peak_in_flight = self.in_flight
            self.request_log.clear()

    def take_fault(self) -> tuple[str | None, float]:
        with self.lock:
            self.requests += 1
            if self.fault_mode is None or self.fault_count <= 0:
                return None, 0.0
            self.fault_count -= 1
            mode = self.fault_mode
            if self.fault_count == 0:
                self.fault_mode = None
            return mode, self.fault_delay

    def take_call(self, at: float) -> Throttled | None:
        """Count a call against the rate limit, or say it is over the limit (then not counted:
        a throttled call does not extend the wait)."""
        with self.lock:
            limit, window = self.speed.rate_limit, self.speed.rate_window
            if limit is None:
                return None
            calls = self.counted_calls
            while calls and calls[0] <= at - window:
                calls.popleft()
            if len(calls) >= limit:
                self.throttled += 1
                return Throttled(self.speed.throttle_code, calls[0] + window - at)
            calls.append(at)
            return None

    @contextlib.contextmanager
    def serving(self, started: float) -> Iterator[dict[str, Any]]:
        """One events POST in flight: counted while it runs, logged when it is answered."""
        entry: dict[str, Any] = {"started": started, "status": None, "event_ids": []}
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield entry
        finally:
            entry["finished"] = time.monotonic()
            with self.lock:
                self.in_flight -= 1
                self.request_log.append(entry)


class Refusal(Exception):
    """A Graph error: HTTP status and the fields of Meta's error envelope (docs/meta-errors.md)."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        subcode: int | None = None,
        title: str | None = None,
        user_msg: str | None = None,
        transient: bool = False,
        status: int = 400,
        kind: str = "OAuthException",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.subcode = subcode
        self.title = title
        self.user_msg = user_msg
        self.transient = transient
        self.status = status
        self.kind = kind
        self.headers: dict[str, str] = {}
        self.fbtrace_id = _fbtrace_id()  # one per answer: the log and the body show the same

    def envelope(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.kind,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        error["is_transient"] = self.transient
        if self.title is not None:
            error["error_user_title"] = self.title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        error["fbtrace_id"] = self.fbtrace_id
        return {"error": error}


def _fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(15)[:20]


def _throttle(throttled: Throttled, pixel_id: str) -> Refusal:
    """Meta's throttling answer, with the usage header that comes with it."""
    refusal = Refusal(
        throttled.code, THROTTLE_MESSAGES[throttled.code], transient=True, kind="OAuthException"
    )
    usage = {"call_count": 100, "total_cputime": 0, "total_time": 0}
    if throttled.code >= 80000:
        # Whole minutes, as Meta gives them: "0" means access returns within the minute.
        minutes = int(max(throttled.regain_seconds, 0.0) // 60)
        buc = {"type": "ads_management", **usage, "estimated_time_to_regain_access": minutes}
        refusal.headers[BUC_USAGE_HEADER] = json.dumps({pixel_id: [buc]})
    else:
        refusal.headers[APP_USAGE_HEADER] = json.dumps(usage)
    return refusal


def _invalid(index: int, subcode: int, title: str, detail: str) -> Refusal:
    # Meta answers "Invalid parameter" and says in error_user_msg which event and why.
    return Refusal(
        100,
        "Invalid parameter",
        subcode=subcode,
        title=title,
        user_msg=f"{detail} (event at index {index} of data)",
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_event(event: object, index: int, now: float) -> None:
    """Raise a Refusal when Meta would refuse this event (docs/meta-errors.md, docs/event-times.md,
    docs/normalization.md)."""
    if not isinstance(event, dict):
        raise _invalid(index, SUBCODE_BAD_NAME, "Invalid Event", "Each event must be an object")
    name = event.get("event_name")
    if not isinstance(name, str) or not name.strip():
        raise _invalid(
            index, SUBCODE_BAD_NAME, "Missing Event Name", "event_name must be a non-empty string"
        )
    source = event.get("action_source")
    if source not in ACTION_SOURCES:
        raise _invalid(
            index,
            SUBCODE_BAD_SOURCE,
            "Invalid Action Source",
            f"action_source {source!r} is not one of {', '.join(sorted(ACTION_SOURCES))}",
        )
    _check_time(event.get("event_time"), str(source), index, now)
    user_data = event.get("user_data")
    if not isinstance(user_data, dict):
        raise _invalid(
            index,
            SUBCODE_BAD_USER_DATA,
            "Missing User Data",
            "user_data is required and must be an object with at least one customer identifier",
        )
    _check_user_data(user_data, index)
    custom_data = event.get("custom_data")
    if custom_data is not None:
        _check_custom_data(custom_data, index)
    _check_processing_options(event, index)


def _check_time(event_time: object, source: str, index: int, now: float) -> None:
    if isinstance(event_time, bool) or not isinstance(event_time, int):
        raise _invalid(
            index,
            SUBCODE_BAD_TIME,
            "Invalid Event Timestamp",
            f"event_time must be an integer Unix timestamp in seconds; got {event_time!r}",
        )
    if event_time >= 10**12 or event_time > now + _TEN_YEARS:
        raise _invalid(
            index,
            SUBCODE_BAD_TIME,
            "Invalid Event Timestamp",
            f"event_time {event_time} looks like milliseconds; send Unix seconds",
        )
    if event_time > now + FUTURE_TOLERANCE:
        raise _invalid(
            index,
            SUBCODE_BAD_TIME,
            "Event Timestamp In The Future",
            f"event_time {event_time} is {event_time - now:.0f} seconds in the future",
        )
    window = send_window(source).total_seconds()
    age = now - event_time
    if age > window:
        raise _invalid(
            index,
            SUBCODE_TOO_OLD,
            "Event Timestamp Too Old",
            f"The timestamp for this event is {age / 86400:.1f} days old; events with "
            f"action_source {source} must be sent within {window / 86400:.0f} days of when "
            "they occurred",
        )


def _check_user_data(user_data: Mapping[str, Any], index: int) -> None:
    present = frozenset(
        k for k, v in user_data.items() if k in USER_DATA_FIELDS and v not in (None, "", [])
    )
    if not present:
        raise _invalid(
            index,
            SUBCODE_BAD_USER_DATA,
            "Missing Customer Information",
            "user_data needs at least one customer information parameter",
        )
    if any(present <= invalid for invalid in INVALID_ALONE):
        raise _invalid(
            index,
            SUBCODE_BAD_USER_DATA,
            "Insufficient Customer Information",
            f"user_data with only {', '.join(sorted(present))} cannot be matched; "
            "add an e-mail, phone, lead_id or external_id",
        )
    for key in HASHED_FIELDS:
        if key not in user_data:
            continue
        value = user_data[key]
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str) and _HEX64.match(v) for v in values):
            raise _invalid(
                index,
                SUBCODE_NOT_HASHED,
                "Value Not Hashed",
                f"user_data.{key} must be a lowercase hex SHA-256 hash (64 characters) "
                "or a list of them",
            )
    if "lead_id" in user_data:
        lead_id = user_data["lead_id"]
        if not _is_int(lead_id) or not 15 <= len(str(abs(lead_id))) <= 17:
            raise _invalid(
                index,
                SUBCODE_BAD_LEAD_ID,
                "Invalid Lead ID",
                f"user_data.lead_id must be an integer of 15 to 17 digits; got {lead_id!r}",
            )
    if "fbc" in user_data:
        fbc = user_data["fbc"]
        if not isinstance(fbc, str) or not _FBC.match(fbc):
            raise _invalid(
                index,
                SUBCODE_BAD_FBC,
                "Invalid Click ID",
                "user_data.fbc must look like fb.1.<creation time>.<fbclid>",
            )


def _check_custom_data(custom_data: object, index: int) -> None:
    if not isinstance(custom_data, dict):
        raise _invalid(
            index, SUBCODE_BAD_VALUE, "Invalid Custom Data", "custom_data must be an object"
        )
    if "value" not in custom_data:
        return
    if not _is_number(custom_data["value"]):
        raise _invalid(
            index,
            SUBCODE_BAD_VALUE,
            "Invalid Value",
            f"custom_data.value must be a number; got {custom_data['value']!r}",
        )
    currency = custom_data.get("currency")
    # Meta: "currency must be a valid ISO 4217 three-digit currency code" (developers.facebook
    # .com/docs/marketing-api/conversions-api/parameters/custom-data): "XYZ" is refused too.
    if not isinstance(currency, str) or not _CURRENCY.match(currency) or not _iso_4217(currency):
        raise _invalid(
            index,
            SUBCODE_BAD_VALUE,
            "Invalid Currency",
            f"custom_data.currency must be a 3-letter ISO 4217 code when value is sent; "
            f"got {currency!r}",
        )


def _iso_4217(code: str) -> bool:
    import pycountry

    return pycountry.currencies.get(alpha_3=code.upper()) is not None


def _check_processing_options(event: Mapping[str, Any], index: int) -> None:
    """Limited Data Use (developers.facebook.com/docs/marketing-apis/data-processing-options):
    `data_processing_options` is a list whose one documented value is "LDU" ([] says "not LDU"
    explicitly); country and state are integers (0 = let Meta geolocate, 1 = US, 1000+ = a US
    state) and only mean something with LDU."""
    if "data_processing_options" not in event:
        for key in ("data_processing_options_country", "data_processing_options_state"):
            if key in event:
                raise _invalid(
                    index,
                    SUBCODE_BAD_PROCESSING_OPTIONS,
                    "Invalid Data Processing Options",
                    f"{key} needs data_processing_options",
                )
        return
    options = event["data_processing_options"]
    if not isinstance(options, list) or any(o != "LDU" for o in options):
        raise _invalid(
            index,
            SUBCODE_BAD_PROCESSING_OPTIONS,
            "Invalid Data Processing Options",
            f'data_processing_options must be ["LDU"] or []; got {options!r}',
        )
    for key in ("data_processing_options_country", "data_processing_options_state"):
        if key in event and not _is_int(event[key]):
            raise _invalid(
                index,
                SUBCODE_BAD_PROCESSING_OPTIONS,
                "Invalid Data Processing Options",
                f"{key} must be an integer; got {event[key]!r}",
            )


def _body() -> dict[str, Any]:
    """Graph takes JSON, or a form whose `data` is a JSON string."""
    if request.is_json:
        parsed = request.get_json(silent=True)
        if not isinstance(parsed, dict):
            raise Refusal(100, "Invalid parameter", user_msg="The request body is not valid JSON")
        return parsed
    body: dict[str, Any] = dict(request.form.items())
    if "data" in body:
        try:
            body["data"] = json.loads(body["data"])
        except ValueError:
            raise Refusal(
                100, "(#100) param data must be an array.", user_msg="data is not valid JSON"
            ) from None
    return body


def create_fake_meta(
    access_token: str = "local-demo-token",
    pixel_ids: Collection[str] | None = None,
    now: Callable[[], float] = time.time,
    record: str | os.PathLike[str] | None = None,
    test_event_codes: Collection[str] | None = None,
    speed: MetaSpeed | None = None,
) -> Flask:
    """The fake Graph API as a Flask app. `pixel_ids=None` accepts any numeric pixel id;
    `test_event_codes=None` any code shaped like Meta's (TEST12345), else only those codes;
    `record` appends each accepted event to that file as a JSON line; `speed` sets latency and
    a rate limit (also `POST /_fake/speed`; `/_fake/reset` goes back to this one)."""
    app = Flask(__name__)
    state = FakeMetaState(
        access_token=access_token,
        pixel_ids=frozenset(pixel_ids) if pixel_ids is not None else None,
        test_event_codes=frozenset(test_event_codes) if test_event_codes is not None else None,
        now=now,
        record=os.fspath(record) if record is not None else None,
        speed=speed or MetaSpeed(),
        initial_speed=speed or MetaSpeed(),
    )
    app.extensions["fake_meta"] = state

    @app.errorhandler(Refusal)
    def _refused(exc: Refusal) -> tuple[Response, int]:
        response = jsonify(exc.envelope())
        response.headers.update(exc.headers)
        return response, exc.status

    @app.post("/<version>/<pixel_id>/events")
    def events(version: str, pixel_id: str) -> tuple[Response, int]:
        started = time.monotonic()
        with state.serving(started) as entry:
            try:
                accepted = _answer(state, version, pixel_id, started, entry)
            except Refusal as refusal:
                entry["status"], entry["code"] = refusal.status, refusal.code
                entry["answer"] = refusal.envelope()
                with state.lock:
                    state.rejections += 1
                raise
            answer = {"events_received": accepted, "messages": [], "fbtrace_id": _fbtrace_id()}
            entry["status"], entry["answer"] = 200, answer
        return jsonify(answer), 200

    @app.get("/_fake/events")
    def fake_events() -> Response:
        with state.lock:
            return jsonify({"events": list(state.events)})

    @app.get("/_fake/stats")
    def fake_stats() -> Response:
        with state.lock:
            return jsonify(
                {
                    "requests": state.requests,
                    "events": len(state.events),
                    "rejections": state.rejections,
                    "custom_event_names": dict(state.custom_event_names),
                    "throttled": state.throttled,
                    "peak_in_flight": state.peak_in_flight,
                }
            )

    @app.get("/_fake/requests")
    def fake_requests() -> Response:
        """Each events POST: started/finished (the fake's monotonic seconds), HTTP status, Meta
        code when refused, the event ids it carried (what was in flight together) and the body
        it answered (`answer`: events_received and fbtrace_id, or Meta's error)."""
        with state.lock:
            return jsonify({"requests": list(state.request_log)})

    @app.get("/_fake/speed")
    def fake_speed() -> Response:
        with state.lock:
            return jsonify(state.speed.to_json())

    @app.post("/_fake/speed")
    def fake_set_speed() -> tuple[Response, int]:
        """Change any of latency_ms, per_event_ms, rate_limit (null: none), rate_window,
        throttle_code; the others keep their values."""
        spec = request.get_json(silent=True)
        known = set(MetaSpeed().to_json())
        if not isinstance(spec, dict) or not set(spec) <= known:
            msg = f"send a JSON object with any of {', '.join(sorted(known))}"
            return jsonify({"error": {"message": msg}}), 400
        with state.lock:
            try:
                state.speed = MetaSpeed(**{**state.speed.to_json(), **spec})
            except (TypeError, ValueError) as exc:
                return jsonify({"error": {"message": str(exc)}}), 400
            state.counted_calls.clear()
            return jsonify(state.speed.to_json()), 200

    @app.post("/_fake/unknown_lead_ids")
    def fake_unknown_lead_ids() -> tuple[Response, int]:
        spec = request.get_json(silent=True)
        ids = spec.get("lead_ids") if isinstance(spec, dict) else None
        if not isinstance(ids, list) or not all(_is_int(i) for i in ids):
            return jsonify({"error": {"message": "lead_ids must be a list of integers"}}), 400
        with state.lock:
            state.unknown_lead_ids = set(ids)
        return jsonify({"ok": True, "lead_ids": ids}), 200

    @app.post("/_fake/reset")
    def fake_reset() -> Response:
        state.reset()
        return jsonify({"ok": True})

    @app.post("/_fake/faults")
    def fake_faults() -> tuple[Response, int]:
        spec = request.get_json(silent=True)
        if not isinstance(spec, dict) or spec.get("mode") not in FAULT_MODES:
            modes = ", ".join(sorted(FAULT_MODES))
            return jsonify({"error": {"message": f"mode must be one of {modes}"}}), 400
        count, delay = spec.get("count", 1), spec.get("delay", 3.0)
        if not _is_int(count) or count < 0 or not _is_number(delay) or delay < 0:
            msg = "count must be a whole number ≥ 0 and delay a number of seconds ≥ 0"
            return jsonify({"error": {"message": msg}}), 400
        with state.lock:
            state.fault_mode = str(spec["mode"]) if count else None
            state.fault_count = count
            state.fault_delay = float(delay)
        return jsonify({"ok": True, "mode": spec["mode"], "count": count}), 200

    return app


def _answer(
    state: FakeMetaState, version: str, pixel_id: str, started: float, entry: dict[str, Any]
) -> int:
    """One events POST, as Graph answers it: a fault asked for (at once), or after the latency
    the rate limit's throttle or Meta's rules (docs/meta-errors.md). Returns how many events
    were kept."""
    with state.lock:
        speed = state.speed
    data = _body_data_or_none()
    entry["event_ids"] = [e.get("event_id") for e in data if isinstance(e, dict)] if data else []
    mode, fault_delay = state.take_fault()
    if mode is not None:
        _serve_fault(mode, fault_delay)
    # Meta's own work is part of its round trip: the request is checked first, and the answer
    # comes once the latency has passed (or once the checks are done, when they take longer).
    refusal: Refusal | None = None
    kept: list[dict[str, Any]] = []
    try:
        kept = _accept(state, version, pixel_id)
    except Refusal as exc:
        refusal = exc
    delay = speed.delay(len(data) if data else 0) - (time.monotonic() - started)
    if delay > 0:
        time.sleep(delay)  # Meta's round trip: the answer comes after it, whatever it says
    throttled = state.take_call(time.monotonic())
    if throttled is not None:
        raise _throttle(throttled, pixel_id)
    if refusal is not None:
        raise refusal
    return _keep(state, kept)


def _body_data_or_none() -> list[Any] | None:
    """The events of a POST, when its body can be read (for latency and the log only)."""
    try:
        data = _body().get("data")
    except Refusal:
        return None
    return data if isinstance(data, list) else None


def _serve_fault(mode: str, delay: float) -> None:
    """Answer the way Graph does when it is down, throttled, or the token has lapsed."""
    if mode == "timeout":
        time.sleep(delay)  # then answer normally: the client should have given up by now
        return
    if mode == "500":
        raise Refusal(
            2,
            "An unexpected error has occurred. Please retry your request later.",
            transient=True,
            status=500,
        )
    if mode == "throttle":
        raise Refusal(4, THROTTLE_MESSAGES[4], transient=True)
    raise Refusal(
        190,
        "Error validating access token: Session has expired.",
        subcode=463,
        user_msg="Session has expired",
    )


def _accept(state: FakeMetaState, version: str, pixel_id: str) -> list[dict[str, Any]]:
    """Validate one events POST: every event to keep (_keep), or a Refusal that keeps none
    (docs/meta-errors.md)."""
    if not _VERSION.match(version):
        raise Refusal(2500, f"Unknown path components: /{version}/{pixel_id}/events")
    if _version_number(version) < _version_number(OLDEST_VERSION):
        raise Refusal(
            CODE_DEPRECATED_VERSION,
            f"(#{CODE_DEPRECATED_VERSION}) You are calling a deprecated version of the Ads API. "
            f"Please update to the latest version: {LATEST_VERSION}.",
        )
    body = _body()
    token = body.get("access_token") or request.args.get("access_token")
    if not token or token != state.access_token:
        raise Refusal(190, "Invalid OAuth access token - Cannot parse access token")
    known = pixel_id.isdigit() if state.pixel_ids is None else pixel_id in state.pixel_ids
    if not known:
        raise Refusal(
            100,
            # Graph's words, as segment-docs PR #4575 and roughike/flutter_facebook_login #44
            # quote them (type GraphMethodException, code 100, subcode 33).
            f"Unsupported post request. Object with ID '{pixel_id}' does not exist, cannot be "
            "loaded due to missing permissions, or does not support this operation. Please read "
            "the Graph API documentation at https://developers.facebook.com/docs/graph-api",
            subcode=SUBCODE_NO_SUCH_OBJECT,
            kind="GraphMethodException",
        )
    _check_test_event_code(state, body.get("test_event_code"))
    data = body.get("data")
    if data is None:
        raise Refusal(100, "(#100) The parameter data is required")
    if not isinstance(data, list) or not data:
        raise Refusal(100, "(#100) param data must be a non-empty array")
    if len(data) > MAX_EVENTS:
        raise Refusal(
            100,
            f"(#100) param data must be an array of at most {MAX_EVENTS} events; got {len(data)}",
        )
    now = state.now()
    with state.lock:
        unknown = set(state.unknown_lead_ids)
    for index, event in enumerate(data):
        check_event(event, index, now)
        lead_id = event["user_data"].get("lead_id")
        if lead_id in unknown:
            raise _invalid(
                index,
                SUBCODE_BAD_LEAD_ID,
                "Invalid Lead ID",
                f"user_data.lead_id {lead_id} is not a lead Meta knows",
            )
    extra: dict[str, Any] = {"pixel_id": pixel_id, "received_at": now}
    if body.get("test_event_code"):
        extra["test_event_code"] = body["test_event_code"]
    return [{**event, **extra} for event in data]


def _keep(state: FakeMetaState, kept: list[dict[str, Any]]) -> int:
    """Keep an accepted POST's events (GET /_fake/events, --record)."""
    with state.lock:
        state.events.extend(kept)
        state.custom_event_names.update(
            e["event_name"] for e in kept if e["event_name"] not in STANDARD_EVENTS
        )
        if state.record is not None:
            with open(state.record, "a", encoding="utf-8") as out:
                out.writelines(json.dumps(e, ensure_ascii=False) + "\n" for e in kept)
    return len(kept)


def _version_number(version: str) -> tuple[int, int]:
    major, minor = version[1:].split(".")
    return int(major), int(minor)


def _check_test_event_code(state: FakeMetaState, code: object) -> None:
    """A code Events Manager did not give refuses the whole request, whatever the events hold.

    Meta documents no error shape for this. The fake answers as Graph answers an invalid
    parameter (code 100, no subcode) and names the parameter in error_user_title/msg, the way
    Meta's invalid-parameter answers name theirs; a client must not lean on the wording alone
    (it cannot know that Meta's real text says "test_event_code")."""
    if code is None or code == "":
        return
    valid = (
        isinstance(code, str) and _TEST_CODE.match(code) is not None
        if state.test_event_codes is None
        else code in state.test_event_codes
    )
    if not valid:
        raise Refusal(
            100,
            "Invalid parameter",
            title="Invalid test_event_code",
            user_msg=f"The test_event_code {code!r} is not a test code of this dataset",
        )


class _QuietQueryHandler(WSGIRequestHandler):
    """Request log lines without query strings: a token sent as ?access_token= stays unlogged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path: str | None = getattr(self, "path", None)
        if path is not None:
            self.path = path.split("?", 1)[0]
        self.requestline = re.sub(r"\?\S*", "", self.requestline)
        try:
            super().log_request(code, size)
        finally:
            if path is not None:
                self.path = path


def serve(
    host: str,
    port: int,
    record: str | None,
    access_token: str = "local-demo-token",
    speed: MetaSpeed | None = None,
) -> None:
    """Run the fake Meta in the foreground (`sheet-bridge emulate meta`) until interrupted."""
    app = create_fake_meta(access_token=access_token, record=record, speed=speed)
    run_simple(host, port, app, threaded=True, request_handler=_QuietQueryHandler)
