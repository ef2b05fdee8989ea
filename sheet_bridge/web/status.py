"""The status panel: counts by state, last pass, rows nearing Meta's window, config warnings,
and the alerts everyone with the sidebar open should see (with the fix in words)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from sheet_bridge.checks import CheckReport, check_action_source, check_last_pass, check_stages
from sheet_bridge.meta.events import send_window
from sheet_bridge.meta.versions import version_problem
from sheet_bridge.sync.ledger import PassRecord
from sheet_bridge.sync.plan import describe_due, plan
from sheet_bridge.sync.rows import bridge_cells, time_zone
from sheet_bridge.sync.run import Bridge, LedgerBehindSheet, SyncError
from sheet_bridge.web.passes import pass_ref

NEARING = timedelta(hours=24)
# This many hourly passes failing in a row is an alert (one can be a passing outage).
HOURLY_FAILURES = 3
# No scheduled pass for this long is an alert: the hourly trigger runs as the person who
# installed it and stops when their account does
# (https://developers.google.com/apps-script/guides/triggers/installable).
SCHEDULE_SILENT = timedelta(hours=2)
# The passes that run on a clock: the add-on's hourly trigger, `sheet-bridge sync` from cron.
SCHEDULED_TRIGGERS = ("hourly", "cli")
# Rows of a list the sidebar gets (google.script.run carries it); the total goes beside it.
LIST_CAP = 50


def bridge_status(bridge: Bridge) -> dict[str, Any]:
    """What the sidebar shows. Reads the sheet once (a dry plan) for the rows whose unsent
    change leaves the window within 24 hours; a sheet error becomes a warning, not a failure."""
    config = bridge.config
    where = bridge.sheet_tab
    now = bridge.clock()
    checks = CheckReport()
    check_stages(config, checks)
    check_action_source(config, checks)
    last_sync = bridge.ledger.last_pass(where)
    # A pass Meta stopped (wrong test code, pixel, token…) comes first: until it is fixed,
    # nothing is sent. Its words say what to fix. Whether Meta refuses is the answer of the
    # last pass that called Meta: a later one with nothing to send (an edit that changed
    # nothing) says nothing about the token.
    refused = meta_refusal(bridge)
    halted = CheckReport()
    check_last_pass(halted, refused or last_sync)
    warnings = (
        halted.warnings()
        + checks.warnings()
        + [f.text for f in checks.findings if f.level == "info" and "custom event" in f.text]
    )
    nearing: list[dict[str, Any]] = []
    attention: list[dict[str, Any]] = []
    window = send_window(config.meta.action_source)
    sheet_problem: str | None = None
    tz: tzinfo = UTC  # the sheet's, once read
    try:
        table, layout, leads = bridge.read()
        tz = time_zone(table)
        history = bridge.ledger.history(where)
        # A ledger behind the sheet: say so here too (the pass refuses; this is what to do).
        bridge.refuse_if_ledger_behind(
            bridge_cells(table, layout), table.first_row, layout, leads, history
        )
        the_plan = plan(leads, config, history, now)
        for d in the_plan.decisions:
            for e in d.events:
                leaves = e.event_time + window.total_seconds() - now.timestamp()
                if leaves < NEARING.total_seconds():
                    nearing.append(
                        {
                            "row": d.row_number,
                            "event_name": e.event_name,
                            "hours_left": round(max(leaves, 0) / 3600, 1),
                        }
                    )
            if d.outcome in ("invalid", "skipped") and d.status:
                attention.append({"row": d.row_number, "outcome": d.outcome, "message": d.message})
    except LedgerBehindSheet as exc:
        warnings.append(str(exc))
    except SyncError as exc:
        warnings.append(f"could not read the sheet: {exc}")
        sheet_problem = str(exc)
    nearing.sort(key=lambda x: x["hours_left"])
    return {
        "spreadsheet_id": where.spreadsheet_id,
        "tab": config.sheets.tab,
        "columns": {
            "status": config.columns["status"],
            "status_changed_at": config.columns.get("status_changed_at"),
            "key": "CAPI Key",
        },
        "counts": bridge.ledger.counts_by_state(where),
        "last_sync": last_sync or None,
        "nearing_window": nearing[:LIST_CAP],
        "nearing_total": len(nearing),
        "attention": attention[:LIST_CAP],
        "attention_total": len(attention),
        "warnings": warnings,
        "stages": [s.to_json() for s in checks.stages],
        "meta_token": bridge.capi is not None,
        "now": now.isoformat(),
        "alerts": alerts(bridge, refused, sheet_problem, now),
        "running_pass": _running(bridge, now),
        "pending_edits": pending_edits(bridge, now, tz),
    }


PENDING_SHOWN = 50


def pending_edits(bridge: Bridge, now: datetime, tz: tzinfo = UTC) -> dict[str, Any]:
    """The edits waiting to settle or to be sent (docs/edits.md), the first due first: what
    changed, and when it goes (`due_at`, and `due_text` as the edit's answer words it: in the
    sheet's zone `tz`, with the zone's name; "due": now, with the next sweep or pass)."""
    queued = bridge.ledger.queued_edits(bridge.sheet_tab)
    return {
        "total": len(queued),
        "edits": [
            {
                "row": q.row_number,
                "lead_key": q.lead_key,
                "previous": q.previous,
                "status": q.status,
                "at": q.at.isoformat(),
                "due_at": q.due_at.isoformat(),
                "due_text": describe_due(q.due_at, tz),
                "state": "settling" if q.due_at > now else "due",
            }
            for q in queued[:PENDING_SHOWN]
        ],
    }


def meta_refusal(bridge: Bridge) -> dict[str, Any]:
    """The last pass that called Meta, as {finished_at, error}, when Meta refused it in its
    own words (a request-level refusal: token, pixel, test code); {} when it took it."""
    record = bridge.ledger.last_meta_pass(bridge.sheet_tab)
    if record is None or record.finished_at is None or " " not in (record.error or ""):
        return {}
    return {"finished_at": record.finished_at.isoformat(), "error": record.error}


def alerts(
    bridge: Bridge, refused: dict[str, Any], sheet_problem: str | None, now: datetime
) -> list[dict[str, str]]:
    """What stops events reaching Meta (or soon will), for the top of everyone's sidebar:
    a rejected token, a Meta API version past or near its end, a sheet the backend cannot
    open, hourly passes failing again and again, and hourly passes that stopped coming."""
    out: list[dict[str, str]] = []

    def alert(code: str, severity: str, message: str, fix: str) -> None:
        out.append({"code": code, "severity": severity, "message": message, "fix": fix})

    error = str(refused.get("error") or "")
    if "(code 190)" in error:
        alert(
            "token_rejected",
            "error",
            "Meta rejected the access token: nothing is sent until it is replaced.",
            f"Generate a new Conversions API token in Events Manager and set it in the "
            f"backend's {bridge.config.meta.access_token_env} environment variable; the held "
            "events then go out once.",
        )
    elif error:
        alert("meta_refused", "error", f"Meta refused the last sync: {error}", _FIX_AND_SYNC)
    problem = version_problem(bridge.config.meta.api_version, now)
    if problem is not None:
        severity, words = problem
        alert("api_version", severity, words, "Change api_version in the bridge's config file.")
    if sheet_problem is not None:
        alert(
            "sheet_unreachable",
            "error",
            f"The backend cannot open this sheet: {sheet_problem}",
            "Share the spreadsheet with the backend's service account (Editor), or fix "
            "[sheets] in the bridge's config.",
        )
    lost = lost_passes(bridge, now)
    if lost:
        alert(
            "passes_lost",
            "warning",
            f"{_plural(len(lost), 'pass')} of this tab stopped before finishing in the last "
            f"{LOST_WINDOW_HOURS} hours (the backend's process was killed or restarted "
            "mid-pass).",
            "Nothing is lost: what they sent is recorded and the next sync does the rest. If "
            "it repeats, the backend's log says why its processes stop (a redeploy, memory, a "
            "shutdown too short for a pass; docs/operating.md).",
        )
    hourly = bridge.ledger.recent_passes(bridge.sheet_tab, HOURLY_FAILURES, trigger="hourly")
    if len(hourly) == HOURLY_FAILURES and all(_failed(p, now) for p in hourly):
        alert(
            "hourly_failing",
            "error",
            f"The last {HOURLY_FAILURES} hourly syncs failed (latest: {_failure(hourly[0])}).",
            _FIX_AND_SYNC,
        )
    silent = _schedule_silent(bridge, now)
    if silent is not None:
        alert("hourly_stopped", "error", *silent)
    return out


def _schedule_silent(bridge: Bridge, now: datetime) -> tuple[str, str] | None:
    """(message, fix) when scheduled passes ran here once and none has started for more than
    SCHEDULE_SILENT; None otherwise (a bridge that never had one shows no triggers instead)."""
    latest: datetime | None = None
    for trigger in SCHEDULED_TRIGGERS:
        for record in bridge.ledger.recent_passes(bridge.sheet_tab, 1, trigger=trigger):
            if latest is None or record.started_at > latest:
                latest = record.started_at
    running = bridge.ledger.running_pass(bridge.sheet_tab, now)
    if running is not None and running.trigger in SCHEDULED_TRIGGERS:
        return None
    if latest is None or now - latest <= SCHEDULE_SILENT:
        return None
    hours = (now - latest).total_seconds() / 3600
    return (
        f"No hourly sync has run for {hours:.0f} hours (the last one started "
        f"{latest.strftime('%Y-%m-%d %H:%M UTC')}). The hourly and on-edit triggers run as the "
        "person who installed them: if that account was removed, suspended or lost access to "
        "this spreadsheet, or they removed the triggers, both stopped and edits no longer "
        "reach the backend either.",
        "Someone who should own them: open the sidebar → Settings and triggers → Install "
        "triggers (or Take over); then click Sync now to catch up.",
    )


_FIX_AND_SYNC = "Fix what it says, then click Sync now; nothing is lost meanwhile."

# Lost passes this recent are an alert (and the /metrics gauge); the passes looked at.
LOST_WINDOW_HOURS = 24
LOST_LOOKBACK = 200


def lost_passes(bridge: Bridge, now: datetime) -> list[PassRecord]:
    """The tab's passes started in the last LOST_WINDOW_HOURS whose process stopped before
    they finished (the next pass of the tab records them so, sync/run.py)."""
    since = now - timedelta(hours=LOST_WINDOW_HOURS)
    recent = bridge.ledger.recent_passes(bridge.sheet_tab, LOST_LOOKBACK)
    return [p for p in recent if p.started_at >= since and p.state(now) == "lost"]


def _plural(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 'es' if thing.endswith('s') else 's'}"


def _failed(record: PassRecord, now: datetime) -> bool:
    return record.state(now) == "failed" or bool(record.error)


def _failure(record: PassRecord) -> str:
    summary = record.summary or {}
    return str(summary.get("error") or summary.get("halted") or record.error or "no reason kept")


def _running(bridge: Bridge, now: datetime) -> dict[str, Any] | None:
    record = bridge.ledger.running_pass(bridge.sheet_tab, now)
    if record is None:
        return None
    return {
        "pass_id": pass_ref(record.where, record.id),
        "trigger": record.trigger,
        "phase": record.phase,
        "done": record.done,
        "total": record.total,
    }
