"""Issue 13's whole story in Debian's Chromium, over the real backend: a spreadsheet shared by
two editors with Google sign-in, a paste of 30 rows, a sort, a colleague's edit, the colleague
taking the triggers over, the hourly trigger. It ends with every lead's events at the fake
Meta exactly once, each timed by a real status change: never by the paste of unchanged rows,
the sort, or a pass.

Needs the backend side of the add-on contract (docs/http-api.md): /api/edits by rows, /api/sync
with `trigger`/`wait`, /api/passes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer

from sheet_bridge.local.demo import DemoEnvironment, demo_environment, run_demo
from sheet_bridge.local.playground import PLAYGROUND_COLLEAGUE, PLAYGROUND_USER, create_playground
from sheet_bridge.local.server import BackgroundServer
from tests.google_tokens import certificate_pem
from tests.google_tokens import id_token as google_id_token
from tests.local.conftest import (
    WAIT_MS,
    backend_calls,
    fetch_count,
    google_sign_in_backend,
    open_playground,
    paste,
    switch_user,
    type_status,
)

KID = "local-test-key"
NEXT = {"New": "MQL", "MQL": "SQL", "SQL": "Opportunity", "Opportunity": "Customer"}
EVENT_OF = {"MQL": "QualifiedLead", "SQL": "Schedule", "Opportunity": "StartTrial"}


@dataclass
class Sheet:
    env: DemoEnvironment

    def rows(self) -> list[list[Any]]:
        data = httpx.get(self.env.sheets_url + "/_emulator/data", timeout=10).json()
        book = data["spreadsheets"][self.env.config.sheets.spreadsheet_id]
        rows: list[list[Any]] = book["sheets"][self.env.config.sheets.tab]
        return rows

    def by_key(self) -> dict[str, dict[str, Any]]:
        """Each lead's cells by its CAPI Key, and the row it sits in now."""
        rows = self.rows()
        header = rows[0]
        leads = {}
        for n, line in enumerate(rows[1:], start=2):
            cells = {h: (line[i] if i < len(line) else "") for i, h in enumerate(header)}
            cells["row"] = n
            leads[str(cells["CAPI Key"])] = cells
        return leads

    def meta_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = httpx.get(
            self.env.meta_url + "/_fake/events", timeout=10
        ).json()["events"]
        return events


