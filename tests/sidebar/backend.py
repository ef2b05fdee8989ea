"""The backend the Apps Script tests (tests/sidebar/*.test.js) call: the Sheets emulator, the
fake Meta and the real Flask app on free loopback ports, over a small sheet of leads.

Prints one JSON line (URLs, the shared secret, the sheet) and serves until stdin closes. An
argument sets `[sync] settle_seconds` (default 0: edits are sent at once).
`POST /_test/faults {"status": 500, "count": N}` makes the app's next N /api requests fail
inside the app, so the app's own error handler answers (the shape a real crash has).
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import jsonify, request

from sheet_bridge.config import SyncConfig
from sheet_bridge.local import demo_leads as demo
from sheet_bridge.local.demo import demo_environment
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.web.app import create_app


def lead(first: str, email: str, status: str, hours_ago: float) -> list[object]:
    at = datetime.now(ZoneInfo(demo.DEMO_TIME_ZONE)).replace(microsecond=0)
    at -= timedelta(hours=hours_ago)
    row: dict[str, object] = {
        "Created At": demo.stamp(at),
        "First Name": first,
        "Email": email,
        "Country": "IN",
        "Lead Status": status,
        "Status Changed At": demo.stamp(at),
    }
    return [row.get(h, "") for h in demo.HEADER]


def seed(data_dir: Path) -> None:
    leads = [
        lead("Asha", "asha@example.com", "New", 20),
        lead("Ravi", "ravi@example.com", "New", 10),
        lead("Meera", "meera@example.com", "New", 5),
    ]
    book = {
        "title": "Apps Script test",
        "timeZone": demo.DEMO_TIME_ZONE,
        # "Notes" has the same header: an edit there must not count as a status change.
        "sheets": {demo.DEMO_TAB: [demo.HEADER, *leads], "Notes": [demo.HEADER, *leads[:1]]},
    }
    (data_dir / "sheets.json").write_text(
        json.dumps({"spreadsheets": {demo.DEMO_SPREADSHEET_ID: book}})
    )


def main() -> None:
    settle = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    with tempfile.TemporaryDirectory(prefix="sidebar-test-") as tmp:
        data_dir = Path(tmp)
        seed(data_dir)
        secret = secrets.token_urlsafe(32)
        with demo_environment(data_dir) as env:
            # Edits sent at once unless asked (settling is pinned by tests/web/test_settle.py):
            # most of these tests follow an edit from the add-on to the fake Meta in one step.
            env.bridge.config = env.bridge.config.model_copy(
                update={"sync": SyncConfig(settle_seconds=settle, sweep_seconds=0)}
            )
            app = create_app(bridges=[env.bridge], environ={"SHEET_BRIDGE_SECRET": secret})
            pending: list[int] = []

            @app.before_request
            def injected_fault() -> None:
                if pending and request.path.startswith("/api/"):
                    raise RuntimeError(f"injected fault {pending.pop(0)}")

            @app.post("/_test/faults")
            def faults() -> Any:
                spec = request.get_json(silent=True) or {}
                pending.extend([int(spec.get("status", 500))] * int(spec.get("count", 1)))
                return jsonify({"pending": len(pending)})

            with BackgroundServer(app) as backend:
                info = {
                    "backend_url": backend.url,
                    "sheets_url": env.sheets_url,
                    "meta_url": env.meta_url,
                    "secret": secret,
                    "spreadsheet_id": demo.DEMO_SPREADSHEET_ID,
                    "tab": demo.DEMO_TAB,
                    "time_zone": demo.DEMO_TIME_ZONE,
                }
                print(json.dumps(info), flush=True)
                sys.stdin.read()  # until the test closes our stdin (or dies)


if __name__ == "__main__":
    main()
