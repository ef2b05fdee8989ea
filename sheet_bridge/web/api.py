"""The /api blueprint the Apps Script sidebar calls: sync, edits, status, report."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pydantic_core
from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sheet_bridge.sync.edits import EditedRow, EditOutcome, Read, apply_edit, send_due
from sheet_bridge.sync.ledger import LedgerError, SyncBusy
from sheet_bridge.sync.plan import describe_due
from sheet_bridge.sync.rows import time_zone
from sheet_bridge.sync.run import Bridge, LedgerBehindSheet, SyncError, SyncResult, failure_words
from sheet_bridge.web.auth import AuthError
from sheet_bridge.web.passes import (
    ROWS_PAGE,
    in_background,
    parse_pass_ref,
    pass_ref,
    record_json,
    start_pass,
    summary_page,
)
from sheet_bridge.web.registry import Access, BridgeRegistry
from sheet_bridge.web.status import bridge_status
from sheet_bridge.web.sweep import Sweeper

log = logging.getLogger(__name__)
api = Blueprint("api", __name__, url_prefix="/api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Body(BaseModel):
    # Strict: JSON types as written ("yes" or 1 is not a boolean, "2" is not a row number).
    model_config = ConfigDict(extra="forbid", strict=True)


# A request waits this long for its pass by default, at most MAX_WAIT: well inside Apps
# Script's ~60 s UrlFetch deadline and gunicorn's 30 s worker timeout.
DEFAULT_WAIT = 8.0
MAX_WAIT = 25.0


class SyncRequest(_Body):
    spreadsheet_id: str = Field(min_length=1, max_length=200)
    tab: str | None = Field(default=None, max_length=200)
    dry_run: bool = False
    keys: list[str] | None = Field(default=None, max_length=10_000)
    # Who asked: "hourly" passes are watched for repeated failures (an alert).
    trigger: Literal["sync", "hourly", "preview"] = "sync"
    # Seconds to wait for the pass before answering 202 with its id (0: do not wait).
    wait: float = Field(default=DEFAULT_WAIT, ge=0, le=MAX_WAIT)


# How far an edit's time may lie from the server's clock: Meta takes nothing older than 62
# days (docs/event-times.md), and a trigger stamps the edit as it happens, so more than a few
# minutes ahead is a wrong clock, not an edit.
EDIT_MAX_AGE = timedelta(days=62)
EDIT_MAX_AHEAD = timedelta(minutes=5)
# Rows in one edit event; a bigger paste is a job for a pass (POST /api/sync).
EDIT_MAX_ROWS = 500
MAX_ROW = 10_000_000  # Google's limit is 10 million cells: no sheet has more rows
# The longest Status Changed At an edit carries (the add-on sends null for a longer cell,
# which is no date anyway).
STAMP_MAX = 200


class _EditBody(_Body):
    spreadsheet_id: str = Field(min_length=1, max_length=200)
    tab: str = Field(min_length=1, max_length=200)
    at: datetime

    @field_validator("at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-11-26T10:15:00+05:30")
        return v


class EditedRowBody(_Body):
    row: int
    status: str = Field(max_length=1000)
    key: str | None = Field(default=None, max_length=200)
    # The status this edit replaced, when Apps Script gives it (a one-cell edit's e.oldValue);
    # absent or null for a paste, fill-down or sort, which carry no old values.
    old_status: str | None = Field(default=None, max_length=1000)
    # The row's Status Changed At cell before the add-on stamps it ("" when blank): what a
    # withdrawn edit puts back. Absent or null from add-ons that do not send it.
    status_changed_at: str | None = Field(default=None, max_length=STAMP_MAX)

    @field_validator("row")
    @classmethod
    def _data_row(cls, v: int) -> int:
        if not 2 <= v <= MAX_ROW:
            raise ValueError(
                f"{v} is not a data row; send the sheet row number of each edited row "
                f"(2 to {MAX_ROW:,}: row 1 is the header)"
            )
        return v


class EditRequest(_EditBody):
    """One edit event (a cell, a paste, a fill-down, a sort): every row it touched, each with
    its status now and its CAPI Key (null when blank). The backend decides what changed."""

    rows: list[EditedRowBody]

    @field_validator("rows")
    @classmethod
    def _rows(cls, v: list[EditedRowBody]) -> list[EditedRowBody]:
        if not 1 <= len(v) <= EDIT_MAX_ROWS:
            raise ValueError(
                f"{len(v)} rows; send 1 to {EDIT_MAX_ROWS} rows per edit event (for a larger "
                "paste, start a sync with POST /api/sync)"
            )
        first: dict[int, int] = {}
        for i, r in enumerate(v):
            if r.row in first:
                raise ValueError(
                    f"row {r.row} is listed twice (rows.{first[r.row]} and rows.{i}); send "
                    "each edited row once, with its status as it is now"
                )
            first[r.row] = i
        return v


class SingleEditRequest(_EditBody):
    """The one-row form add-ons sent before edit events carried rows (still accepted)."""

    row: int = Field(ge=2, le=MAX_ROW)
    old_value: str | None = Field(default=None, max_length=1000)
    new_value: str = Field(max_length=1000)


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


@api.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return error_response(exc.status, exc.code, exc.message)


@api.errorhandler(AuthError)
def _auth_error(exc: AuthError) -> tuple[Response, int]:
    code = {401: "unauthorized", 403: "forbidden"}.get(exc.status, "auth_unavailable")
    return error_response(exc.status, code, str(exc))


@api.errorhandler(LedgerError)
def _ledger_error(exc: LedgerError) -> tuple[Response, int]:
    # The detail names the ledger's file: for the server log, never for the caller.
    log.error("ledger: %s", exc)
    return error_response(
        500,
        "ledger_unavailable",
        "the ledger cannot be used, so nothing was sent or written; the backend's log says "
        "why and what to do (nothing was reset)",
    )


def _registry() -> BridgeRegistry:
    registry: BridgeRegistry = current_app.extensions["sheet_bridge"]
    return registry


def _parse(model: type[_Body]) -> Any:
    """The request body as `model`, parsed by pydantic's own JSON reader: strict types, and
    a nesting limit (an error, not Python recursion) so deep JSON is a 400."""
    try:
        return model.model_validate_json(request.get_data(cache=False))
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "model_type":
            raise ApiError(400, "invalid_request", "the body must be a JSON object") from None
        if first["type"] == "json_invalid":
            raise ApiError(
                400, "invalid_request", f"the body is not usable JSON: {first['msg']}"
            ) from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, "invalid_request", f"{where}: {first['msg']}") from None


def _allowed_bridge(access: Access, spreadsheet_id: str, tab: str | None) -> Bridge:
    """The bridge a request names, if the caller's credentials open it. A caller whose
    credentials open only some bridges learns nothing about the others: an unknown sheet and
    a sheet it may not use get the same 403."""
    bridge = _registry().find(spreadsheet_id, tab)
    where = f"spreadsheet {spreadsheet_id}" + (f" tab {tab!r}" if tab else "")
    if bridge is not None and (spreadsheet_id, bridge.config.sheets.tab) in access.callers:
        g.caller = access.callers[(spreadsheet_id, bridge.config.sheets.tab)]
        return bridge
    if access.everything:
        raise ApiError(404, "unknown_spreadsheet", f"no bridge is configured for {where}")
    raise ApiError(403, "forbidden", f"these credentials do not open {where}")


def _authorized(model: type[_Body]) -> tuple[Bridge, Any]:
    """Authenticate from the header, then read the body, then check the caller may use the
    bridge it names: a body from a stranger is never read."""
    access = _registry().authenticate(request.headers.get("Authorization"))
    body = _parse(model)
    return _allowed_bridge(access, body.spreadsheet_id, body.tab), body


def _from_query() -> Bridge:
    access = _registry().authenticate(request.headers.get("Authorization"))
    return _allowed_bridge(access, request.args.get("spreadsheet_id", ""), request.args.get("tab"))


def _edit_time_problem(at: datetime, now: datetime) -> str | None:
    earliest, latest = (now - EDIT_MAX_AGE).astimezone(UTC), (now + EDIT_MAX_AHEAD).astimezone(UTC)
    if earliest <= at <= latest:
        return None
    # Echoed in its own offset: year 1 at +14:00 cannot be moved to UTC.
    return (
        f"at: {at.isoformat()} is outside the accepted range {earliest:%Y-%m-%dT%H:%M:%SZ} "
        f"to {latest:%Y-%m-%dT%H:%M:%SZ} (the last 62 days up to 5 minutes ahead of the "
        "server's clock); send the time of the edit from a correctly set clock"
    )


@api.post("/sync")
def sync() -> Any:
    """A pass, answered whole when it ends within `wait` seconds, else 202 and its id."""
    bridge, req = _authorized(SyncRequest)
    trigger = "preview" if req.dry_run else req.trigger
    started = start_pass(bridge, wait=req.wait, dry_run=req.dry_run, keys=req.keys, trigger=trigger)
    where = bridge.sheet_tab
    if started.finished and started.error is not None:
        exc = started.error
        if isinstance(exc, SyncBusy):
            running = bridge.ledger.running_pass(where, bridge.clock())
            body: dict[str, Any] = {
                "error": {
                    "code": "sync_running",
                    "message": "a sync of this spreadsheet is running; its progress is shown "
                    "until it ends",
                },
                "pass_id": pass_ref(where, running.id) if running else None,
            }
            return jsonify(body), 409
        if isinstance(exc, LedgerBehindSheet):
            raise ApiError(409, "ledger_behind_sheet", str(exc))
        if isinstance(exc, SyncError):
            raise ApiError(502, "sheet_unavailable", str(exc))
        raise exc
    if started.pass_id is None:
        raise ApiError(
            503, "pass_not_started", "the pass could not start in time; try again in a minute"
        )
    if started.finished and started.result is not None:
        return jsonify(summary_page(started.pass_id, where, started.result.summary()))
    record = bridge.ledger.get_pass(started.pass_id)
    progress = {"phase": record.phase, "done": record.done, "total": record.total} if record else {}
    return jsonify(
        {"pass_id": pass_ref(where, started.pass_id), "state": "running", **progress}
    ), 202


@api.get("/passes/<ref>")
def passes(ref: str) -> Any:
    """A pass's phase and progress, and once it ended its answer (one page of rows)."""
    access = _registry().authenticate(request.headers.get("Authorization"))
    pass_id = parse_pass_ref(ref)
    if pass_id is None:
        raise ApiError(
            400,
            "invalid_request",
            f"{ref!r} is not a pass id: a pass id is digits 0-9, '-' and 10 characters, as "
            "POST /api/sync answered it",
        )
    offset = _query_int("rows_offset", 0, 0, 10_000_000)
    limit = _query_int("rows_limit", ROWS_PAGE, 1, 500)
    for bridge in _registry().all():
        where = bridge.sheet_tab
        if pass_ref(where, pass_id) != ref:
            continue
        if (where.spreadsheet_id, where.tab) not in access.callers:
            break  # the same answer as an unknown pass: nothing about other bridges
        record = bridge.ledger.get_pass(pass_id)
        if record is not None and record.where == where:
            return jsonify(record_json(record, bridge.clock(), offset, limit))
    raise ApiError(404, "unknown_pass", f"no pass {ref!r} that these credentials may see")


