"""The playground when edits settle ([sync] settle_seconds > 0, as a real bridge and demo data
written before the demo set 0): the page says what happens to an edit, the toast and the
sidebar give the same due time with its zone, and once the backend's sweep sends the edit the
sidebar and the grid show it without a click (the sidebar looks again while edits wait, and
stops when none do)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sheet_bridge.local.demo import demo_environment, run_demo, write_config
from sheet_bridge.local.playground import create_playground
from sheet_bridge.local.server import BackgroundServer
from tests.local.conftest import WAIT_MS, backend_calls, cell, open_playground, type_status

SETTLE = 4


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir: Path = tmp_path_factory.mktemp("settling")
    config = write_config(data_dir)
    config.write_text(
        config.read_text().replace("settle_seconds = 0", f"settle_seconds = {SETTLE}")
    )
    run_demo(data_dir)
    with demo_environment(data_dir) as env:
        app = create_playground(env, secrets.token_urlsafe(32))
        with BackgroundServer(app) as server:
            yield server.url


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    page, errors = open_playground(browser, url)
    yield page
    page.close()
    assert errors == [], "the page threw"


def a_row_at(page: Any, status: str) -> int:
    td = page.locator(f'#grid td[data-header="Lead Status"][data-value="{status}"]').first
    return int(td.get_attribute("data-row"))


def test_a_settled_edit_shows_up_sent_in_the_sidebar_and_the_grid_without_a_click(
    page: Any,
) -> None:
    sidebar = page.frame_locator("#sidebar")
    sidebar.locator('#counts [data-count="sent"]').wait_for(timeout=WAIT_MS)
    explained = page.locator("#edit-flow").inner_text()
    assert f"An edit settles for {SETTLE} s" in explained, explained
    row = a_row_at(page, "New")

    type_status(page, row, "MQL")

    toast = page.locator("#toasts .toast", has_text="pending").first
    toast.wait_for(timeout=WAIT_MS)
    due = re.search(r"sent at (\d\d:\d\d:\d\d IST) if", toast.inner_text())
    assert due, toast.inner_text()  # the demo sheet's zone, Asia/Kolkata, named
    listed = sidebar.locator("#pending li", has_text=f"Row {row}")
    listed.wait_for(timeout=WAIT_MS)
    assert f"sent at {due.group(1)} if it still holds then" in listed.inner_text()

    # No click from here on: the sweep sends it once settled; the sidebar and grid follow.
    since = len(backend_calls(page))
    cell(page, row, "CAPI Status").filter(has_text="QualifiedLead").filter(
        has_not_text="Pending"
    ).wait_for(timeout=WAIT_MS)
    sidebar.locator("#pending li").first.wait_for(state="detached", timeout=WAIT_MS)

    # Nothing pending: the sidebar stops looking.
    page.wait_for_timeout(7000)
    after = backend_calls(page, since)
    page.wait_for_timeout(7000)
    assert backend_calls(page, since) == after, "no status reads once nothing is pending"
