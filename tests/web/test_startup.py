"""Start-up problems are one line that says what to set, never a traceback, for `sheet-bridge
serve` and for gunicorn's `create_app()`; a ledger that breaks while serving is a specific
JSON error that names no file (issue 12, finding 9)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from sheet_bridge.config import is_ledger_url
from sheet_bridge.web.app import create_app
from tests.conftest import WORLD_SECRET, WORLD_SHEET, WORLD_TOKEN, World, lead_row
from tests.ledger_backends import lose

MakeWorld = Callable[..., World]
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}
NOT_A_LEDGER = b"this file was a ledger until someone copied over it\n" * 200


def bridge_toml(
    folder: Path, *, credentials: str = "anonymous", server: str = "", ledger: str = "ledger.db"
) -> Path:
    """A bridge config whose sheet is a (never contacted) local emulator."""
    path = folder / "bridge.toml"
    path.write_text(
        f"""
[sheets]
spreadsheet_id = "{WORLD_SHEET}"
api_endpoint = "http://127.0.0.1:9"
credentials = "{credentials}"

[meta]
pixel_id = "998877665544332"

[server]
ledger = "{ledger}"
{server or 'shared_secret_env = "SHEET_BRIDGE_SECRET"'}

[columns]
status = "Lead Status"

[[stages]]
status = "New"
event = "Lead"
"""
    )
    return path


def start(args: list[str], config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a start-up in a child process the way a person or gunicorn would; it must stop."""
    environ = {
        **os.environ,
        "META_CAPI_TOKEN": WORLD_TOKEN,
        "SHEET_BRIDGE_SECRET": WORLD_SECRET,
        "SHEET_BRIDGE_CONFIG": str(config),
        **env,
    }
    environ.pop("SHEET_BRIDGE_LEDGER", None)
    return subprocess.run(
        [sys.executable, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


SERVE = ["-c", "from sheet_bridge.cli import main; main()", "serve", "--port", "0"]
GUNICORN_FACTORY = ["-c", "from sheet_bridge.web.app import create_app; create_app()"]


@pytest.mark.parametrize(
    ("problem", "words"),
    [
        ("user_token", "use credentials = 'service_account'"),
        ("corrupt_ledger", "is not a readable sheet-bridge ledger"),
        ("short_secret", "secrets.token_urlsafe(32)"),
        ("id_token_for_anyone", "any Google account"),
    ],
)
@pytest.mark.parametrize("how", ["serve", "gunicorn-factory"])
def test_a_backend_that_cannot_start_says_why_in_one_line_without_a_traceback(
    tmp_path: Path, problem: str, words: str, how: str
) -> None:
    env: dict[str, str] = {}
    config = bridge_toml(
        tmp_path,
        credentials="user_token" if problem == "user_token" else "anonymous",
        server='id_token_audience = "1234-x.apps.googleusercontent.com"'
        if problem == "id_token_for_anyone"
        else "",
    )
    if problem == "corrupt_ledger":
        (tmp_path / "ledger.db").write_bytes(NOT_A_LEDGER)
    if problem == "short_secret":
        env["SHEET_BRIDGE_SECRET"] = "hunter2\n"
    args = [*SERVE, "--config", str(config)] if how == "serve" else GUNICORN_FACTORY

    stopped = start(args, config, **env)

    said = stopped.stderr.strip()
    assert stopped.returncode == (2 if how == "serve" else 4), stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert len(said.splitlines()) == 1, said
    assert words in said
    if problem == "corrupt_ledger":
        assert (tmp_path / "ledger.db").read_bytes() == NOT_A_LEDGER  # nothing was reset


@pytest.mark.parametrize("how", ["serve", "gunicorn-factory"])
def test_an_unreachable_postgresql_ledger_is_one_line_without_its_password(
    tmp_path: Path, how: str
) -> None:
    config = bridge_toml(tmp_path, ledger="postgresql://bridge:s3cret-pw@127.0.0.1:1/ledger")
    args = [*SERVE, "--config", str(config)] if how == "serve" else GUNICORN_FACTORY

    stopped = start(args, config)

    said = stopped.stderr.strip()
    assert stopped.returncode == (2 if how == "serve" else 4), stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert len(said.splitlines()) == 1, said
    assert "Cannot reach the PostgreSQL ledger at postgresql://bridge:***@127.0.0.1:1" in said
    assert "s3cret" not in stopped.stderr + stopped.stdout


def test_gunicorn_stops_with_the_one_line_instead_of_respawning_workers(tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    config = bridge_toml(tmp_path)
    (tmp_path / "ledger.db").write_bytes(NOT_A_LEDGER)

    stopped = start(
        ["-m", "gunicorn", "--bind", "127.0.0.1:0", "sheet_bridge.web.app:create_app()"], config
    )

    assert stopped.returncode == 4, stopped.stderr
    assert "Traceback" not in stopped.stderr
    ours = [line for line in stopped.stderr.splitlines() if line.startswith("sheet-bridge:")]
    assert len(ours) == 1 and "is not a readable sheet-bridge ledger" in ours[0]
    # gunicorn.conf.py checks in the master: no worker is started (with four failing at once,
    # gunicorn halts from inside its own shutdown with a traceback and status 1).
    assert "Booting worker" not in stopped.stderr


def test_a_ledger_that_breaks_while_serving_is_ledger_unavailable_and_names_no_file(
    make_world: MakeWorld, world_now: datetime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="sheet_bridge")
    world = make_world([lead_row(1, "New", now=world_now)])
    bridge = world.bridge()
    client = create_app(
        bridges=[bridge], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET}
    ).test_client()
    location = world.config.ledger_location({})
    if is_ledger_url(location):
        lose(location, "emptied")  # every table dropped under the running server
        name = location.split("search_path%3D")[1].split("&")[0]  # the test's schema
    else:
        ledger = Path(location)
        bridge.ledger.close()
        for leftover in ledger.parent.glob(ledger.name + "-*"):
            leftover.unlink()
        ledger.write_bytes(NOT_A_LEDGER)
        name = ledger.name

    answers = [
        client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=AUTH),
        client.post("/api/sync", json={"spreadsheet_id": WORLD_SHEET}, headers=AUTH),
        client.get(f"/api/report?spreadsheet_id={WORLD_SHEET}", headers=AUTH),
    ]

    for answer in answers:
        assert answer.status_code == 500, answer.get_data(as_text=True)
        error = answer.get_json()["error"]
        assert error["code"] == "ledger_unavailable"
        assert "nothing was reset" in error["message"]
        assert str(world.tmp) not in answer.get_data(as_text=True)
        assert name not in answer.get_data(as_text=True)
    assert location in caplog.text  # the operator's log says which file or database
    assert world.meta_stats()["requests"] == 0


def test_bridges_of_a_folder_on_one_ledger_share_one_open_ledger(tmp_path: Path) -> None:
    folder = tmp_path / "bridges"
    folder.mkdir()
    for name, tab in (("brand-a", "Brand A"), ("brand-b", "Brand B"), ("brand-c", "Brand C")):
        text = bridge_toml(tmp_path).read_text()
        text = text.replace("[sheets]\n", f'[sheets]\ntab = "{tab}"\n')
        if name == "brand-c":
            text = text.replace('ledger = "ledger.db"', 'ledger = "other.db"')
        (folder / f"{name}.toml").write_text(text)
    env = {"META_CAPI_TOKEN": WORLD_TOKEN, "SHEET_BRIDGE_SECRET": WORLD_SECRET}

    app = create_app(folder, environ=env)

    bridges = {b.sheet_tab.tab: b for b in app.extensions["sheet_bridge"].all()}
    assert bridges["Brand A"].ledger is bridges["Brand B"].ledger
    assert bridges["Brand C"].ledger is not bridges["Brand A"].ledger
