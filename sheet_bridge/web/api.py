"""The /api blueprint the Apps Script sidebar calls: sync, edits, status, report."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, g, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sheet_bridge.sync.ledger import LedgerError, SyncBusy
from sheet_bridge.sync.run import Bridge, LedgerBehindSheet, SyncError
from sheet_bridge.web.auth import AuthError

if TYPE_CHECKING:
    from sheet_bridge.web.app import BridgeRegistry

log = logging.getLogger(__name__)
api = Blueprint("api", __name__, url_prefix="/api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SyncRequest(_Body):
    spreadsheet_id: str = Field(min_length=1, max_length=200)
    tab: str | None = Field(default=None, max_length=200)
    dry_run: bool = False
    keys: list[str] | None = Field(default=None, max_length=10_000)


class EditRequest(_Body):
    spreadsheet_id: str = Field(min_length=1, max_length=200)
    tab: str = Field(min_length=1, max_length=200)
    row: int = Field(ge=2, le=10_000_000)
    old_value: str | None = Field(default=None, max_length=1000)
    new_value: str = Field(max_length=1000)
    at: datetime

    @field_validator("at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-11-26T10:15:00+05:30")
        return v


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


@api.errorhandler(ApiError)
def _api_error(exc: ApiError) -> tuple[Response, int]:
    return error_response(exc.status, exc.code, exc.message)


def _parse(model: type[_Body], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, "invalid_request", f"{where}: {first['msg']}") from None


def _json_body() -> Any:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    return data


def _bridge(spreadsheet_id: str, tab: str | None) -> Bridge:
    """Find the bridge and authenticate the caller against its [server] settings."""
    registry: BridgeRegistry = current_app.extensions["sheet_bridge"]
    bridge = registry.find(spreadsheet_id, tab)
    header = request.headers.get("Authorization")
    try:
        if bridge is None:
            registry.authenticate_any(header)  # 401 first: don't tell strangers what exists
            raise ApiError(
                404,
                "unknown_spreadsheet",
                f"no bridge is configured for spreadsheet {spreadsheet_id}"
                + (f" tab {tab!r}" if tab else ""),
            )
        g.caller = registry.authenticator(bridge).authenticate(header)
    except AuthError as exc:
        code = "unauthorized" if exc.status == 401 else "forbidden"
        raise ApiError(exc.status, code, str(exc)) from None
    return bridge


def _run(bridge: Bridge, **kw: Any) -> dict[str, Any]:
    try:
        result = bridge.sync(**kw)
    except SyncBusy:
        raise ApiError(
            409, "sync_running", "a sync of this spreadsheet is running; try again in a minute"
        ) from None
    except LedgerBehindSheet as exc:
        raise ApiError(409, "ledger_behind_sheet", str(exc)) from None
    except SyncError as exc:
        raise ApiError(502, "sheet_unavailable", str(exc)) from None
    except LedgerError as exc:
        log.error("ledger: %s", exc)
        raise ApiError(500, "ledger_unavailable", str(exc)) from None
    return result.to_json()


def _bridge_for_body(model: type[_Body]) -> tuple[Bridge, Any]:
    """The JSON body's bridge (authenticated first), then the body validated."""
    body = _json_body()
    sid, tab = body.get("spreadsheet_id"), body.get("tab")
    bridge = _bridge(sid if isinstance(sid, str) else "", tab if isinstance(tab, str) else None)
    return bridge, _parse(model, body)


@api.post("/sync")
def sync() -> Any:
    bridge, req = _bridge_for_body(SyncRequest)
    return jsonify(_run(bridge, dry_run=req.dry_run, keys=req.keys, trigger="sync"))


@api.post("/edits")
def edits() -> Any:
    bridge, req = _bridge_for_body(EditRequest)
    bridge.record_edit(req.row, req.old_value, req.new_value, req.at)
    try:
        summary = _run(bridge, rows=[req.row], trigger="edit")
    except ApiError as exc:
        if exc.code != "sync_running":
            raise
        return jsonify(
            {
                "queued": True,
                "message": "a sync is running; this change is recorded and goes out with it "
                "or with the next pass",
            }
        ), 202
    row = next((r for r in summary["rows"] if r["row"] == req.row), None)
    return jsonify({"queued": False, "row": row, **summary})


@api.get("/status")
def status() -> Any:
    from sheet_bridge.sync.status import bridge_status

    sid = request.args.get("spreadsheet_id", "")
    bridge = _bridge(sid, request.args.get("tab"))
    return jsonify(bridge_status(bridge))


@api.get("/report")
def report() -> Any:
    from sheet_bridge.sync.chart import weekly_chart
    from sheet_bridge.sync.funnel import funnel_report

    sid = request.args.get("spreadsheet_id", "")
    bridge = _bridge(sid, request.args.get("tab"))
    try:
        events = bridge.ledger.events(bridge.sheet_tab)
    except LedgerError as exc:
        log.error("ledger: %s", exc)
        raise ApiError(500, "ledger_unavailable", str(exc)) from None
    result = funnel_report(events, bridge.config, bridge.clock())
    return jsonify({**result.to_json(), "svg": weekly_chart(result)})
