"""Send events to Meta's Conversions API: batches, retries, bisection, one outcome per event."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

import sheet_bridge
from sheet_bridge.config import MetaConfig

log = logging.getLogger(__name__)

# DOMAIN.md §4: Meta takes at most 1,000 events per request.
MAX_BATCH = 1000
# DOMAIN.md §4: the non-client errors Meta says may be retried (with is_transient: true too).
TRANSIENT_CODES: frozenset[int] = frozenset({1, 2, 4, 17, 341, 368, 613})
# DOMAIN.md §5 / rudder-transformer: the one 2804xxx subcode seen in the wild, event_time too old.
SUBCODE_TOO_OLD = 2804003
# Graph's "object does not exist" subcode: the pixel id is wrong, for every event alike.
SUBCODE_NO_SUCH_OBJECT = 33
TOKEN_REJECTED = (
    "not sent: the access token was rejected (code 190); "
    "generate a new CAPI token in Events Manager"
)
_SUMMARY_LIMIT = 500

State = Literal["sent", "failed", "expired", "not_sent"]


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
        # DOMAIN.md §4: only non-client errors are worth another try.
        if self.status is None or self.status >= 500 or self.status in (408, 429):
            return True
        if self.error is None:
            return False
        return self.code in TRANSIENT_CODES or self.error.get("is_transient") is True

    @property
    def event_level(self) -> bool:
        """Meta refused something inside the data (code 100, "Invalid parameter"), so a part of
        the batch may still go. Token, permission and pixel errors hit every event alike."""
        return self.code == 100 and self.subcode != SUBCODE_NO_SUCH_OBJECT


class _Halt(Exception):
    """Every event not yet answered gets this outcome: the run cannot go on."""

    def __init__(self, outcome: SendOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


class CapiClient:
    """POSTs events to `{graph_url}/{api_version}/{pixel_id}/events`, the token in the body only.

    A batch Meta refuses for an invalid event is split in halves until each bad event stands
    alone, so the good ones still go, once (DOMAIN.md §4: one bad event sinks the whole batch).
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
    ) -> None:
        parts = urlsplit(graph_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CapiError(
                f"graph_url {graph_url!r} is not an http(s) URL; omit it for "
                "https://graph.facebook.com or write http://127.0.0.1:PORT for the fake Meta"
            )
        if parts.query or parts.fragment:
            raise CapiError(f"graph_url {graph_url!r} must not carry a query or fragment")
        if not str(pixel_id).strip().isdigit():
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
        self._token = access_token
        self.test_event_code = test_event_code
        self.batch_size = min(max(int(batch_size), 1), MAX_BATCH)
        self.max_attempts = max(int(max_attempts), 1)
        self.max_retry_seconds = max_retry_seconds
        self.backoff_base = backoff_base
        self._sleep = sleep
        self._clock = clock
        self._jitter = jitter
        self._http = httpx.Client(timeout=httpx.Timeout(timeout), transport=transport)
        self.requests_made: int = 0

    @classmethod
    def from_config(cls, meta: MetaConfig, access_token: str, **kw: Any) -> CapiClient:
        """A client for the pixel a bridge config names; `kw` overrides the other arguments."""
        options: dict[str, Any] = {
            "test_event_code": meta.test_event_code,
            "batch_size": meta.batch_size,
            "timeout": meta.timeout_seconds,
        }
        options.update(kw)
        return cls(meta.graph_url, meta.api_version, meta.pixel_id, access_token, **options)

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
    ) -> list[SendOutcome]:
        """Send every event; one outcome per event, in the same order. Never raises for what
        Meta answers: refusals, outages and token problems all become outcomes."""
        total = len(events)
        outcomes: list[SendOutcome | None] = [None] * total
        started = self._clock()
        try:
            for start in range(0, total, self.batch_size):
                indices = list(range(start, min(start + self.batch_size, total)))
                self._send_batch(events, indices, outcomes, started)
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
        started: float,
        known_bad: bool = False,
    ) -> None:
        """Send events[indices]; on an event-level refusal, bisect. `known_bad`: the caller knows
        this group holds a bad event (its sibling went), so skip straight to splitting it."""
        if not known_bad or len(indices) == 1:
            answer, attempts = self._post_with_retries([events[i] for i in indices], started)
            outcome = self._batch_outcome(answer, attempts)
            if outcome is None and len(indices) == 1:
                outcome = self._refused(answer)
            if outcome is not None:
                for i in indices:
                    outcomes[i] = outcome
                return
        half = len(indices) // 2
        left, right = indices[:half], indices[half:]
        self._send_batch(events, left, outcomes, started)
        # When the whole left half went, the bad event is on the right: split it without
        # sending it whole first (one request saved per level).
        left_went = all(o is not None and o.state == "sent" for o in (outcomes[i] for i in left))
        log.debug("bisecting %s events (left half went: %s)", len(indices), left_went)
        self._send_batch(events, right, outcomes, started, known_bad=left_went)

    def _batch_outcome(self, answer: _Answer, attempts: int) -> SendOutcome | None:
        """The outcome every event of the batch shares, or None when Meta refused something
        inside the batch (then it is bisected). Raises _Halt when no later batch can go."""
        if answer.ok:
            received = _int_or_none(answer.body.get("events_received")) if answer.body else None
            return SendOutcome("sent", "sent to Meta", answer.fbtrace_id, events_received=received)
        if answer.code == 190:
            # DOMAIN.md §4: token invalid or expired: stop and alert, never retry.
            raise _Halt(
                SendOutcome(
                    "not_sent", TOKEN_REJECTED, answer.fbtrace_id, 190, answer.subcode, True
                )
            )
        if answer.transient:
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
        if not answer.event_level:
            # Permissions, a wrong pixel, a wrong URL: every batch would fail alike, and
            # bisecting would cost one request per event. Stop; a later pass may succeed
            # once someone fixes the setup.
            raise _Halt(
                SendOutcome(
                    "not_sent",
                    f"not sent: {answer.problem}",
                    answer.fbtrace_id,
                    answer.code,
                    answer.subcode,
                    transient=True,
                )
            )
        return None

    def _refused(self, answer: _Answer) -> SendOutcome:
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
        return SendOutcome("failed", meta_says, answer.fbtrace_id, answer.code, answer.subcode)

    # ---- one request, retried ---------------------------------------------------------------

    def _post_with_retries(
        self, batch: list[Mapping[str, Any]], started: float
    ) -> tuple[_Answer, int]:
        """POST one batch, retrying non-client errors with exponential backoff and jitter.

        Bounded by max_attempts per batch and by max_retry_seconds since send() began (on the
        injected clock), so an outage costs one budget per run, not one per batch.
        """
        attempt = 0
        while True:
            attempt += 1
            answer = self._post(batch)
            if answer.ok or not answer.transient or attempt >= self.max_attempts:
                return answer, attempt
            pause = self.backoff_base * 2 ** (attempt - 1)
            pause = pause / 2 + self._jitter() * pause / 2  # "equal jitter": never zero
            if self._clock() - started + pause > self.max_retry_seconds:
                log.info("retry budget of %.0f s spent; giving up", self.max_retry_seconds)
                return answer, attempt
            log.info(
                "Meta: %s; retry %s of %s in %.2f s",
                answer.problem,
                attempt,
                self.max_attempts - 1,
                pause,
            )
            self._sleep(pause)

    def _post(self, batch: list[Mapping[str, Any]]) -> _Answer:
        body: dict[str, Any] = {
            "data": list(batch),
            "access_token": self._token,  # DOMAIN.md §4: in the body, never in the URL
            "partner_agent": f"sheet-bridge/{sheet_bridge.__version__}",
        }
        if self.test_event_code:
            body["test_event_code"] = self.test_event_code
        self.requests_made += 1
        log.debug("POST %s with %s events", self.url, len(batch))
        try:
            response = self._http.post(self.url, json=body)
        except httpx.TimeoutException:
            return _Answer(None, None, None, "timed out")
        except httpx.TransportError as exc:
            reason = self._scrub(str(exc)) or type(exc).__name__
            return _Answer(None, None, None, f"connection failed: {reason}")
        return self._classify(response)

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
            return _Answer(status, error, data, problem)
        if status == 200 and data is not None:
            return _Answer(status, None, data, "")
        # No Meta envelope: a proxy, a wrong graph_url or api_version, or an outage page.
        hint = "" if status >= 500 else "; check graph_url and api_version"
        return _Answer(status, None, None, f"HTTP {status} without a Meta answer{hint}")

    def _scrub(self, text: str) -> str:
        """Meta and httpx texts may echo what we sent; the token never goes further."""
        return text.replace(self._token, "[token]") if self._token else text


def _int_or_none(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def request_bound(events: int, bad: int, batch_size: int) -> int:
    """Most POSTs `send` needs without retries: one per batch, plus two per bisection level for
    each bad event (DESIGN.md "Send": O(bad · log batch), not O(events))."""
    batch_size = min(max(batch_size, 1), MAX_BATCH)
    levels = math.ceil(math.log2(batch_size)) if batch_size > 1 else 0
    return math.ceil(events / batch_size) + bad * 2 * levels
