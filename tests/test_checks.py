"""`sheet-bridge check` and /api/status say what to fix: after a pass Meta halted (issue 16,
finding 7), for an action_source that is not a CRM's, and for Limited Data Use."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sheet_bridge.checks import run_checks
from sheet_bridge.config import ConfigError, parse_config
from sheet_bridge.web.app import create_app
from tests.conftest import (
    WORLD_SECRET,
    WORLD_SHEET,
    WORLD_TEST_CODE,
    WORLD_TOKEN,
    World,
    lead_row,
    world_config,
)
from tests.sync.test_edits import MINIMAL
from tests.test_cli import WITH_TOKEN, run, world_toml

MakeWorld = Callable[..., World]
TOKEN_ENV = {"META_CAPI_TOKEN": WORLD_TOKEN}
FIX_WORDS = (
    "invalid test_event_code 'TEST123'; clear [meta] test_event_code or copy the current code "
    "from Events Manager → Test events"
)


def test_check_after_a_halted_sync_says_what_to_fix_and_clears_once_a_sync_went(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(i, "New", now=world_now) for i in range(3)])
    broken = world_toml(world, tmp_path / "bridge.toml", test_event_code="TEST123")

    synced = run(["sync", "--config", str(broken)], WITH_TOKEN)
    checked = run(["check", "--config", str(broken), "--offline"], WITH_TOKEN)

    assert synced.exit_code == 0, synced.output  # the pass ran; Meta refused it
    assert "0 event(s) sent in 1 request(s)" in synced.stdout
    assert FIX_WORDS in synced.stderr
    assert checked.exit_code == 1
    line = next(x for x in checked.stdout.splitlines() if "the last sync" in x)
    assert line.startswith("ERROR the last sync (")
    assert FIX_WORDS in line
    assert "once fixed, the next sync sends every held event once" in line

    fixed = world_toml(world, tmp_path / "bridge.toml", test_event_code=WORLD_TEST_CODE)
    assert run(["sync", "--config", str(fixed)], WITH_TOKEN).exit_code == 0
    rechecked = run(["check", "--config", str(fixed), "--offline"], WITH_TOKEN)

    assert len(world.meta_events()) == 3
    assert "the last sync" not in rechecked.stdout
    assert rechecked.exit_code == 0, rechecked.stdout


def test_api_status_puts_the_halt_and_its_fix_first(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)], meta={"test_event_code": "TEST123"})
    world.bridge().sync()
    app = create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET})

    status = (
        app.test_client()
        .get(
            f"/api/status?spreadsheet_id={WORLD_SHEET}",
            headers={"Authorization": f"Bearer {WORLD_SECRET}"},
        )
        .get_json()
    )

    assert FIX_WORDS in status["warnings"][0]
    assert status["warnings"][0].startswith("the last sync (")
    assert FIX_WORDS in status["last_sync"]["error"]
    assert status["counts"] == {"failed": 1}


def test_check_tells_a_failed_pass_from_a_halted_one() -> None:
    from sheet_bridge.checks import CheckReport, check_last_pass

    report = CheckReport()
    check_last_pass(report, {"finished_at": "2026-12-03T08:00:00+00:00", "error": "SyncError"})
    check_last_pass(report, {"finished_at": "2026-12-03T08:00:00+00:00", "error": None})
    assert [(f.level, "run `sheet-bridge sync` to see why" in f.text) for f in report.findings] == [
        ("warn", True)
    ]


# ---- action_source ------------------------------------------------------------------------


def _config(tmp_path: Path, **meta: Any) -> Any:
    return world_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9", meta=meta)


@pytest.mark.parametrize("source", ["physical_store", "website", "phone_call"])
def test_check_refuses_an_action_source_that_is_not_a_crms_without_a_reason(
    source: str, tmp_path: Path
) -> None:
    report = run_checks(_config(tmp_path, action_source=source), connect=False, environ=TOKEN_ENV)

    errors = [f.text for f in report.findings if f.level == "error"]
    assert not report.ok
    assert len(errors) == 1 and errors[0].startswith(f"action_source is {source!r}")
    assert 'Set action_source = "system_generated"' in errors[0]
    assert "[meta] action_source_reason" in errors[0]
    if source == "physical_store":
        assert "for sales made in a store" in errors[0] and "not for CRM stages" in errors[0]


def test_check_takes_another_action_source_when_the_config_says_why(tmp_path: Path) -> None:
    why = "this tab holds in-store sales, one row per receipt"
    config = _config(tmp_path, action_source="physical_store", action_source_reason=why)

    report = run_checks(config, connect=False, environ=TOKEN_ENV)

    assert report.ok
    assert f"action_source is 'physical_store' by choice: {why}" in report.text()


def test_check_passes_system_generated_without_a_word(tmp_path: Path) -> None:
    report = run_checks(_config(tmp_path), connect=False, environ=TOKEN_ENV)
    assert report.ok
    assert "action_source" not in report.text()


def test_check_warns_of_a_test_event_code_not_shaped_like_metas(tmp_path: Path) -> None:
    report = run_checks(
        _config(tmp_path, test_event_code="my-test"), connect=False, environ=TOKEN_ENV
    )
    assert "'my-test' is not shaped like Meta's codes (TEST12345)" in report.text()
    shaped = run_checks(
        _config(tmp_path, test_event_code="TEST12345"), connect=False, environ=TOKEN_ENV
    )
    assert "not shaped like" not in shaped.text()


# ---- Limited Data Use --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("meta", "says"),
    [
        ({"data_processing_options": "LDU"}, "must be a list"),
        ({"data_processing_options": ["GDPR"]}, "data_processing_options.0"),
        ({"data_processing_options_country": 1}, "only mean something with"),
        ({"data_processing_options": ["LDU"], "data_processing_options_country": 2}, "1 (United"),
        ({"data_processing_options": ["LDU"], "data_processing_options_state": 1000}, "= 1 with"),
        (
            {
                "data_processing_options": ["LDU"],
                "data_processing_options_country": 1,
                "data_processing_options_state": 42,
            },
            "1000 (California)",
        ),
    ],
)
def test_limited_data_use_that_meta_would_not_take_is_a_config_error(
    meta: dict[str, Any], says: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, **meta)
    assert says in str(info.value)
    assert "meta" in str(info.value)


def test_an_api_version_that_is_not_one_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"should look like 'v25\.0'"):
        _config(tmp_path, api_version="25")


def test_check_says_limited_data_use_follows_each_leads_place(tmp_path: Path) -> None:
    config = _config(tmp_path, data_processing_options=["LDU"])
    text = run_checks(config, connect=False, environ=TOKEN_ENV).text()
    assert "Limited Data Use on every event, with each lead's own place" in text
    assert "country 1, state 1000" in text and "0/0 (Meta geolocates)" in text


def test_check_warns_that_a_configured_ldu_place_is_not_every_leads(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        data_processing_options=["LDU"],
        data_processing_options_country=1,
        data_processing_options_state=1000,
    )
    text = run_checks(config, connect=False, environ=TOKEN_ENV).text()
    assert "are not sent for every lead" in text and "assume_country = true" in text


def test_check_explains_where_a_leads_country_comes_from(tmp_path: Path) -> None:
    text = run_checks(_config(tmp_path), connect=False, environ=TOKEN_ENV).text()
    assert "a lead's country is its row's Country cell, else its phone's country code" in text
    assumed = _config(tmp_path, assume_country=True)
    text = run_checks(assumed, connect=False, environ=TOKEN_ENV).text()
    assert "assume_country = true" in text and "every lead is there" in text


def test_the_example_config_parses_with_limited_data_use_uncommented() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "bridge.toml"
    text = example.read_text()
    for key in ("data_processing_options", "_country", "_state"):
        assert f"# data_processing_options{'' if key.startswith('data') else key} = " in text
    text = text.replace("# data_processing_options", "data_processing_options")
    import tomllib

    config = parse_config(tomllib.loads(text))
    assert config.meta.data_processing_options == ("LDU",)
    assert config.meta.data_processing_options_country == 1
    assert config.meta.data_processing_options_state == 1000


@pytest.mark.parametrize(
    ("version", "level", "words"),
    [
        ("v19.0", "error", "expired on 2026-05-21"),
        ("v12.0", "error", "expired"),
        ("v25.0", None, None),
        ("v26.0", None, None),
    ],
)
def test_check_names_an_expired_graph_api_version_with_the_one_to_use(
    version: str, level: str | None, words: str | None
) -> None:
    from datetime import UTC, datetime

    from sheet_bridge.meta.versions import version_problem

    problem = version_problem(version, datetime(2026, 12, 3, tzinfo=UTC))

    if level is None:
        assert problem is None
    else:
        assert problem is not None and problem[0] == level and words in problem[1]
        assert 'api_version = "v26.0"' in problem[1]


def test_a_version_expiring_within_90_days_is_a_warning_with_its_date() -> None:
    from datetime import UTC, datetime

    from sheet_bridge.meta.versions import version_problem

    problem = version_problem("v21.0", datetime(2026, 12, 3, tzinfo=UTC))

    assert problem == (
        "warning",
        'Graph API v21.0 expires on 2027-01-21 (49 days); set [meta] api_version = "v26.0" '
        "before then",
    )


@pytest.mark.parametrize(
    ("sync", "level", "words"),
    [
        ({}, "info", "an edited status is sent once it has held 120 s"),
        ({"settle_seconds": 0}, "warn", "settle_seconds = 0: an edit is sent at once"),
        ({"sweep_seconds": 0}, "warn", "no serving process sends edits that are due"),
    ],
)
def test_check_says_how_edits_settle_and_whether_they_are_swept(
    sync: dict[str, float], level: str, words: str
) -> None:
    """docs/edits.md: `check` names the [sync] settings that make edits permanent at once or
    leave due edits waiting for a pass."""
    config = parse_config({**MINIMAL, "sync": sync})
    report = run_checks(config, connect=False, environ={})
    assert any(f.level == level and words in f.text for f in report.findings), report.findings
