"""A stand-in for the sheet-bridge backend that follows the add-on contract of this session
(docs/http-api.md): /api/edits by rows with "changed"/"unchanged"/"moved", edits that
settle (/_fake/settle) and a change back within that time "withdrawn" with what to "restore",
/api/sync answering 200 or 202 with a pass to follow, 409 naming the running pass,
GET /api/passes/<id> with phase, progress and a paged summary, /api/status with columns,
alerts and the running pass. It sends nothing anywhere: its "ledger" is a dict of the last
status it saw per lead, and a pass is a clock running for as many seconds as a test says.

The add-on's own tests (tests/sidebar/*.test.js, tests/local/test_sidebar.py) use it, so they
pin the add-on's side of the contract while the real backend is built against the same
contract; tests/sidebar/backend.py runs the real backend for the end-to-end ones.

Run as a script it seeds a sheet, starts the Sheets emulator and this fake, prints one JSON
line and serves until stdin closes. Controls under /_fake/ let a test shape what happens.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from flask import Flask, Response, jsonify, request

from sheet_bridge.local import demo_leads as demo
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator

KEY = "CAPI Key"
STATUS = "Lead Status"
STAMP = "Status Changed At"
PAGE = 50


@dataclass
class PassProfile:
    """How the next pass behaves: its length in (scaled) seconds, events to send, rows that
    need attention, and whether it fails."""

    seconds: float = 0.2
    total: int = 12
    attention: int = 0
    fail: str | None = None


@dataclass
class FakePass:
    pass_id: str
    trigger: str
    dry_run: bool
    started: float
    length: float  # real seconds (the profile's, times the time scale)
    profile: PassProfile
    started_at: str

    def progress(self, now: float) -> tuple[str, str, int]:
        """(state, phase, done) at `now`: a tenth reading, eight tenths sending, a tenth writing."""
        d = max(self.length, 1e-9)
        t = now - self.started
        total = self.profile.total
        if t >= d:
            return ("failed" if self.profile.fail else "done"), "done", total
        if t < 0.1 * d:
            return "running", "read", 0
        if t < 0.9 * d:
            return "running", "send", min(total, math.floor(total * (t - 0.1 * d) / (0.8 * d)))
        return "running", "write", total


@dataclass
class Settling:
    """An edit of a lead waiting to settle, as the real backend queues it (sync/edits.py)."""

    previous: str | None
    status: str
    since: str  # the first edit's `at`, as sent
    at: str
    due: float  # on the fake's clock
    stamp_before: str | None


@dataclass
class FakeState:
    ledger: dict[str, str] = field(default_factory=dict)  # lead -> last status seen
    settle: float = 0.0  # real seconds an edit waits before it is sent ([sync] settle_seconds)
    queue: dict[str, Settling] = field(default_factory=dict)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    passes: dict[str, FakePass] = field(default_factory=dict)
    profile: PassProfile = field(default_factory=PassProfile)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    pending_edits: list[dict[str, Any]] = field(default_factory=list)  # /api/status's, as set
    faults: list[int] = field(default_factory=list)
    status_extra: dict[str, Any] = field(default_factory=dict)  # more /api/status fields
    next_pass: int = 1


def utc_iso(at: str) -> str:
    """An edit's time as the real backend answers it (sheet_bridge/web/api.py: UTC)."""
    return datetime.fromisoformat(at).astimezone(UTC).isoformat()


def lead_key(email: str) -> str:
    return "k-" + hashlib.sha256(email.encode()).hexdigest()[:12]


