"""The status panel: counts by state, last pass, rows nearing Meta's window, config warnings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sheet_bridge.checks import CheckReport, check_action_source, check_last_pass, check_stages
from sheet_bridge.meta.events import send_window
from sheet_bridge.sync.plan import plan
from sheet_bridge.sync.rows import bridge_cells
from sheet_bridge.sync.run import Bridge, LedgerBehindSheet, SyncError

NEARING = timedelta(hours=24)


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
    # nothing is sent. Its words say what to fix.
    halted = CheckReport()
    check_last_pass(halted, last_sync)
    warnings = (
        halted.warnings()
        + checks.warnings()
        + [f.text for f in checks.findings if f.level == "info" and "custom event" in f.text]
    )
    nearing: list[dict[str, Any]] = []
    attention: list[dict[str, Any]] = []
    window = send_window(config.meta.action_source)
    try:
        table, layout, leads = bridge.read()
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
    nearing.sort(key=lambda x: x["hours_left"])
    return {
        "spreadsheet_id": where.spreadsheet_id,
        "tab": config.sheets.tab,
        "columns": {
            "status": config.columns["status"],
            "status_changed_at": config.columns.get("status_changed_at"),
        },
        "counts": bridge.ledger.counts_by_state(where),
        "last_sync": last_sync or None,
        "nearing_window": nearing,
        "attention": attention[:50],
        "warnings": warnings,
        "stages": [s.to_json() for s in checks.stages],
        "meta_token": bridge.capi is not None,
        "now": now.isoformat(),
    }
