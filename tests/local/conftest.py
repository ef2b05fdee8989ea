"""Browser fixtures for the playground and sidebar tests: Debian's Chromium, headless."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            "Debian's /usr/bin/chromium is not installed (.ci/run installs it); "
            "`playwright install` cannot download a browser here"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


def open_playground(browser: Any, url: str) -> tuple[Any, list[str]]:
    """The playground page with its sidebar loaded; the list collects errors the page throws."""
    page = browser.new_page(viewport={"width": 1500, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.frame_locator("#sidebar").locator("#counts li").first.wait_for(timeout=WAIT_MS)
    return page, errors


def switch_user(page: Any, email: str) -> None:
    """The editor at the keyboard becomes `email`: the sidebar reloads as them."""
    page.select_option("#user", email)
    page.wait_for_function(
        """email => {
            const w = document.querySelector('#sidebar').contentWindow;
            return w.location.search === '?as=' + encodeURIComponent(email)
                && !!w.document.querySelector('#owner[data-owner]');
        }""",
        arg=email,
        timeout=WAIT_MS,
    )


def paste(page: Any, row: int, header: str, block: list[list[str]]) -> None:
    """Paste tab-separated rows into the grid from a cell down, as from the clipboard."""
    page.locator(f'#grid td[data-row="{row}"][data-header="{header}"]').click()
    text = "\n".join("\t".join(r) for r in block) + "\n"
    page.locator("#grid td.editing input").evaluate(
        """(input, text) => {
            const data = new DataTransfer();
            data.setData('text/plain', text);
            const init = { clipboardData: data, bubbles: true, cancelable: true };
            input.dispatchEvent(new ClipboardEvent('paste', init));
        }""",
        text,
    )


def backend_calls(page: Any, since: int = 0) -> list[dict[str, Any]]:
    """The UrlFetchApp calls Code.gs made to the backend in this page (method, path, user…)."""
    calls: list[dict[str, Any]] = page.evaluate(
        """since => window.playground.state().fetches.slice(since)
            .filter(f => f.url.startsWith('https://sheet-bridge.example.com/'))
            .map(f => ({method: f.method, path: new URL(f.url).pathname, user: f.user,
                        status: f.status, error: f.error || null, payload: f.params.payload || null,
                        body: f.body || null}))""",
        since,
    )
    return calls


def fetch_count(page: Any) -> int:
    count: int = page.evaluate("() => window.playground.state().fetches.length")
    return count