def hashed(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def first_hash(em: str | list[str]) -> str:
    """user_data.em: one hash, or a list of them (Meta takes both)."""
    return em[0] if isinstance(em, list) else em


def epoch(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp())


def wait_for_pass(page: Any) -> None:
    """Sync now, and wait for its summary (or for the pass already running to end)."""
    sidebar = page.frame_locator("#sidebar")
    sidebar.locator("#result").evaluate("r => r.textContent = ''")
    sidebar.locator("#sync-now").click()
    sidebar.locator("#sync-result").wait_for(timeout=WAIT_MS * 3)


@pytest.fixture
def shared_sheet(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, httpserver: HTTPServer, google_key: Any
) -> Iterator[tuple[Any, Sheet]]:
    httpserver.expect_request("/certs").respond_with_data(
        json.dumps({KID: certificate_pem(google_key)}), content_type="application/json"
    )
    data_dir = tmp_path_factory.mktemp("shared-sheet")
    run_demo(data_dir)
    tokens: dict[str, str | None] = {
        email: google_id_token(google_key, KID, email=email)
        for email in (PLAYGROUND_USER, PLAYGROUND_COLLEAGUE)
    }
    with demo_environment(data_dir) as env:
        backend = google_sign_in_backend(
            env, httpserver.url_for("/certs"), (PLAYGROUND_USER, PLAYGROUND_COLLEAGUE)
        )
        app = create_playground(env, None, backend=backend, identity_tokens=tokens)
        with BackgroundServer(app) as running:
            page, errors = open_playground(browser, running.url)
            yield page, Sheet(env)
            page.close()
            assert errors == [], "the page threw"


def advanced(leads: dict[str, dict[str, Any]], rows: range, count: int) -> dict[str, str]:
    """`count` leads in `rows` that Meta already knows (their CAPI Status says Sent, nothing
    else), each with the status one stage on: {key: new status}."""
    chosen: dict[str, str] = {}
    for key, lead in sorted(leads.items(), key=lambda kv: kv[1]["row"]):
        status, said = str(lead["Lead Status"]), str(lead["CAPI Status"])
        known = said.startswith("Sent:") and "·" not in said
        if known and lead["row"] in rows and NEXT.get(status) in EVENT_OF and len(chosen) < count:
            chosen[key] = NEXT[status]
    assert len(chosen) == count, "the demo sheet has such leads"
    return chosen


def test_a_paste_a_sort_and_a_second_editor_send_each_change_once_timed_by_the_change(
    shared_sheet: tuple[Any, Sheet],
) -> None:
    page, sheet = shared_sheet
    wait_for_pass(page)  # whatever the demo left due goes out first
    baseline = len(sheet.meta_events())
    before = sheet.by_key()

    # 1. A paste of 30 status cells (rows 2–31): three leads move one stage on, 27 unchanged.
    pasted = advanced(before, range(2, 32), 3)
    block = []
    for row in range(2, 32):
        lead = next(v for v in before.values() if v["row"] == row)
        block.append([pasted.get(str(lead["CAPI Key"]), str(lead["Lead Status"]))])
    since = fetch_count(page)
    paste(page, 2, "Lead Status", block)
    calls = backend_calls(page, since)
    assert [(c["method"], c["path"], c["status"]) for c in calls] == [("POST", "/api/edits", 200)]
    paste_at = json.loads(calls[0]["payload"])["at"]
    after_paste = sheet.by_key()
    stamp = "Status Changed At"
    restamped = {k for k in after_paste if after_paste[k][stamp] != before[k][stamp]}
    assert restamped == set(pasted), "only the three changes are stamped"
    assert all(after_paste[k][stamp] == paste_at for k in pasted)

    # 2. A sort by e-mail: every row moves, one call, nothing changes for any lead.
    since = fetch_count(page)
    header = sheet.rows()[0]
    page.locator(f'#grid th[data-col="{header.index("Email") + 1}"] button.sort').click()
    calls = backend_calls(page, since)
    assert [(c["path"], c["status"]) for c in calls] == [("/api/edits", 200)]
    assert json.loads(calls[0]["body"])["changed"] == []
    after_sort = sheet.by_key()
    moved = [k for k in after_sort if after_sort[k]["row"] != after_paste[k]["row"]]
    assert len(moved) > 20, "the sort moved the leads"
    assert all(after_sort[k][stamp] == after_paste[k][stamp] for k in after_sort)

    # 3. The colleague edits a status: the owner's trigger posts it, once, as the owner.
    switch_user(page, PLAYGROUND_COLLEAGUE)
    rest = {k: v for k, v in after_sort.items() if k not in pasted}
    first, second = advanced(rest, range(2, 10_000), 2).items()
    since = fetch_count(page)
    type_status(page, after_sort[first[0]]["row"], first[1])
    calls = backend_calls(page, since)
    assert [(c["path"], c["user"], c["status"]) for c in calls] == [
        ("/api/edits", PLAYGROUND_USER, 200)
    ]

    # 4. The colleague takes the triggers over; the owner's stand down.
    sidebar = page.frame_locator("#sidebar")
    sidebar.locator("#settings-panel summary").click()
    sidebar.locator("#take-over").click()
    sidebar.locator("#triggers-result", has_text="taken over from").wait_for(timeout=WAIT_MS)
    since = fetch_count(page)
    type_status(page, sheet.by_key()[second[0]]["row"], second[1])
    calls = backend_calls(page, since)
    assert [(c["path"], c["user"], c["status"]) for c in calls] == [
        ("/api/edits", PLAYGROUND_COLLEAGUE, 200)
    ]

    # 5. The hourly triggers of both: one pass starts (the colleague's), then one more pass.
    since = fetch_count(page)
    page.locator("#fire-hourly").click()
    calls = backend_calls(page, since)
    assert [(c["path"], c["user"], json.loads(c["payload"])) for c in calls] == [
        (
            "/api/sync",
            PLAYGROUND_COLLEAGUE,
            {
                "spreadsheet_id": sheet.env.config.sheets.spreadsheet_id,
                "tab": sheet.env.config.sheets.tab,
                "trigger": "hourly",
                "wait": 0,
            },
        )
    ]
    wait_for_pass(page)

    # Every change reached Meta exactly once, timed by the change itself.
    now = sheet.by_key()
    changed = {**pasted, first[0]: first[1], second[0]: second[1]}
    expected = {
        (hashed(str(now[k]["Email"])), EVENT_OF[status], epoch(str(now[k]["Status Changed At"])))
        for k, status in changed.items()
    }
    events = sheet.meta_events()[baseline:]
    got = [(first_hash(e["user_data"]["em"]), e["event_name"], e["event_time"]) for e in events]
    assert sorted(got) == sorted(expected), "each change once, at its own time, nothing else"
    assert len({e["event_id"] for e in events}) == len(events)
    assert {t for _, _, t in got} <= {epoch(paste_at)} | {
        epoch(str(now[k]["Status Changed At"])) for k in (first[0], second[0])
    }
