"""Send events to Meta's Conversions API: batches, retries, bisection, one outcome per event."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from sheet_bridge.meta.payload import dumps as _encode

log = logging.getLogger(__name__)

# docs/meta-errors.md: Meta takes at most 1,000 events per request.
MAX_BATCH = 1000
# docs/meta-errors.md: the non-client errors Meta says may be retried (with is_transient: true too).
TRANSIENT_CODES: frozenset[int] = frozenset({1, 2, 4, 17, 341, 368, 613})
# Throttling (Graph's error-handling guide): 4 app, 17 user, 32 page, 613 calls within a time
# window, 80000-80014 business-use-case limits such as 80004 "too many calls to this
# ad-account" (rudder-transformer's facebook network handler maps 80003 to HTTP 429). Retried
# with backoff; when the retries run out the pass stops, because every later batch would be
# throttled alike and each attempt only extends the limit.
RATE_LIMIT_CODES: frozenset[int] = frozenset({4, 17, 32, 613, *range(80000, 80015)})
# docs/event-times.md / rudder-transformer: the one 2804xxx subcode seen in the wild, event_time too
# old.
SUBCODE_TOO_OLD = 2804003
# Meta's Conversions API data errors are code 100 with a 2804xxx subcode (rudder-transformer's
# facebook network handler lists 2804001, 2804003, 2804007, 2804016, 2804017, 2804019, 2804048;
# Meta publishes no table). They describe an event: such a refusal is isolated by bisection.
EVENT_DATA_SUBCODES = range(2804000, 2805000)
# Business-use-case limits answer with this header: per business object, usage in percent and
# "estimated_time_to_regain_access" in minutes (developers.facebook.com/docs/graph-api/overview/
# rate-limiting). The client waits that long before its next try, or stops when it is too long.
BUC_USAGE_HEADER = "X-Business-Use-Case-Usage"
# Graph's "object does not exist" subcode: the pixel id is wrong, for every event alike.
SUBCODE_NO_SUCH_OBJECT = 33
# "(#2635) You are calling a deprecated version of the Ads API. Please update to the latest
# version: v9.0." (facebook-python-business-sdk PR #582; fbsamples/marketing-api-samples #3).
CODE_DEPRECATED_VERSION = 2635
# "Unknown path components": the URL itself is wrong (an api_version Graph does not know).
CODE_UNKNOWN_PATH = 2500
TOKEN_REJECTED = (
    "not sent: the access token was rejected (code 190); "
    "generate a new CAPI token in Events Manager"
)
WHOLE_REQUEST = "Meta refused the whole request"
_SUMMARY_LIMIT = 500


def encode_events(events: Sequence[Mapping[str, Any]]) -> bytes:
    """The events as a request's `data` holds them, encoded ahead of `CapiClient.send` (the
    caller's thread does the encoding while the sending threads wait for Meta)."""
    return _encode(list(events)).encode("utf-8")


def join_encoded(events: Iterable[str]) -> bytes:
    """`encode_events` of events each already encoded alone (`_encode` of one event, as
    sync/plan.py PlannedEvent.json gives it): the same bytes."""
    return ("[" + ",".join(events) + "]").encode("utf-8")


State = Literal["sent", "failed", "expired", "not_sent"]

# Where Meta's words name a parameter of the request, not of an event: the test code, the token,
# the API version. The words are a hint beside the codes, never the only test (docs/meta-errors.md).
_NAMES_TEST_CODE = re.compile(r"test[ _]?event[ _]?code", re.IGNORECASE)
_NAMES_VERSION = re.compile(r"deprecated version|api version|unknown path", re.IGNORECASE)
# Where they name one event: "data[3]", "data[3].user_data", "event at index 3".
_NAMES_EVENT = re.compile(r"\bdata\[\d+\]|\bindex \d+", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class SendOutcome:
    """What became of one event: its state, a sentence a sales person can read, Meta's ids."""

    state: State
    message: str
    fbtrace_id: str | None = None
    code: int | None = None
    subcode: int | None = None
    # True when a later pass may succeed without anyone changing the event.
    transient: bool = False
    events_received: int | None = None

    @property
    def summary(self) -> str:
        """One line for the sheet's "CAPI Response" column."""
        if self.state == "sent":
            text = "ok"
        elif self.code is not None:
            code = f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)
            text = f"error {code}: {self.message}"
        else:
            text = self.message
        if self.fbtrace_id:
            text += f" · fbtrace_id {self.fbtrace_id}"
        return text if len(text) <= _SUMMARY_LIMIT else text[: _SUMMARY_LIMIT - 1] + "…"


