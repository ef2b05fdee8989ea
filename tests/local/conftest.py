"""Browser fixtures for the playground and sidebar tests: Debian's Chromium, headless."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sheet_bridge.local.demo import DemoEnvironment
from sheet_bridge.web.app import create_app
from tests.google_tokens import AUDIENCE

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


def cell(page: Any, row: int, header: str) -> Any:
    return page.locator(f'#grid td[data-row="{row}"][data-header="{header}"]')


def type_status(page: Any, row: int, status: str) -> None:
    """Type a status into a row's status cell in the grid, as a person does."""
    since = fetch_count(page)
    cell(page, row, "Lead Status").click()
    page.locator("#grid td.editing input").fill(status)
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => window.playground.state().fetches.length > {since}")


def google_sign_in_backend(env: DemoEnvironment, certs_url: str, allowed: tuple[str, ...]) -> Any:
    """The real backend over the demo's bridge, accepting only Google ID tokens of `allowed`
    whose signing certificate `certs_url` serves (as Google's v1 certs endpoint does)."""
    server = env.config.server.model_copy(
        update={
            "shared_secret_env": None,
            "id_token_audience": AUDIENCE,
            "id_token_certs_url": certs_url,
            "allowed_emails": allowed,
        }
    )
    env.bridge.config = env.config.model_copy(update={"server": server})
    return create_app(bridges=[env.bridge], environ={})
