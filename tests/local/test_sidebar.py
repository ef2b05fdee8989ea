"""The sidebar in Debian's Chromium, in the playground, as two editors of one spreadsheet: the
progress bar of a pass that outlives UrlFetch, alerts at the top for everyone, who owns the
triggers and taking them over, and Google sign-in with locally minted ID tokens.

All but the sign-in test run against the contract fake backend (tests/sidebar/fake_backend.py),
which plays a pass's seconds ten times faster (and UrlFetch's 60-s deadline with them); the
sign-in test runs the real backend, verifying the tokens against a local certificate endpoint."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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
    switch_user,
    type_status,
)
from tests.sidebar.fake_backend import FakeBackend, FakeState

SCALE = 0.1  # the fake's seconds, played ten times faster
TOKENS = {PLAYGROUND_USER: "id-token-of-you", PLAYGROUND_COLLEAGUE: "id-token-of-colleague"}
KID = "local-test-key"


@dataclass
class SharedSheet:
    url: str
    env: DemoEnvironment
    fake: FakeBackend


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedSheet]:
    data_dir = tmp_path_factory.mktemp("sidebar")
    run_demo(data_dir)
    with demo_environment(data_dir) as env:
        fake = FakeBackend(
            env.sheets_url,
            env.config.sheets.spreadsheet_id,
            env.config.sheets.tab,
            identities={token: email for email, token in TOKENS.items()},
            time_scale=SCALE,
        )
        app = create_playground(
            env,
            None,
            backend=fake.app,
            identity_tokens=dict(TOKENS),
            fetch_deadline_ms=int(60_000 * SCALE),
        )
        with BackgroundServer(app) as server:
            yield SharedSheet(server.url, env, fake)


@pytest.fixture
def page(browser: Any, shared: SharedSheet) -> Iterator[Any]:
    shared.fake.state = FakeState()
    shared.fake.adopt()
    page, errors = open_playground(browser, shared.url)
    yield page
    page.close()
    assert errors == [], "the page threw"


def a_row_not_at(page: Any, status: str, after: int = 1) -> int:
    """A data row (below `after`) whose status is not `status`."""
    rows = page.locator('#grid td[data-header="Lead Status"]')
    for i in range(rows.count()):
        td = rows.nth(i)
        row = int(td.get_attribute("data-row"))
        if row > after and td.get_attribute("data-value") not in ("", status):
            return row
    raise AssertionError(f"no row with a status other than {status}")


def test_a_pass_longer_than_urlfetch_allows_shows_progress_then_the_summary_and_more_rows(
    page: Any, shared: SharedSheet
) -> None:
    # 80 s of the backend's time against UrlFetch's 60-s deadline (both played ten times
    # faster): no request may stay open for the pass.
    shared.fake.state.profile.seconds = 80
    shared.fake.state.profile.total = 1500
    shared.fake.state.profile.attention = 60
    sidebar = page.frame_locator("#sidebar")
    since = fetch_count(page)

    clicked = time.perf_counter()
    sidebar.locator("#sync-now").click()
    sidebar.locator('#progress:not([data-phase="start"])').wait_for(timeout=WAIT_MS)
    first_progress = time.perf_counter() - clicked
    sidebar.locator('#progress[data-phase="send"]:not([data-done="0"])').wait_for(timeout=WAIT_MS)
    text = sidebar.locator("#progress-text").inner_text()
    assert re.match(r"Sending to Meta: \d+ of 1500 events", text), text
    value, maximum = sidebar.locator("#progress-bar").evaluate("b => [b.value, b.max]")
    assert 0 < value < 1500 and maximum == 1500

    result = sidebar.locator("#sync-result")
    result.wait_for(timeout=WAIT_MS)
    summary = result.inner_text()
    assert "sent 1440" in summary and "1500 event(s) sent to Meta" in summary, summary
    assert sidebar.locator("#progress").is_hidden()
    assert sidebar.locator("#attention-rows li").count() == 50
    sidebar.locator("#more-rows").click()
    sidebar.locator("#attention-rows li").nth(59).wait_for(timeout=WAIT_MS)
    assert sidebar.locator("#attention-rows li").count() == 60
    assert sidebar.locator("#more-rows").count() == 0

    calls = backend_calls(page, since)
    assert [c for c in calls if c["error"]] == [], "no request ran into UrlFetch's deadline"
    assert calls[0]["path"] == "/api/sync"
    assert len([c for c in calls if c["path"].endswith("/api/passes/p-0001")]) >= 2, "polled"
    print(f"\ntime to first progress in the sidebar: {first_progress:.2f} s")


def test_alerts_show_at_the_top_of_the_sidebar_for_every_editor(
    page: Any, shared: SharedSheet
) -> None:
    shared.fake.state.alerts = [
        {
            "code": "token_rejected",
            "severity": "error",
            "message": "Meta rejected the access token (code 190): nothing is being sent.",
            "fix": "Generate a new token in Events Manager and set META_CAPI_TOKEN on the backend.",
        },
        {
            "code": "api_version",
            "severity": "warning",
            "message": "Graph API v25.0 reaches its end of life in 20 days.",
            "fix": "Set [meta] api_version to the current version.",
        },
    ]
    for who in (PLAYGROUND_USER, PLAYGROUND_COLLEAGUE):
        switch_user(page, who)
        sidebar = page.frame_locator("#sidebar")
        token = sidebar.locator('#alerts .alert.error[data-code="token_rejected"]')
        token.wait_for(timeout=WAIT_MS)
        assert "code 190" in token.inner_text() and "META_CAPI_TOKEN" in token.inner_text()
        assert sidebar.locator('#alerts .alert.warn[data-code="api_version"]').is_visible()
        first = sidebar.locator("body > *").first.get_attribute("id")
        assert first == "alerts", "alerts come first"


def test_the_sidebar_lists_edits_waiting_to_settle_and_when_each_goes(
    page: Any, shared: SharedSheet
) -> None:
    """docs/edits.md: an edit is sent once it has held settle_seconds; until then the sidebar
    says what is pending and when it goes (GET /api/status pending_edits)."""
    due = "2026-12-04T10:42:07+00:00"
    shared.fake.state.pending_edits = [
        {
            "row": 7,
            "lead_key": "k7",
            "previous": "New",
            "status": "Customer",
            "at": "2026-12-04T10:40:07+00:00",
            "due_at": due,
            "state": "settling",
        },
        {
            "row": 9,
            "lead_key": "k9",
            "previous": None,
            "status": "MQL",
            "at": "2026-12-04T10:38:00+00:00",
            "due_at": "2026-12-04T10:40:00+00:00",
            "state": "due",
        },
    ]
    switch_user(page, PLAYGROUND_USER)
    sidebar = page.frame_locator("#sidebar")
    items = sidebar.locator("#pending li")
    items.first.wait_for(timeout=WAIT_MS)
    title = sidebar.locator("#pending h2").text_content() or ""
    assert "Edits waiting to be sent (2)" in title, title
    first, second = items.nth(0).inner_text(), items.nth(1).inner_text()
    assert "New → Customer, sent at " in first and "if it still holds then" in first, first
    assert "(new) → MQL, going now" in second, second


def test_every_editor_sees_who_owns_the_triggers_and_a_colleague_takes_over_explicitly(
    page: Any, shared: SharedSheet
) -> None:
    sidebar = page.frame_locator("#sidebar")
    owner = sidebar.locator("#owner")
    assert owner.inner_text().startswith("Triggers: installed by you (you@example.com)")

    switch_user(page, PLAYGROUND_COLLEAGUE)
    sidebar = page.frame_locator("#sidebar")
    owner = sidebar.locator("#owner")
    assert owner.get_attribute("data-owner") == PLAYGROUND_USER
    assert "installed by you@example.com" in owner.inner_text()
    sidebar.locator("#settings-panel summary").click()
    assert sidebar.locator("#take-over").is_visible()
    assert sidebar.locator("#install-triggers").is_hidden()

    # The colleague's edit runs the owner's trigger, as the owner: one call.
    since = fetch_count(page)
    type_status(page, a_row_not_at(page, "MQL"), "MQL")
    calls = backend_calls(page, since)
    assert [(c["path"], c["user"]) for c in calls] == [("/api/edits", PLAYGROUND_USER)]

    sidebar.locator("#take-over").click()
    sidebar.locator("#triggers-result", has_text="taken over from you@example.com").wait_for(
        timeout=WAIT_MS
    )
    assert owner.inner_text().startswith("Triggers: installed by you (colleague@example.com)")

    since = fetch_count(page)
    type_status(page, a_row_not_at(page, "SQL", after=3), "SQL")
    calls = backend_calls(page, since)
    assert [(c["path"], c["user"]) for c in calls] == [("/api/edits", PLAYGROUND_COLLEAGUE)], (
        "the old owner's trigger stood down"
    )
    assert shared.fake.state.requests[-1]["caller"]["email"] == PLAYGROUND_COLLEAGUE

    switch_user(page, PLAYGROUND_USER)
    owner = page.frame_locator("#sidebar").locator("#owner")
    assert "installed by colleague@example.com" in owner.inner_text()


# -- Google sign-in, verified by the real backend ---------------------------------------------


@pytest.fixture
def signed_in(
    browser: Any, tmp_path_factory: pytest.TempPathFactory, httpserver: HTTPServer, google_key: Any
) -> Iterator[tuple[Any, dict[str, str]]]:
    """The playground over the real backend accepting only Google ID tokens (allowed_emails:
    you@ only), with tokens minted locally and their certificate served on loopback."""
    httpserver.expect_request("/certs").respond_with_data(
        json.dumps({KID: certificate_pem(google_key)}), content_type="application/json"
    )
    data_dir = tmp_path_factory.mktemp("signin")
    run_demo(data_dir)
    tokens = {
        email: google_id_token(google_key, KID, email=email)
        for email in (PLAYGROUND_USER, PLAYGROUND_COLLEAGUE)
    }
    with demo_environment(data_dir) as env:
        backend = google_sign_in_backend(env, httpserver.url_for("/certs"), (PLAYGROUND_USER,))
        app = create_playground(
            env, None, backend=backend, identity_tokens=dict[str, str | None](tokens)
        )
        with BackgroundServer(app) as running:
            page, errors = open_playground(browser, running.url)
            yield page, tokens
            page.close()
            assert errors == [], "the page threw"


def test_google_sign_in_is_the_default_and_the_backend_verifies_its_tokens(
    signed_in: tuple[Any, dict[str, str]],
) -> None:
    page, tokens = signed_in
    sidebar = page.frame_locator("#sidebar")
    assert sidebar.locator("#auth-mode").input_value() == "id_token"
    assert sidebar.locator("#error").is_hidden()
    calls = page.evaluate(
        """() => window.playground.state().fetches
            .filter(f => f.url.startsWith('https://sheet-bridge.example.com/'))
            .map(f => [f.status, f.params.headers.Authorization])"""
    )
    assert calls and all(c == [200, f"Bearer {tokens[PLAYGROUND_USER]}"] for c in calls), calls

    switch_user(page, PLAYGROUND_COLLEAGUE)
    error = page.frame_locator("#sidebar").locator("#error")
    error.wait_for(timeout=WAIT_MS)
    text = error.inner_text()
    assert "refused this account" in text and "colleague@example.com to allowed_emails" in text


def test_google_script_run_refuses_what_apps_script_refuses(page: Any) -> None:
    frame = page.frame_locator("#sidebar").locator("body")
    said = frame.evaluate(
        """() => new Promise(done => google.script.run
            .withSuccessHandler(() => done('passed'))
            .withFailureHandler(err => done(err.message))
            .jumpToRow(new Date()))"""
    )
    assert "cannot pass a Date" in said
    private = frame.evaluate(
        """() => new Promise(done => google.script.run
            .withFailureHandler(err => done(err.message)).callBackend_('get', '/api/status'))"""
    )
    assert private == "Script function not found: callBackend_"