class CapiError(Exception):
    """The client cannot be used as configured (a bad URL, pixel id, batch size…)."""


@dataclass(frozen=True)
class _Answer:
    """One HTTP exchange, classified. `error` is Meta's error envelope when there was one."""

    status: int | None  # None: no HTTP answer (timeout, connection refused)
    error: Mapping[str, Any] | None
    body: Mapping[str, Any] | None
    problem: str  # what went wrong in plain words (empty when the batch went)
    regain_seconds: float = 0.0  # Meta's estimate of when a throttle lifts (BUC header)

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    @property
    def code(self) -> int | None:
        return _int_or_none(self.error.get("code")) if self.error else None

    @property
    def subcode(self) -> int | None:
        return _int_or_none(self.error.get("error_subcode")) if self.error else None

    @property
    def fbtrace_id(self) -> str | None:
        source = self.error if self.error is not None else self.body
        value = source.get("fbtrace_id") if source else None
        return str(value) if value else None

    @property
    def transient(self) -> bool:
        # docs/meta-errors.md: only non-client errors are worth another try.
        if self.status is None or self.status >= 500 or self.status in (408, 429):
            return True
        if self.error is None:
            return False
        return (
            self.code in TRANSIENT_CODES
            or self.code in RATE_LIMIT_CODES
            or self.error.get("is_transient") is True
        )

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or self.code in RATE_LIMIT_CODES

    @property
    def words(self) -> str:
        """Everything Meta said in words, for the hints below."""
        if not self.error:
            return ""
        keys = ("message", "error_user_title", "error_user_msg")
        return " ".join(str(self.error.get(k) or "") for k in keys)

    @property
    def names_an_event(self) -> bool:
        """Meta blamed one event: a 2804xxx data subcode, or its words give an event's path
        (data[3].user_data, "event at index 3"). Such a refusal is isolated by bisection."""
        return (
            self.code == 100
            and self.subcode in EVENT_DATA_SUBCODES
            and not _NAMES_TEST_CODE.search(self.words)
        ) or _NAMES_EVENT.search(self.words) is not None

    @property
    def request_problem(self) -> str | None:
        """What about the request itself Meta refused, when the answer says so: "token",
        "test_event_code", "api_version", "pixel", "permission" or "request"; None when the
        refusal may be about the events (code 100 without more) or was no refusal at all.

        docs/meta-errors.md: token 190, permissions 10 and 200-299, pixel 100/33, API version
        2635, and any code that is not "invalid parameter" hit every event alike."""
        if self.ok or self.transient:
            return None
        if self.error is None:
            return "request"  # HTTP 4xx without Meta's envelope: a proxy, a wrong graph_url
        code, words = self.code, self.words
        if code == 190:
            return "token"
        if _NAMES_TEST_CODE.search(words):
            return "test_event_code"
        if code in (CODE_DEPRECATED_VERSION, CODE_UNKNOWN_PATH) or _NAMES_VERSION.search(words):
            return "api_version"
        if code == 100 and self.subcode == SUBCODE_NO_SUCH_OBJECT:
            return "pixel"
        if code is not None and (code in (3, 10) or 200 <= code <= 299):
            return "permission"
        if code == 100 or self.names_an_event:
            return None
        return "request"

    def same_refusal(self, other: _Answer) -> bool:
        """The same answer, but for trace ids and numbers in the text (docs/meta-errors.md: a single
        event refused the way the whole batch was is a sign the request is at fault)."""

        def shape(a: _Answer) -> tuple[object, ...]:
            return (a.status, a.code, a.subcode, _DIGITS.sub("#", a.words))

        return shape(self) == shape(other)


