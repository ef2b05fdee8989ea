"""The hourly pass without anyone's Apps Script trigger (issue 22, item 6; docs/operating.md
"Schedules"): Cloud Scheduler calls POST /api/sync with an OIDC ID token of its service account
(https://cloud.google.com/scheduler/docs/http-target-auth), which the backend verifies as it
verifies the add-on's; a systemd timer runs `sheet-bridge sync --trigger hourly`. Either pass is
an "hourly" pass, watched for repeated failures. Tokens are signed locally by the test key;
pytest-httpserver stands in for Google's certificate endpoint."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

from sheet_bridge.config import is_ledger_url
from sheet_bridge.sync.ledger import open_ledger
from tests.conftest import WORLD_SHEET, World, lead_row
from tests.security.test_auth_fails_closed import (
    bearer,
    id_token,
    id_token_client,
    id_token_world,
    serve_certificates,
)
from tests.test_cli import WITH_TOKEN, run, world_toml

MakeWorld = Callable[..., World]
SCHEDULER = "bridge-scheduler@acme-crm.iam.gserviceaccount.com"


def test_cloud_scheduler_runs_the_hourly_pass_with_its_service_accounts_oidc_token(
    make_world: MakeWorld, world_now: datetime, httpserver: HTTPServer, google_key: Any
) -> None:
    serve_certificates(httpserver, google_key)
    world = id_token_world(
        make_world,
        world_now,
        httpserver,
        allowed_domain="example.com",
        allowed_emails=[SCHEDULER],
    )
    client = id_token_client(world)
    # What Cloud Scheduler sends: a Google-signed ID token for the audience the job names
    # (--oidc-token-audience), for its service account: verified e-mail, no Workspace `hd`.
    token = id_token(google_key, email=SCHEDULER, omit=("hd",))
    stranger = id_token(google_key, email="other-sa@acme-crm.iam.gserviceaccount.com", omit=("hd",))
    body = {"spreadsheet_id": WORLD_SHEET, "trigger": "hourly", "wait": 20}

    refused = client.post("/api/sync", json=body, headers=bearer(stranger))
    answer = client.post("/api/sync", json=body, headers=bearer(token))

    assert refused.status_code == 403
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["events_sent"] == 1
    bridge = world.bridge()
    hourly = bridge.ledger.recent_passes(bridge.sheet_tab, 5, trigger="hourly")
    assert len(hourly) == 1


def test_a_timer_runs_the_cli_pass_as_an_hourly_pass(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now)])
    config = world_toml(world, tmp_path / "bridge.toml")

    result = run(["sync", "--config", str(config), "--trigger", "hourly", "--json"], WITH_TOKEN)

    assert result.exit_code == 0, result.output
    location = world.config.ledger_location({})
    ledger = open_ledger(location if is_ledger_url(location) else str(tmp_path / "cli-ledger.db"))
    try:
        hourly = ledger.recent_passes(world.bridge().sheet_tab, 5, trigger="hourly")
    finally:
        ledger.close()
    assert [p.trigger for p in hourly] == ["hourly"]
    assert len(world.meta_events()) == 2