def _query_int(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    # 0-9 only: "²" is str.isdigit() and int() refuses it (a 500); "١٢" would be read as 12.
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise ApiError(
            400, "invalid_request", f"{name}: {text!r} is not a whole number from {low} to {high}"
        )
    return int(text)


# An edit is answered without waiting on Meta: a due edit's send runs in the background and
# is waited for this long at most (its result is in the answer when it ends by then).
EDIT_ANSWER_WAIT = 1.0
# The time limit of an edit's read and record (one Sheets read, a few ledger writes): a sheet
# slower than this is answered 503 in words, and the edit is still recorded once it answers.
EDIT_TIME_LIMIT = 8.0


@api.post("/edits")
def edits() -> Any:
    """One edit event: record what its rows really changed and answer at once (docs/edits.md).
    Changes settle for `[sync] settle_seconds` before they are sent; one already due is sent
    in the background, its answer included when it ends within EDIT_ANSWER_WAIT."""
    access = _registry().authenticate(request.headers.get("Authorization"))
    req = _parse(_edit_form())
    bridge = _allowed_bridge(access, req.spreadsheet_id, req.tab)
    problem = _edit_time_problem(req.at, bridge.clock())
    if problem is not None:
        raise ApiError(400, "invalid_request", problem)
    if isinstance(req, SingleEditRequest):
        edited = [EditedRow(req.row, req.new_value, None, req.old_value)]
    else:
        edited = [
            EditedRow(
                r.row, r.status, (r.key or "").strip() or None, r.old_status, r.status_changed_at
            )
            for r in req.rows
        ]
    outcome = _recorded_in_time(bridge, edited, req.at)
    now = bridge.clock()
    pending = outcome.verdict.pending.values()
    due_now = any(q.due_at <= now for q in pending)
    sending = _send_in_background(bridge, outcome.read) if due_now else None
    sweeper: Sweeper | None = current_app.extensions.get("sheet_bridge_sweeper")
    for q in pending:
        if q.due_at > now and sweeper is not None:
            sweeper.due_at(q.due_at)
    answer = edit_answer(outcome, sending, now)
    if isinstance(req, SingleEditRequest):
        # What the one-row form answered: that row's report.
        answer["row"] = next((r for r in answer["rows"] if r["row"] == req.row), None)
    return jsonify(answer)


def _recorded_in_time(bridge: Bridge, edited: list[EditedRow], at: datetime) -> EditOutcome:
    """apply_edit, within EDIT_TIME_LIMIT (the trigger that called runs on its owner's daily
    trigger runtime): 503 when the sheet is slower, 502 when it cannot be read."""
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["outcome"] = apply_edit(bridge, edited, at)
        except Exception as exc:  # given to the request below (unexpected ones logged too)
            box["error"] = exc
            if not isinstance(exc, SyncError | LedgerError):
                log.warning("edit on %s: %s", bridge.sheet_tab, type(exc).__name__)
        finally:
            done.set()

    in_background(run, "sheet-bridge-edit")
    if not done.wait(EDIT_TIME_LIMIT):
        raise ApiError(
            503,
            "edit_timeout",
            f"the sheet did not answer within {EDIT_TIME_LIMIT:.0f} s; the edit is recorded "
            "when it does, and the next sync sees the change either way",
        )
    error = box.get("error")
    if isinstance(error, SyncError):
        raise ApiError(502, "sheet_unavailable", str(error))
    if error is not None:
        raise error
    outcome: EditOutcome = box["outcome"]
    return outcome


@dataclass
class _Sending:
    """An edit's send in the background, as far as the answer saw it."""

    done: threading.Event = field(default_factory=threading.Event)
    result: SyncResult | None = None
    busy: bool = False
    notice: str | None = None


def _send_in_background(bridge: Bridge, read: Read) -> _Sending:
    """Send the tab's due edits in a thread; wait for it EDIT_ANSWER_WAIT at most."""
    sending = _Sending()

    def run() -> None:
        try:
            sending.result = send_due(bridge, lock_wait=bridge.lock_wait, read_just_now=read)
        except SyncBusy:
            sending.busy = True
        except Exception as exc:  # recorded and queued: the sweep or the next pass sends it
            words = failure_words(exc)
            if isinstance(exc, LedgerBehindSheet):
                words = f"nothing was sent: {words}"
            sending.notice = words
            log.warning("edit send on %s: %s", bridge.sheet_tab, type(exc).__name__)
        finally:
            sending.done.set()

    in_background(run, "sheet-bridge-edit")
    sending.done.wait(EDIT_ANSWER_WAIT)
    return sending


def _edit_form() -> type[_Body]:
    """Which form an edit body is in: the one-row form of older add-ons has `row` and no
    `rows`. Read with pydantic's JSON reader (its nesting limit); a body it cannot read goes
    to the rows form, whose parse says what is wrong."""
    try:
        peek = pydantic_core.from_json(request.get_data(cache=True))
    except ValueError:
        return EditRequest
    single = isinstance(peek, dict) and "row" in peek and "rows" not in peek
    return SingleEditRequest if single else EditRequest


def edit_answer(outcome: EditOutcome, sending: _Sending | None, now: datetime) -> dict[str, Any]:
    """The contract's answer: changed / unchanged / moved / seen / refused / withdrawn /
    restore / pending / queued / message / rows (docs/edits.md)."""
    verdict = outcome.verdict
    tz = time_zone(outcome.read[0])
    finished = sending is not None and sending.done.is_set()
    result = sending.result if sending is not None and finished else None
    queued = sending is not None and finished and sending.busy
    waiting = [
        {
            "row": row,
            "lead_key": q.lead_key,
            "status": q.status,
            "previous": q.previous,
            "at": q.at.isoformat(),
            "due_at": q.due_at.isoformat(),
            "due_text": describe_due(q.due_at, tz),
        }
        for row, q in sorted(verdict.pending.items())
        if q.due_at > now
    ]
    words = [f"{_count(len(verdict.changed), 'status change')} recorded"]
    if waiting:
        last = max(q.due_at for q in verdict.pending.values())
        words.append(
            f"{_count(len(waiting), 'lead')} pending: sent at {describe_due(last, tz)} if the "
            f"status still holds then ({outcome.settle.total_seconds():.0f} s to settle)"
        )
    if queued:
        words.append("a sync of this tab is running: what is due goes with it or the next sweep")
    elif sending is not None and not finished:
        words.append("sending in the background")
    elif result is not None:
        words.append(f"{_count(result.events_sent, 'event')} sent")
    for row in verdict.withdrawn:
        words.append(f"row {row}: {verdict.words[row]}")
    if verdict.seen:
        words.append(
            f"{_count(len(verdict.seen), 'row')} of leads not synced yet: seen, not changes "
            "(the next sync dates them)"
        )
    if verdict.refused:
        words.append(
            f"{_count(len(verdict.refused), 'row')} refused: their CAPI Key is in no row read"
        )
    if verdict.moved:
        words.append(
            f"{_count(len(verdict.moved), 'row')} no longer showing what was edited (sorted or "
            "moved since): the next sync sees it"
        )
    notices = (result.notices if result is not None else []) + (
        [sending.notice] if sending is not None and sending.notice else []
    )
    rows = [r.to_json() for r in result.rows] if result is not None else []
    reported = {r["row"] for r in rows}
    for row, message in sorted(verdict.words.items()):
        if row not in reported:
            state = "withdrawn" if row in verdict.withdrawn else "seen"
            state = "refused" if row in verdict.refused else state
            rows.append({"row": row, "outcome": state, "message": message})
    for w in waiting:
        if w["row"] not in reported:
            rows.append(
                {
                    "row": w["row"],
                    "lead_key": w["lead_key"],
                    "status": w["status"],
                    "outcome": "pending",
                    "message": f"{w['previous'] or '(new)'} → {w['status']}: sent at "
                    f"{w['due_text']} if it still holds then",
                }
            )
    return {
        "changed": verdict.changed,
        "unchanged": verdict.unchanged,
        "moved": verdict.moved,
        "seen": verdict.seen,
        "refused": verdict.refused,
        "withdrawn": verdict.withdrawn,
        # The Status Changed At each withdrawn row held before the add-on stamped the edit,
        # to put back if the cell still holds a stamp from `stamped_from` to `stamped_to`.
        "restore": [
            {
                "row": row,
                "lead_key": q.lead_key,
                "status_changed_at": q.stamp_before,
                "stamped_from": q.since.isoformat(),
                "stamped_to": q.at.isoformat(),
            }
            for row, q in sorted(verdict.restore.items())
        ],
        "pending": waiting,
        "queued": queued,
        "sending": sending is not None and not finished,
        "message": "; ".join(words + notices),
        "rows": rows,
        "events_sent": result.events_sent if result is not None else 0,
        "notices": notices,
    }


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


@api.get("/status")
def status() -> Any:

    return jsonify(bridge_status(_from_query()))


@api.get("/report")
def report() -> Any:
    from sheet_bridge.insights.chart import weekly_chart
    from sheet_bridge.insights.funnel import funnel_report

    bridge = _from_query()
    events = bridge.ledger.events(bridge.sheet_tab)
    result = funnel_report(events, bridge.config, bridge.clock())
    return jsonify({**result.to_json(), "svg": weekly_chart(result)})