@dataclass(slots=True)
class _Call:
    """What one send() call has learnt so far. Per call, not per client: several calls run at
    once in worker threads (the pass keeps a few requests in flight)."""

    started: float  # on the client's clock: the retry budget runs from here
    # Proof that the request itself is sound: once Meta accepted one request of this call, a
    # later refusal is about the events in it, not the token, pixel or test code.
    accepted: bool = False
    probed: bool = False
    last_refusal: _Answer | None = None
    # The events of the whole call as `data` holds them, encoded by the caller (encode_events):
    # sent as they are whenever a request carries all of them.
    encoded: bytes | None = None
    events: int = 0


class _Throttle:
    """Meta is limiting this client's calls. Every request waits out the pause the last
    throttling answer set; then, until Meta takes a request again, one request at a time tries:
    the others' tries would only extend the limit (and fire all at once after a shared pause)."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self._clock, self._sleep = clock, sleep
        self._state = threading.Condition()
        self.answers = 0
        self._quiet_until = 0.0  # on the client's clock
        self._limited = False  # a throttling answer, and nothing taken since
        self._trying = False  # a request is finding out whether the limit has lifted

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Wait until a request may leave; it leaves during the with-block."""
        trying = self._wait()
        try:
            yield
        finally:
            if trying:
                with self._state:
                    self._trying = False
                    self._state.notify_all()

    def hit(self, pause: float) -> None:
        """A throttling answer: no request leaves for `pause` seconds."""
        with self._state:
            self.answers += 1
            self._limited = True
            self._quiet_until = max(self._quiet_until, self._clock() + pause)

    def clear(self) -> None:
        """Meta answered something other than a throttle: the limit is over."""
        with self._state:
            if self._limited:
                self._limited = False
                self._state.notify_all()

    def _wait(self) -> bool:
        """True when this request is the one trying whether the limit has lifted."""
        while True:
            with self._state:
                pause = self._quiet_until - self._clock()
                if pause <= 0:
                    if not self._limited:
                        return False
                    if not self._trying:
                        self._trying = True
                        return True
                    self._state.wait(timeout=1.0)  # for the trying request's answer
                    continue
            self._sleep(pause)


