"""The playground in a real browser (Debian's Chromium, headless), over the real backend: the
grid's status edit runs the real Code.gs onEdit flow and fills the row's CAPI columns, Sync now
updates the counts, a backend error shows in the sidebar, and the sidebar is the repository's
file, unchanged. (The edit and Sync now tests use the backend's /api/edits rows form and the
pass fields of /api/sync, docs/http-api.md.)

Set PLAYGROUND_SCREENSHOT=docs/playground.png to refresh the README's screenshot."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from sheet_bridge.local import demo_leads as demo
from sheet_bridge.local.demo import DemoEnvironment, demo_environment, run_demo
from sheet_bridge.local.playground import (
    SHIM_TAG,
    SIDEBAR_DIR,
    PlaygroundError,
    create_playground,
)
from sheet_bridge.local.server import BackgroundServer
from tests.local.conftest import WAIT_MS, open_playground

ISO_WITH_OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$")


@dataclass
class Playground:
    url: str
    env: DemoEnvironment

    def rows(self) -> list[list[Any]]:
        data = httpx.get(self.env.sheets_url + "/_emulator/data", timeout=10).json()
        rows: list[list[Any]] = data["spreadsheets"][demo.DEMO_SPREADSHEET_ID]["sheets"][
            demo.DEMO_TAB
        ]
        return rows

    def rows_with_status(self, status: str) -> list[int]:
        rows = self.rows()
        col = rows[0].index("Lead Status")
        return [i + 1 for i, r in enumerate(rows) if i and len(r) > col and r[col] == status]

    def meta_event_names(self) -> list[str]:
        events = httpx.get(self.env.meta_url + "/_fake/events", timeout=10).json()["events"]
        return [e["event_name"] for e in events]


@pytest.fixture(scope="module")
def playground(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playground]:
    data_dir = tmp_path_factory.mktemp("playground")
    run_demo(data_dir)
    with demo_environment(data_dir) as env:
        app = create_playground(env, secrets.token_urlsafe(32))
        with BackgroundServer(app) as server:
            yield Playground(server.url, env)


@pytest.fixture
def page(browser: Any, playground: Playground) -> Iterator[Any]:
    page, errors = open_playground(browser, playground.url)
    yield page
    page.close()
    assert errors == [], "the page threw"


def cell(page: Any, row: int, header: str) -> Any:
    return page.locator(f'#grid td[data-row="{row}"][data-header="{header}"]')


def sent_count(page: Any) -> int:
    text = page.frame_locator("#sidebar").locator('#counts [data-count="sent"] b').inner_text()
    return int(text)


def test_editing_a_status_in_the_grid_runs_the_onedit_flow_and_fills_capi_status(
    page: Any, playground: Playground
) -> None:
    row = playground.rows_with_status("New")[0]
    assert "QualifiedLead" not in cell(page, row, "CAPI Status").inner_text()
    meta_before = playground.meta_event_names()

    cell(page, row, "Lead Status").click()
    page.locator("#grid td.editing input").fill("MQL")
    page.keyboard.press("Enter")

    capi = cell(page, row, "CAPI Status")
    capi.filter(has_text="QualifiedLead").wait_for(timeout=WAIT_MS)
    stamp = cell(page, row, "Status Changed At").inner_text()
    assert ISO_WITH_OFFSET.match(stamp), stamp
    assert "QualifiedLead" in playground.meta_event_names()[len(meta_before) :]
    executions = page.locator("#executions").inner_text()
    assert re.search(
        r"UrlFetchApp POST https://sheet-bridge\.example\.com/api/edits "
        r"\(as you@example\.com\) → 200",
        executions,
    ), executions


def test_preview_then_sync_now_updates_the_counts(page: Any, playground: Playground) -> None:
    sidebar = page.frame_locator("#sidebar")
    before = sent_count(page)
    # A status changed by an API write (an import, say): no onEdit fires, Sync now catches it.
    row = playground.rows_with_status("New")[-1]
    header = playground.rows()[0]
    now = datetime.now(ZoneInfo(demo.DEMO_TIME_ZONE)).replace(microsecond=0)
    playground.env.bridge.sheets.write_cells(
        [
            (row, header.index("Lead Status"), "SQL"),
            (row, header.index("Status Changed At"), now.isoformat()),
        ]
    )

    sidebar.locator("#preview").click()
    preview = sidebar.locator("#preview-result")
    preview.wait_for(timeout=WAIT_MS)
    would = re.search(r"Preview: (\d+) row\(s\) would send", preview.inner_text())
    assert would and int(would.group(1)) >= 1, preview.inner_text()
    assert sent_count(page) == before, "a preview sends nothing"
    shot = os.environ.get("PLAYGROUND_SCREENSHOT")
    if shot:
        # Wide enough for Created At (dates shown as the sheet formats them) through Lead
        # Status, the edited row in view: the screenshot shows the flow.
        page.set_viewport_size({"width": 1920, "height": 900})
        cell(page, row, "Lead Status").evaluate(
            "td => { const w = td.closest('#grid-wrap');"
            " w.scrollLeft = 0; w.scrollTop = td.offsetTop - 200; }"
        )
        page.screenshot(path=shot)
        page.set_viewport_size({"width": 1500, "height": 900})

    sidebar.locator("#sync-now").click()
    sidebar.locator("#sync-result").wait_for(timeout=WAIT_MS)
    # New → SQL: QualifiedLead (the stage passed over) and Schedule.
    sidebar.locator('#counts [data-count="sent"] b').filter(
        has_text=re.compile(rf"^{before + 2}$")
    ).wait_for(timeout=WAIT_MS)
    cell(page, row, "CAPI Status").filter(has_text="Schedule").wait_for(timeout=WAIT_MS)


def test_a_jump_link_selects_the_row_in_the_grid(page: Any) -> None:
    sidebar = page.frame_locator("#sidebar")
    link = sidebar.locator("#attention a.row").first
    row = link.get_attribute("data-row")
    link.click()
    page.locator(f'#grid tr.active[data-row="{row}"]').wait_for(timeout=WAIT_MS)


def test_the_report_panel_shows_the_funnel_chart_and_the_advice(page: Any) -> None:
    sidebar = page.frame_locator("#sidebar")
    sidebar.locator("#report-panel summary").click()
    sidebar.locator("#report-advice li").first.wait_for(timeout=WAIT_MS)
    assert sidebar.locator("#report-chart svg").count() == 1
    stages = sidebar.locator("#report-stages li").all_inner_texts()
    assert stages[0].startswith("Lead: ") and "reached" in stages[0], stages
    advice = " ".join(sidebar.locator("#report-advice li").all_inner_texts())
    assert "Lead" in advice and "Sales Funnel" in advice, advice


def test_a_backend_error_shows_in_the_sidebar(page: Any, playground: Playground) -> None:
    sidebar = page.frame_locator("#sidebar")
    sidebar.locator('#counts [data-count="sent"]').wait_for(timeout=WAIT_MS)
    # 403 is permanent (no retry with real sleeps): the backend's read fails at once. The fault
    # is for the backend's read of the tab alone (stored values): the page refreshes its grid
    # after every sidebar call (formatted values), and one such refresh may reach the
    # emulator after this line.
    httpx.post(
        playground.env.sheets_url + "/_emulator/faults",
        json={
            "status": 403,
            "method": "values.get",
            "params": {"valueRenderOption": "UNFORMATTED_VALUE"},
        },
    ).raise_for_status()
    sidebar.locator("#sync-now").click()
    error = sidebar.locator("#error")
    error.wait_for(state="visible", timeout=WAIT_MS)
    text = error.inner_text()
    assert "HTTP 502" in text and "permission" in text, text


def test_the_sidebar_is_the_repository_file_unchanged(playground: Playground) -> None:
    served = httpx.get(playground.url + "/playground/sidebar", timeout=10).text
    assert served.count(SHIM_TAG) == 1
    assert served.replace(SHIM_TAG, "", 1) == (SIDEBAR_DIR / "Sidebar.html").read_text()
    code = httpx.get(playground.url + "/playground/Code.gs", timeout=10).text
    assert code == (SIDEBAR_DIR / "Code.gs").read_text()


def test_a_missing_sidebar_folder_is_named_with_what_to_do(
    playground: Playground, tmp_path: Path
) -> None:
    with pytest.raises(PlaygroundError, match=r"cannot find .*Code\.gs; run it from a clone"):
        create_playground(playground.env, "s", sidebar_dir=tmp_path)


def test_the_grid_shows_dates_as_the_sheet_formats_them_and_reads_typed_dates(
    page: Any, playground: Playground
) -> None:
    # Google Sheets shows a date cell in its number format (FORMATTED_VALUE,
    # https://developers.google.com/sheets/api/reference/rest/v4/ValueRenderOption), and a
    # date a person types becomes a date (USER_ENTERED: "as if the user typed them into the UI").
    shown = cell(page, 2, "Created At").inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", shown), shown
    col = playground.rows()[0].index("Created At")
    assert isinstance(playground.rows()[1][col], float), "the sheet holds a serial number"

    bottom = len(playground.rows()) + 1  # the empty row under the data, as in Sheets
    cell(page, bottom, "Created At").click()
    page.locator("#grid td.editing input").fill("12/3/2026 10:15")  # the en_US way
    page.keyboard.press("Enter")
    # A cell with no format takes the typed date's form, as in Sheets.
    cell(page, bottom, "Created At").filter(has_text="12/3/2026 10:15:00").wait_for(timeout=WAIT_MS)
    stored = playground.rows()[bottom - 1][col]
    assert isinstance(stored, float) and abs(stored - 46359.427083) < 1e-6, stored


def test_sync_nows_summary_counts_every_row_and_the_status_chips_say_they_count_events(
    page: Any, playground: Playground
) -> None:
    sidebar = page.frame_locator("#sidebar")
    sidebar.locator('#counts [data-count="sent"]').wait_for(timeout=WAIT_MS)
    assert "Events by state" in sidebar.locator("#counts-label").inner_text()
    assert sidebar.locator("#counts").get_attribute("aria-labelledby") == "counts-label"

    sidebar.locator("#sync-now").click()
    result = sidebar.locator("#sync-result")
    result.wait_for(timeout=WAIT_MS)

    text = result.inner_text()
    line = text.split("Rows: ", 1)[1].split(". ", 1)[0]
    counts = {part.rsplit(" ", 1)[0]: int(part.rsplit(" ", 1)[1]) for part in line.split(" · ")}
    assert "baseline" in counts, text  # the demo's imported leads (the CLI counts them too)
    data_rows = [r for r in playground.rows()[1:] if any(str(v).strip() for v in r)]
    assert sum(counts.values()) == len(data_rows), text
