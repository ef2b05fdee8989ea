"""What an operator reads (issue 22, item 5): an unexpected error logs its traceback with the
request id the caller was given, secrets and e-mail addresses removed, in text or in Cloud
Logging's JSON; /api/status alerts on lost passes. The backend is the real app on the emulator
and the fake Meta; the failure is an injected edge (a ledger that raises)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from sheet_bridge import logs
from sheet_bridge.sync.ledger import PASS_LOST
from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_SECRET, WORLD_SHEET, WORLD_TOKEN, World, lead_row

MakeWorld = Callable[..., World]
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}


class ExplodingLedger:
    """The bridge's ledger, except that counting by state raises an error whose words carry
    the Meta token and a lead's e-mail (as a driver's error might echo what it was given)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def counts_by_state(self, where: Any) -> dict[str, int]:
        raise RuntimeError(f"driver said: token={WORLD_TOKEN} row asha@example.com")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
def captured() -> Iterator[Callable[[str], io.StringIO]]:
    """captured(format): sheet_bridge's log lines in that format, as gunicorn's workers get."""
    handlers: list[logging.Handler] = []

    def capture(fmt: str) -> io.StringIO:
        stream = io.StringIO()
        handlers.append(logs.install({"SHEET_BRIDGE_LOG_FORMAT": fmt}, stream=stream))
        return stream

    yield capture
    ours = logging.getLogger("sheet_bridge")
    for handler in handlers:
        ours.removeHandler(handler)
    ours.propagate = True


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_500_logs_its_traceback_under_the_request_id_without_secrets(
    make_world: MakeWorld,
    world_now: datetime,
    captured: Callable[[str], io.StringIO],
    fmt: str,
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    bridge = world.bridge()
    bridge.ledger = ExplodingLedger(bridge.ledger)  # type: ignore[assignment]
    app = create_app(
        bridges=[bridge],
        environ={
            "SHEET_BRIDGE_SECRET": WORLD_SECRET,
            "META_CAPI_TOKEN": WORLD_TOKEN,
            "GOOGLE_CLOUD_PROJECT": "acme-crm",
        },
    )
    stream = captured(fmt)

    response = app.test_client().get(
        f"/api/status?spreadsheet_id={WORLD_SHEET}",
        headers={**AUTH, "X-Cloud-Trace-Context": "0123456789abcdef0123456789abcdef/7;o=1"},
    )

    assert response.status_code == 500
    request_id = response.headers["X-Request-Id"]
    assert response.get_json()["error"]["request_id"] == request_id
    written = stream.getvalue()
    assert WORLD_TOKEN not in written and "asha@example.com" not in written
    assert WORLD_SECRET not in written
    if fmt == "json":
        entries = [json.loads(line) for line in written.splitlines() if line.strip()]
        errors = [e for e in entries if e["severity"] == "ERROR"]
        assert len(errors) == 1, entries
        entry = errors[0]
        assert entry["request_id"] == request_id
        assert entry["logging.googleapis.com/trace"] == (
            "projects/acme-crm/traces/0123456789abcdef0123456789abcdef"
        )
        message = entry["message"]
    else:
        message = written
        assert f"[request {request_id}]" in message
    assert "unexpected RuntimeError answering GET /api/status" in message
    assert "Traceback (most recent call last)" in message
    assert "counts_by_state" in message
    assert "token=[redacted]" in message


def test_status_alerts_on_a_pass_lost_in_the_last_day(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    bridge = world.bridge()
    where = bridge.sheet_tab
    old = bridge.ledger.start_pass(where, "hourly", False, world_now - timedelta(days=3))
    bridge.ledger.finish_pass(old, {}, world_now - timedelta(days=3), error=PASS_LOST)
    client = create_app(bridges=[bridge], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})

    def codes() -> list[str]:
        status = client.test_client().get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH)
        return [a["code"] for a in status.get_json()["alerts"]]

    before = codes()  # one lost three days ago: old news
    lost = bridge.ledger.start_pass(where, "sync", False, world_now - timedelta(hours=2))
    bridge.ledger.finish_pass(lost, {}, world_now - timedelta(hours=2), error=PASS_LOST)
    after = codes()

    assert "passes_lost" not in before
    assert "passes_lost" in after