class _Halt(Exception):
    """Every event not yet answered gets this outcome: the run cannot go on."""

    def __init__(self, outcome: SendOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class CapiClient:
    """POSTs events to `{graph_url}/{api_version}/{pixel_id}/events`, the token in the body only.

    A batch Meta refuses for an invalid event is split in halves until each bad event stands
    alone, so the good ones still go, once (docs/meta-errors.md: one bad event sinks the whole
    batch).

    Safe to share between threads: each send() keeps its own state, the counters are locked, and
    a throttling answer to any request pauses every request of the client (never hammer).
    """

    def __init__(
        self,
        graph_url: str,
        api_version: str,
        pixel_id: str,
        access_token: str,
        *,
        test_event_code: str = "",
        batch_size: int = 500,
        timeout: float = 20.0,
        max_attempts: int = 5,
        max_retry_seconds: float = 60.0,
        backoff_base: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        partner_agent: str = "sheet-bridge",
        on_request: Callable[[float], None] | None = None,
    ) -> None:
        parts = urlsplit(graph_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CapiError(
                f"graph_url {graph_url!r} is not an http(s) URL; omit it for "
                "https://graph.facebook.com or write http://127.0.0.1:PORT for the fake Meta"
            )
        if parts.query or parts.fragment:
            raise CapiError(f"graph_url {graph_url!r} must not carry a query or fragment")
        if not (digits := str(pixel_id).strip()).isascii() or not digits.isdigit():
            raise CapiError(
                f"pixel_id {pixel_id!r} is not a number; copy the Pixel (dataset) ID "
                "from Events Manager"
            )
        if not api_version.strip() or "/" in api_version:
            raise CapiError(f"api_version {api_version!r} should look like 'v25.0'")
        if not access_token:
            raise CapiError("no access token; set the environment variable the config names")
        self.url = f"{graph_url.rstrip('/')}/{api_version.strip()}/{str(pixel_id).strip()}/events"
        self.pixel_id = str(pixel_id).strip()
        self.api_version = api_version.strip()
        self._token = access_token
        self.test_event_code = test_event_code
        self.partner_agent = partner_agent
        self._on_request = on_request  # told each request's seconds, answered or not (metrics)
        self.batch_size = min(max(int(batch_size), 1), MAX_BATCH)
        self.max_attempts = max(int(max_attempts), 1)
        self.max_retry_seconds = max_retry_seconds
        self.backoff_base = backoff_base
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._http = httpx.Client(timeout=httpx.Timeout(timeout), transport=transport)
        self._lock = threading.Lock()
        self.requests_made: int = 0
        self._throttle = _Throttle(clock, sleep)

    @property
    def throttled(self) -> int:
        """Throttling answers received so far (a sender keeps fewer requests in flight)."""
        return self._throttle.answers

    def __repr__(self) -> str:
        return f"CapiClient(url={self.url!r}, batch_size={self.batch_size})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CapiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- sending ---------------------------------------------------------------------------

    def send(
        self,
        events: Sequence[Mapping[str, Any]],
        on_progress: Callable[[int, int], None] | None = None,
        *,
        encoded: bytes | None = None,
    ) -> list[SendOutcome]:
        """Send every event; one outcome per event, in the same order. Never raises for what
        Meta answers: refusals, outages and token problems all become outcomes.

        Two kinds of refusal (docs/meta-errors.md). One event is bad: Meta refuses the batch, and
        bisection isolates that event (state "failed", kept until its row changes) while the
        others go once. The request is bad (token, pixel, permission, test_event_code, API
        version, throttling): no event is to blame, so nothing is bisected or blamed; every
        event not yet sent gets one "not_sent" outcome saying what to fix, and stays due.

        `encoded`: `encode_events(events)`, made ahead by the caller; a request of them all
        sends it as it is (a part of them, as bisection sends, is encoded here).
        """
        total = len(events)
        outcomes: list[SendOutcome | None] = [None] * total
        call = _Call(started=self._clock(), encoded=encoded, events=total)
        try:
            for start in range(0, total, self.batch_size):
                indices = list(range(start, min(start + self.batch_size, total)))
                self._send_batch(events, indices, outcomes, call)
                if on_progress is not None:
                    on_progress(indices[-1] + 1, total)
        except _Halt as halt:
            log.warning("stopped sending: %s", halt.outcome.message)
            outcomes = [o if o is not None else halt.outcome for o in outcomes]
            if on_progress is not None:
                on_progress(total, total)
        done = [o for o in outcomes if o is not None]
        assert len(done) == total  # every path above fills every slot
        return done

    def _send_batch(
        self,
        events: Sequence[Mapping[str, Any]],
        indices: list[int],
        outcomes: list[SendOutcome | None],
        call: _Call,
        known_bad: bool = False,
    ) -> None:
        """Send events[indices]; on a refusal that may be about its events, bisect. `known_bad`:
        the caller knows this group holds a bad event (its sibling went), so skip straight to
        splitting it."""
        if not known_bad or len(indices) == 1:
            answer = self._send_group(events, indices, outcomes, call)
            if answer is None:
                return
            if not call.accepted and not call.probed and not answer.names_an_event:
                # Meta said "invalid parameter" and nothing shows yet whether an event or the
                # request is at fault: ask with two single events (once per call) first.
                call.probed = True
                rest, known_bad = self._probe(events, indices, outcomes, call, answer)
                if rest:
                    self._send_batch(events, rest, outcomes, call, known_bad)
                return
        half = len(indices) // 2
        left, right = indices[:half], indices[half:]
        self._send_batch(events, left, outcomes, call)
        # When the whole left half went, the bad event is on the right: split it without
        # sending it whole first (one request saved per level).
        left_went = all(o is not None and o.state == "sent" for o in (outcomes[i] for i in left))
        log.debug("bisecting %s events (left half went: %s)", len(indices), left_went)
        self._send_batch(events, right, outcomes, call, known_bad=left_went)

    def _send_group(
        self,
        events: Sequence[Mapping[str, Any]],
        indices: list[int],
        outcomes: list[SendOutcome | None],
        call: _Call,
    ) -> _Answer | None:
        """POST events[indices] and fill their outcomes, or return Meta's refusal when it may
        be about the events in it (a group of two or more). Raises _Halt for the request."""
        whole = call.encoded if len(indices) == call.events else None
        # The whole call as given (its events may be built only when read: the encoded bytes
        # go instead); a part of it, as bisection sends, is encoded from its events.
        batch = events if whole is not None else [events[i] for i in indices]
        answer, attempts = self._post_with_retries(batch, call.started, whole)
        outcome = self._batch_outcome(answer, attempts, call)
        if outcome is None and len(indices) == 1:
            outcome = self._refused(answer, call)
        if outcome is None:
            return answer
        for i in indices:
            outcomes[i] = outcome
        return None

    def _probe(
        self,
        events: Sequence[Mapping[str, Any]],
        indices: list[int],
        outcomes: list[SendOutcome | None],
        call: _Call,
        refusal: _Answer,
    ) -> tuple[list[int], bool]:
        """Send the group's first and last events alone. Both refused exactly as the whole group
        was, and nothing accepted: the request is at fault (docs/meta-errors.md), so stop. Otherwise
        each probe has its own outcome; returns the events left to bisect, and whether they are
        known to hold a bad one (both probes went)."""
        probes = [indices[0], indices[-1]]
        refused: list[tuple[int, _Answer]] = []
        for i in probes:
            self._send_group(events, [i], outcomes, call)  # a single's outcome is filled
            if call.last_refusal is not None:
                refused.append((i, call.last_refusal))
        alike = [a for _, a in refused if a.same_refusal(refusal)]
        if len(alike) == 2 and not call.accepted:
            for i in probes:
                outcomes[i] = None  # not theirs: they get the halt's outcome like the rest
            raise _Halt(self._halted("request", refusal))
        for i, answer in refused:  # told apart now: if one went, the other's refusal is its own
            outcomes[i] = self._refused(answer, call)
        rest = [i for i in indices if i not in probes]
        went = [outcomes[i] for i in probes]
        return rest, all(o is not None and o.state == "sent" for o in went)

    def _batch_outcome(self, answer: _Answer, attempts: int, call: _Call) -> SendOutcome | None:
        """The outcome every event of the batch shares, or None when Meta refused something
        that may be inside the batch (then it is bisected). Raises _Halt when the request
        itself was refused: no later batch could go either."""
        call.last_refusal = None
        if answer.ok:
            call.accepted = True
            received = _int_or_none(answer.body.get("events_received")) if answer.body else None
            return SendOutcome("sent", "sent to Meta", answer.fbtrace_id, events_received=received)
        problem = answer.request_problem
        if problem is not None:
            raise _Halt(self._halted(problem, answer))
        if answer.transient:
            if answer.rate_limited:
                raise _Halt(self._halted("rate_limit", answer, attempts))
            tries = "try" if attempts == 1 else "tries"
            return SendOutcome(
                "failed",
                f"Meta did not answer after {attempts} {tries} ({answer.problem}); "
                "will retry next sync",
                answer.fbtrace_id,
                answer.code,
                answer.subcode,
                transient=True,
            )
        call.last_refusal = answer
        return None

    def _halted(self, problem: str, answer: _Answer, attempts: int = 1) -> SendOutcome:
        """The outcome of every event left when the request is refused: not sent, due again at
        the next pass, with what to fix in words."""
        if problem == "token":
            # docs/meta-errors.md: token invalid or expired: stop and alert, never retry.
            return SendOutcome(
                "not_sent", TOKEN_REJECTED, answer.fbtrace_id, 190, answer.subcode, True
            )
        meta_says = answer.problem  # already scrubbed of the token
        fixes = {
            "test_event_code": (
                f"invalid test_event_code {self.test_event_code!r}; clear [meta] "
                "test_event_code or copy the current code from Events Manager → Test events"
            ),
            "api_version": (
                f"API version {self.api_version!r} is deprecated or unknown; set [meta] "
                "api_version to a current one (Meta's answer names the latest)"
            ),
            "pixel": (
                f"pixel (dataset) {self.pixel_id} does not exist or this token cannot use it; "
                "check [meta] pixel_id against Events Manager and generate the token from "
                "that dataset's Settings → Conversions API"
            ),
            "permission": (
                f"the token lacks permission to send to pixel {self.pixel_id}; generate it "
                "from the dataset's Settings → Conversions API, or give its system user access "
                "to the dataset"
            ),
            "rate_limit": (
                f"Meta is limiting calls and still refused after {attempts} "
                f"{'try' if attempts == 1 else 'tries'}"
                + (
                    f" (access returns in about {math.ceil(answer.regain_seconds / 60)} min)"
                    if answer.regain_seconds
                    else ""
                )
                + "; wait, or sync less often"
            ),
            "request": (
                "no event is to blame (single events were refused the same way); check [meta] "
                "pixel_id, api_version, test_event_code and graph_url"
            ),
        }
        return SendOutcome(
            "not_sent",
            f"not sent: {WHOLE_REQUEST}: {fixes[problem]} ({meta_says}); every event stays "
            "due and goes once this is fixed",
            answer.fbtrace_id,
            answer.code,
            answer.subcode,
            transient=True,
        )

    def _refused(self, answer: _Answer, call: _Call) -> SendOutcome:
        """One event's refusal. It is kept (not retried until its row changes) only when Meta
        blamed the event or another request of this call went; else it is retried next pass."""
        error = answer.error or {}
        meta_says = self._scrub(
            str(error.get("error_user_msg") or error.get("message") or answer.problem)
        )
        if answer.subcode == SUBCODE_TOO_OLD:
            title = self._scrub(str(error.get("error_user_title") or "Event Timestamp Too Old"))
            message = (
                "older than Meta's time window (7 days; 62 for physical_store), so Meta "
                f"refused it — {title}: {meta_says}"
            )
            return SendOutcome("expired", message, answer.fbtrace_id, answer.code, answer.subcode)
        its_own = answer.names_an_event or call.accepted
        return SendOutcome(
            "failed",
            meta_says,
            answer.fbtrace_id,
            answer.code,
            answer.subcode,
            transient=not its_own,
        )

    # ---- one request, retried ---------------------------------------------------------------

    def _post_with_retries(
        self, batch: Sequence[Mapping[str, Any]], started: float, encoded: bytes | None = None
    ) -> tuple[_Answer, int]:
        """POST one batch, retrying non-client errors with exponential backoff and jitter.

        Bounded by max_attempts per batch and by max_retry_seconds since send() began (on the
        injected clock), so an outage costs one budget per run, not one per batch. A throttling
        answer pauses every request of this client, for at least as long as Meta says access
        takes to return; when that is past the budget, no retry is made at all.
        """
        attempt = 0
        while True:
            attempt += 1
            with self._throttle.turn():
                answer = self._post(batch, encoded)
                pause = None
                if answer.transient and not answer.ok:
                    pause = self._retry_pause(answer, attempt, started)
                if answer.rate_limited:
                    self._throttle.hit(pause or 0.0)
                else:
                    self._throttle.clear()
            if pause is None:
                return answer, attempt
            log.info(
                "Meta: %s; retry %s of %s in %.2f s",
                answer.problem,
                attempt,
                self.max_attempts - 1,
                pause,
            )
            if not answer.rate_limited:
                self._sleep(pause)  # a throttle's pause is waited in turn(), by every request

    def _retry_pause(self, answer: _Answer, attempt: int, started: float) -> float | None:
        """Seconds to wait before trying again, or None when no try is left in the budget."""
        if attempt >= self.max_attempts:
            return None
        pause: float = self.backoff_base * 2 ** (attempt - 1)
        pause = pause / 2 + self._jitter() * pause / 2  # "equal jitter": never zero
        pause = max(pause, answer.regain_seconds)
        if self._clock() - started + pause > self.max_retry_seconds:
            log.info("retry budget of %.0f s spent; giving up", self.max_retry_seconds)
            return None
        return pause

    def _post(self, batch: Sequence[Mapping[str, Any]], encoded: bytes | None = None) -> _Answer:
        """One POST of `batch` (`encoded`: its `data` as encode_events gives it)."""
        rest: dict[str, Any] = {
            "access_token": self._token,  # docs/meta-errors.md: in the body, never in the URL
            "partner_agent": self.partner_agent,
        }
        if self.test_event_code:
            rest["test_event_code"] = self.test_event_code
        data = encoded if encoded is not None else encode_events(batch)
        # {"data":[…],"access_token":…}: the JSON httpx would make of the whole body.
        body = b'{"data":' + data + b"," + _encode(rest).encode("utf-8")[1:]
        with self._lock:
            self.requests_made += 1
        log.debug("POST %s with %s events", self.url, len(batch))
        began = time.monotonic()
        try:
            response = self._http.post(
                self.url, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.TimeoutException:
            return _Answer(None, None, None, "timed out")
        except httpx.TransportError as exc:
            reason = self._scrub(str(exc)) or type(exc).__name__
            return _Answer(None, None, None, f"connection failed: {reason}")
        finally:
            if self._on_request is not None:
                self._on_request(time.monotonic() - began)
        try:
            return self._classify(response)
        finally:
            _let_go(response)

    def _classify(self, response: httpx.Response) -> _Answer:
        status = response.status_code
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        data = parsed if isinstance(parsed, dict) else None
        error = data.get("error") if data else None
        if isinstance(error, dict):
            text = str(error.get("error_user_msg") or error.get("message") or "")
            problem = f"HTTP {status}, code {error.get('code')}: {self._scrub(text)}"
            return _Answer(status, error, data, problem, _regain_seconds(response.headers))
        if status == 200 and data is not None:
            return _Answer(status, None, data, "")
        # No Meta envelope: a proxy, a wrong graph_url or api_version, or an outage page.
        hint = "" if status >= 500 else "; check graph_url and api_version"
        return _Answer(status, None, None, f"HTTP {status} without a Meta answer{hint}")

    def _scrub(self, text: str) -> str:
        """Meta and httpx texts may echo what we sent; the token never goes further."""
        return text.replace(self._token, "[token]") if self._token else text


def _regain_seconds(headers: Mapping[str, str]) -> float:
    """The longest `estimated_time_to_regain_access` (minutes) in Meta's business-use-case usage
    header, in seconds; 0 when the header is absent or unreadable."""
    try:
        usage = json.loads(headers.get(BUC_USAGE_HEADER, "{}"))
        minutes = [
            float(limit.get("estimated_time_to_regain_access") or 0)
            for limits in usage.values()
            for limit in limits
        ]
    except (ValueError, TypeError, AttributeError):
        return 0.0
    return max(minutes, default=0.0) * 60


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = value.strip().removeprefix("-")
        if digits.isascii() and digits.isdigit():  # "²" and "١٢" are isdigit() too
            return int(value)
    return None


def request_bound(events: int, bad: int, batch_size: int) -> int:
    """Most POSTs `send` needs without retries: one per batch, plus two per bisection level for
    each bad event (docs/meta-errors.md: O(bad · log batch), not O(events)). A refusal in Meta's
    plainest words ("Invalid parameter", no subcode, no event named) before anything was
    accepted adds at most two: the single-event probes that tell request from event."""
    batch_size = min(max(batch_size, 1), MAX_BATCH)
    levels = math.ceil(math.log2(batch_size)) if batch_size > 1 else 0
    return math.ceil(events / batch_size) + bad * 2 * levels


def _let_go(response: httpx.Response) -> None:
    """Close an answer read whole, and let it go with its request: httpx 0.28–0.29 keeps a
    response and its stream in a reference cycle (Response → BoundSyncStream → Response) that
    holds the request's body (~0.5 MB for 500 events) until the cyclic collector runs. Without
    the cycle, reference counting frees it at once, and a pass may keep the collector off
    while it sends (sync/collector.py)."""
    response.close()
    response.stream = httpx.ByteStream(b"")