class FakeBackend:
    """The contract on loopback. `time_scale` turns the contract's seconds (a pass's length,
    `wait`) into real ones, so a test can play a 90-second pass in a few seconds while the
    Apps Script stand-in's UrlFetch deadline is scaled by the same factor."""

    def __init__(
        self,
        sheets_url: str,
        spreadsheet_id: str,
        tab: str,
        *,
        secret: str | None = None,
        identities: dict[str, str] | None = None,
        time_scale: float = 1.0,
        seed: list[list[object]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sheets = httpx.Client(base_url=sheets_url, timeout=10)
        self.spreadsheet_id = spreadsheet_id
        self.tab = tab
        self.secret = secret
        self.identities = dict(identities or {})  # ID token -> e-mail
        self.time_scale = time_scale
        self.seed = seed  # the tab's rows that /_fake/reset writes back
        self.swap_on_next_edit: tuple[int, int] | None = None
        self.clock = clock
        self.state = FakeState()
        self.guard = threading.Lock()
        self.app = self._build()

    # -- the sheet, as the backend reads it now ------------------------------------------
    def read_sheet(self) -> list[list[Any]]:
        rng = f"'{self.tab}'"
        answer = self.sheets.get(
            f"/v4/spreadsheets/{self.spreadsheet_id}/values/{rng}",
            params={"valueRenderOption": "UNFORMATTED_VALUE"},
        )
        answer.raise_for_status()
        rows: list[list[Any]] = answer.json().get("values", [])
        return rows

    def write_sheet(self, top: int, rows: list[list[Any]]) -> None:
        """Write rows from row `top` down (RAW), as another editor's change would land."""
        rng = f"'{self.tab}'!A{top}"
        answer = self.sheets.put(
            f"/v4/spreadsheets/{self.spreadsheet_id}/values/{rng}",
            params={"valueInputOption": "RAW"},
            json={"values": rows},
        )
        answer.raise_for_status()

    def reseed(self) -> None:
        if self.seed is None:
            return
        clear = f"/v4/spreadsheets/{self.spreadsheet_id}/values/'{self.tab}':clear"
        self.sheets.post(clear, json={}).raise_for_status()
        self.write_sheet(1, self.seed)

    def swap_rows(self, a: int, b: int) -> None:
        """Swap two rows of the tab: someone sorting while an edit is on its way."""
        rows = self.read_sheet()
        width = max(len(r) for r in rows)
        line_a, line_b = (rows[n - 1] + [""] * (width - len(rows[n - 1])) for n in (a, b))
        self.write_sheet(a, [line_b])
        self.write_sheet(b, [line_a])

    def lead_of(self, header: list[Any], line: list[Any], row: int) -> str:
        """Who a row is when the add-on sent no key: its key cell, else its e-mail, else the row."""

        def cell(name: str) -> str:
            col = header.index(name) if name in header else -1
            return str(line[col]).strip() if 0 <= col < len(line) else ""

        return cell(KEY) or (lead_key(cell("Email")) if cell("Email") else f"row:{row}")

    def adopt(self) -> int:
        """Remember every keyed row's status, as if a pass had just run."""
        rows = self.read_sheet()
        header = rows[0] if rows else []
        with self.guard:
            self.state.ledger.clear()
            for i, line in enumerate(rows[1:], start=2):
                key = self.lead_of(header, line, i)
                col = header.index(STATUS)
                self.state.ledger[key] = str(line[col]).strip() if col < len(line) else ""
        return len(self.state.ledger)

    # -- passes ---------------------------------------------------------------------------
    def running(self) -> FakePass | None:
        now = self.clock()
        for p in self.state.passes.values():
            if p.progress(now)[0] == "running":
                return p
        return None

    def summary(self, p: FakePass, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
        prof = p.profile
        attention = [
            {
                "row": 2 + i,
                "lead_key": f"k-attention-{i}",
                "status": "New",
                "outcome": "invalid",
                "message": f"row {2 + i}: no e-mail or phone to match on; add one",
                "events": [],
                "strength": "none",
            }
            for i in range(prof.attention)
        ]
        page = attention[offset : offset + limit]
        nxt = offset + limit if offset + limit < len(attention) else None
        return {
            "pass_id": p.pass_id,
            "state": "done",
            "sent": 0 if p.dry_run else prof.total - prof.attention,
            "skipped": 0,
            "expired": 0,
            "invalid": prof.attention,
            "failed": 0,
            "already_sent": 0,
            "due": prof.total - prof.attention if p.dry_run else 0,
            "events_sent": 0 if p.dry_run else prof.total,
            "meta_requests": 0 if p.dry_run else math.ceil(prof.total / 500),
            "cells_written": 0 if p.dry_run else prof.total * 4,
            "seconds": prof.seconds,
            "notices": [],
            "rows": page,
            "rows_total": prof.total,
            "attention_total": prof.attention,
            "next_rows_offset": nxt,
        }

    def pass_record(self, p: FakePass, offset: int = 0, limit: int = PAGE) -> dict[str, Any]:
        state, phase, done = p.progress(self.clock())
        finished = state != "running"
        return {
            "pass_id": p.pass_id,
            "spreadsheet_id": self.spreadsheet_id,
            "tab": self.tab,
            "trigger": p.trigger,
            "state": state,
            "phase": phase,
            "done": done,
            "total": p.profile.total,
            "started_at": p.started_at,
            "finished_at": p.started_at if finished else None,
            "summary": self.summary(p, offset, limit) if state == "done" else None,
            "error": p.profile.fail if state == "failed" else None,
        }

    # -- the app --------------------------------------------------------------------------
    def _build(self) -> Flask:
        app = Flask(__name__)
        fake = self

        def error(status: int, code: str, message: str, **extra: Any) -> tuple[Response, int]:
            return jsonify({"error": {"code": code, "message": message}, **extra}), status

        def caller() -> dict[str, Any] | tuple[Response, int]:
            header = request.headers.get("Authorization", "")
            token = header[7:] if header.startswith("Bearer ") else ""
            if fake.secret is not None and token == fake.secret:
                return {"how": "secret", "email": None}
            if token in fake.identities:
                return {"how": "id_token", "email": fake.identities[token]}
            return error(401, "unauthorized", "invalid credentials")

        @app.before_request
        def log_and_check() -> Any:
            if not request.path.startswith("/api/"):
                return None
            who = caller()
            entry = {
                "method": request.method,
                "path": request.path,
                "query": request.args.to_dict(),
                "body": request.get_json(silent=True),
                "authorization": request.headers.get("Authorization", ""),
                "caller": who if isinstance(who, dict) else None,
                "at": time.time(),
            }
            with fake.guard:
                fake.state.requests.append(entry)
                fault = fake.state.faults.pop(0) if fake.state.faults else None
            if not isinstance(who, dict):
                return who
            if fault is not None:
                return error(fault, "internal", "unexpected error; see the server log")
            body = entry["body"] if isinstance(entry["body"], dict) else {}
            named = request.args.get("spreadsheet_id") or body.get("spreadsheet_id")
            if named is not None and named != fake.spreadsheet_id:
                return error(404, "unknown_spreadsheet", "no bridge is configured for it")
            return None

        @app.get("/api/status")
        def status() -> Any:
            running = fake.running()
            return jsonify(
                {
                    "spreadsheet_id": fake.spreadsheet_id,
                    "tab": fake.tab,
                    "columns": {"status": STATUS, "status_changed_at": STAMP, "key": KEY},
                    "counts": {"sent": len(fake.state.transitions)},
                    "last_sync": None,
                    "nearing_window": [],
                    "attention": [],
                    "warnings": [],
                    "stages": [],
                    "meta_token": True,
                    "alerts": fake.state.alerts,
                    "pending_edits": {
                        "total": len(fake.state.pending_edits),
                        "edits": fake.state.pending_edits,
                    },
                    **fake.state.status_extra,
                    "running_pass": None
                    if running is None
                    else {
                        "pass_id": running.pass_id,
                        "phase": running.progress(fake.clock())[1],
                        "done": running.progress(fake.clock())[2],
                        "total": running.profile.total,
                    },
                    "now": datetime.now(ZoneInfo(demo.DEMO_TIME_ZONE)).isoformat(),
                }
            )

        @app.get("/api/report")
        def report() -> Any:
            return jsonify({"stages": [], "advice": [], "svg": ""})

        @app.post("/api/edits")
        def edits() -> Any:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                return error(400, "invalid_request", "the body must be a JSON object")
            if "rows" not in body:  # the old one-row form
                body = {
                    **body,
                    "rows": [
                        {"row": body.get("row"), "status": body.get("new_value"), "key": None}
                    ],
                }
            rows = body["rows"]
            at = body.get("at")
            if not isinstance(rows, list) or not 1 <= len(rows) <= 500:
                return error(400, "invalid_request", "rows: 1 to 500 rows")
            if not isinstance(at, str) or datetime.fromisoformat(at).tzinfo is None:
                return error(400, "invalid_request", "at: must carry a UTC offset")
            allowed = {"row", "status", "key", "old_status", "status_changed_at"}
            for r in rows:
                stamp = r.get("status_changed_at") if isinstance(r, dict) else None
                ok = (
                    isinstance(r, dict)
                    and {"row", "status", "key"} <= set(r) <= allowed
                    and (r.get("old_status") is None or isinstance(r["old_status"], str))
                    and (stamp is None or (isinstance(stamp, str) and len(stamp) <= 200))
                    and isinstance(r["row"], int)
                    and r["row"] >= 2
                    and isinstance(r["status"], str)
                    and (r["key"] is None or (isinstance(r["key"], str) and r["key"]))
                )
                if not ok:
                    return error(400, "invalid_request", f"rows: {r!r} is not {{row, status, key}}")
            if fake.swap_on_next_edit is not None:
                fake.swap_rows(*fake.swap_on_next_edit)
                fake.swap_on_next_edit = None
            sheet = fake.read_sheet()
            header = sheet[0] if sheet else []
            changed, unchanged, moved, withdrawn = [], [], [], []
            restore: list[dict[str, Any]] = []
            words: dict[int, str] = {}
            with fake.guard:
                for r in rows:
                    line = sheet[r["row"] - 1] if r["row"] - 1 < len(sheet) else []
                    here = fake.lead_of(header, line, r["row"])
                    lead = r["key"] or here
                    q = fake.state.queue.get(lead)
                    if q is not None and fake.clock() >= q.due:
                        del fake.state.queue[lead]  # settled: sent
                        q = None
                    if r["key"] is not None and here != r["key"]:
                        moved.append(r["row"])
                    elif q is not None and q.status == r["status"]:
                        unchanged.append(r["row"])
                        continue
                    elif q is not None and q.previous == r["status"]:
                        # Changed back before it settled: withdrawn, and what to put back.
                        withdrawn.append(r["row"])
                        del fake.state.queue[lead]
                        fake.state.ledger[lead] = r["status"]
                        words[r["row"]] = f"{q.previous} → {q.status} → {r['status']}: nothing sent"
                        if q.stamp_before is not None:
                            restore.append(
                                {
                                    "row": r["row"],
                                    "lead_key": lead,
                                    "status_changed_at": q.stamp_before,
                                    "stamped_from": utc_iso(q.since),
                                    "stamped_to": utc_iso(q.at),
                                }
                            )
                        continue
                    elif fake.state.ledger.get(lead) == r["status"]:
                        unchanged.append(r["row"])
                        continue
                    else:
                        changed.append(r["row"])
                    if fake.state.ledger.get(lead) != r["status"]:
                        if fake.state.settle > 0:
                            before = fake.state.ledger.get(lead, r.get("old_status"))
                            fake.state.queue[lead] = (
                                Settling(
                                    before,
                                    r["status"],
                                    at,
                                    at,
                                    fake.clock() + fake.state.settle,
                                    r.get("status_changed_at"),
                                )
                                if q is None
                                else Settling(
                                    q.previous,
                                    r["status"],
                                    q.since,
                                    at,
                                    fake.clock() + fake.state.settle,
                                    q.stamp_before,
                                )
                            )
                        fake.state.ledger[lead] = r["status"]
                        fake.state.transitions.append(
                            {"lead": lead, "status": r["status"], "at": at, "row": r["row"]}
                        )
            queued = fake.running() is not None
            return jsonify(
                {
                    "changed": changed,
                    "unchanged": unchanged,
                    "moved": moved,
                    "withdrawn": withdrawn,
                    "restore": restore,
                    "queued": queued,
                    "message": f"{len(changed)} status change(s) recorded"
                    + ("; a sync is running: they go out with it" if queued else "")
                    + "".join(f"; row {n}: {words[n]}" for n in withdrawn),
                    "rows": [
                        {"row": n, "outcome": "sent", "message": "sent", "events": []}
                        for n in changed
                    ]
                    + [{"row": n, "outcome": "withdrawn", "message": words[n]} for n in withdrawn],
                }
            )

        @app.post("/api/sync")
        def sync() -> Any:
            body = request.get_json(silent=True)
            allowed = {"spreadsheet_id", "tab", "dry_run", "keys", "trigger", "wait"}
            if not isinstance(body, dict) or set(body) - allowed:
                return error(400, "invalid_request", f"fields allowed: {sorted(allowed)}")
            wait = body.get("wait", 8)
            if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 25:
                return error(400, "invalid_request", "wait: a number of seconds from 0 to 25")
            with fake.guard:
                running = fake.running()
                if running is not None:
                    return error(
                        409,
                        "sync_running",
                        "a sync of this tab is running",
                        pass_id=running.pass_id,
                    )
                p = FakePass(
                    pass_id=f"p-{fake.state.next_pass:04d}",
                    trigger=str(body.get("trigger", "sync")),
                    dry_run=bool(body.get("dry_run")),
                    started=fake.clock(),
                    length=fake.state.profile.seconds * fake.time_scale,
                    profile=PassProfile(**vars(fake.state.profile)),
                    started_at=datetime.now(ZoneInfo("UTC")).isoformat(),
                )
                fake.state.next_pass += 1
                fake.state.passes[p.pass_id] = p
            deadline = p.started + wait * fake.time_scale
            while fake.clock() < min(deadline, p.started + p.length):
                time.sleep(0.01)
            record = fake.pass_record(p)
            if record["state"] == "done":
                return jsonify(record["summary"])
            if record["state"] == "failed":
                return error(502, "sheet_unavailable", record["error"], pass_id=p.pass_id)
            return jsonify(
                {k: record[k] for k in ("pass_id", "state", "phase", "done", "total")}
            ), 202

        @app.get("/api/passes/<pass_id>")
        def passes(pass_id: str) -> Any:
            p = fake.state.passes.get(pass_id)
            if p is None:
                return error(404, "unknown_pass", f"no pass {pass_id}")
            offset = int(request.args.get("rows_offset", 0))
            limit = min(int(request.args.get("rows_limit", PAGE)), PAGE)
            return jsonify(fake.pass_record(p, offset, limit))

        # -- controls for tests ---------------------------------------------------------
        @app.post("/_fake/pass")
        def set_pass() -> Any:
            spec = request.get_json(silent=True) or {}
            fake.state.profile = PassProfile(**spec)
            return jsonify(vars(fake.state.profile))

        @app.post("/_fake/settle")
        def set_settle() -> Any:
            """Edits wait this many real seconds before they are sent (0: at once)."""
            fake.state.settle = float((request.get_json(silent=True) or {}).get("seconds", 0))
            return jsonify({"settle": fake.state.settle})

        @app.post("/_fake/alerts")
        def set_alerts() -> Any:
            fake.state.alerts = (request.get_json(silent=True) or {}).get("alerts", [])
            return jsonify({"alerts": fake.state.alerts})

        @app.post("/_fake/status")
        def set_status() -> Any:
            """Fields /api/status answers besides (or instead of) its own, e.g. a long list."""
            fake.state.status_extra = request.get_json(silent=True) or {}
            return jsonify({"fields": sorted(fake.state.status_extra)})

        @app.post("/_fake/faults")
        def set_faults() -> Any:
            spec = request.get_json(silent=True) or {}
            fake.state.faults.extend([int(spec.get("status", 500))] * int(spec.get("count", 1)))
            return jsonify({"pending": len(fake.state.faults)})

        @app.post("/_fake/identities")
        def set_identities() -> Any:
            fake.identities.update((request.get_json(silent=True) or {}).get("identities", {}))
            return jsonify({"count": len(fake.identities)})

        @app.post("/_fake/swap_on_next_edit")
        def swap_next() -> Any:
            spec = request.get_json(silent=True) or {}
            fake.swap_on_next_edit = (int(spec["a"]), int(spec["b"]))
            return jsonify({"armed": True})

        @app.post("/_fake/adopt")
        def adopt() -> Any:
            return jsonify({"leads": fake.adopt()})

        @app.get("/_fake/requests")
        def requests_seen() -> Any:
            return jsonify({"requests": fake.state.requests})

        @app.get("/_fake/transitions")
        def transitions() -> Any:
            return jsonify({"transitions": fake.state.transitions, "ledger": fake.state.ledger})

        @app.post("/_fake/reset")
        def reset() -> Any:
            with fake.guard:
                fake.state.requests.clear()
                fake.state.transitions.clear()
                fake.state.passes.clear()
                fake.state.alerts = []
                fake.state.status_extra = {}
                fake.state.pending_edits = []
                fake.state.faults.clear()
                fake.state.settle = 0.0
                fake.state.queue.clear()
                fake.state.profile = PassProfile()
                fake.swap_on_next_edit = None
            fake.reseed()
            return jsonify({"leads": fake.adopt()})

        @app.get("/_fake/slow")
        def slow() -> Any:
            time.sleep(float(request.args.get("seconds", 1)) * fake.time_scale)
            return jsonify({"slept": True})

        return app


# -- the sheet the Node tests use ---------------------------------------------------------
def seed_rows(count: int = 40) -> list[list[object]]:
    """`count` leads in the demo's columns plus a CAPI Key, stamped hours ago."""
    header = [*demo.HEADER, KEY, "CAPI Status"]
    now = datetime.now(ZoneInfo(demo.DEMO_TIME_ZONE)).replace(microsecond=0)
    statuses = ["New", "MQL", "SQL", "New", "Opportunity"]
    rows: list[list[object]] = [header]
    for i in range(count):
        email = f"lead{i + 1:02d}@example.com"
        at = demo.stamp(now - timedelta(hours=30 - i * 0.5))
        values = {
            "Created At": at,
            "First Name": f"Lead{i + 1:02d}",
            "Email": email,
            "Country": "IN",
            "Lead Status": statuses[i % len(statuses)],
            "Status Changed At": at,
            KEY: lead_key(email),
            "CAPI Status": "sent",
        }
        rows.append([values.get(h, "") for h in header])
    return rows


def seed(data_dir: Path, rows: list[list[object]]) -> None:
    book = {
        "title": "Apps Script test",
        "timeZone": demo.DEMO_TIME_ZONE,
        # "Notes" has the same header: an edit there must not count as a status change.
        "sheets": {demo.DEMO_TAB: rows, "Notes": rows[:2]},
    }
    (data_dir / "sheets.json").write_text(
        json.dumps({"spreadsheets": {demo.DEMO_SPREADSHEET_ID: book}})
    )


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    with tempfile.TemporaryDirectory(prefix="sidebar-fake-") as tmp:
        data_dir = Path(tmp)
        rows = seed_rows()
        seed(data_dir, rows)
        secret = "fake-backend-shared-secret-0123456789abcdef"
        with BackgroundServer(create_emulator(data_path=data_dir / "sheets.json")) as sheets:
            fake = FakeBackend(
                sheets.url,
                demo.DEMO_SPREADSHEET_ID,
                demo.DEMO_TAB,
                secret=secret,
                time_scale=scale,
                seed=rows,
            )
            fake.adopt()
            with BackgroundServer(fake.app) as backend:
                info = {
                    "backend_url": backend.url,
                    "sheets_url": sheets.url,
                    "secret": secret,
                    "spreadsheet_id": demo.DEMO_SPREADSHEET_ID,
                    "tab": demo.DEMO_TAB,
                    "time_zone": demo.DEMO_TIME_ZONE,
                    "time_scale": scale,
                }
                print(json.dumps(info), flush=True)
                sys.stdin.read()  # until the test closes our stdin (or dies)


if __name__ == "__main__":
    main()
