"""The `sheet-bridge` command as a user runs it: check, sync (against the emulator and the fake
Meta on loopback) and demo; exit codes, words and --json (README "Commands" table)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sheet_bridge.cli import main
from sheet_bridge.config import is_ledger_url
from tests.conftest import (
    WORLD_PIXEL,
    WORLD_SHEET,
    WORLD_STAGES,
    WORLD_TOKEN,
    World,
    lead_row,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bridge.toml"
MakeWorld = Callable[..., World]
NO_TOKEN: dict[str, str | None] = {"META_CAPI_TOKEN": None, "SHEET_BRIDGE_LEDGER": None}
WITH_TOKEN: dict[str, str | None] = {"META_CAPI_TOKEN": WORLD_TOKEN, "SHEET_BRIDGE_LEDGER": None}


def run(args: list[str], env: dict[str, str | None]) -> Result:
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | list):
        return json.dumps(value)  # a JSON string or list of strings is valid TOML
    return str(value)


def world_toml(world: World, path: Path, **meta: Any) -> Path:
    """A bridge config file for make_world's emulator and fake Meta: its ledger is a file of
    its own beside it, or on PostgreSQL the world's (each test has a database of its own)."""
    columns = world.config.columns
    ledger = world.config.ledger_location({})
    lines = [
        "[sheets]",
        f'spreadsheet_id = "{WORLD_SHEET}"',
        'tab = "Leads"',
        f'api_endpoint = "{world.sheets_url}"',
        'credentials = "anonymous"',
        "",
        "[meta]",
        f'pixel_id = "{WORLD_PIXEL}"',
        f'graph_url = "{world.meta_url}"',
        'default_country = "IN"',
        'currency = "INR"',
        *(f"{k} = {toml_value(v)}" for k, v in meta.items()),
        "",
        "[server]",
        'shared_secret_env = "SHEET_BRIDGE_SECRET"',
        f"ledger = {json.dumps(ledger if is_ledger_url(ledger) else 'cli-ledger.db')}",
        "",
        "[columns]",
        *(f"{k} = {toml_value(v)}" for k, v in columns.items()),
    ]
    for stage in WORLD_STAGES:
        lines += ["", "[[stages]]", *(f"{k} = {toml_value(v)}" for k, v in stage.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- check ---------------------------------------------------------------------------------


def test_check_offline_passes_the_example_and_lists_qualified_lead_as_custom() -> None:
    result = run(["check", "--config", str(EXAMPLE), "--offline"], WITH_TOKEN)

    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if "→ QualifiedLead" in x)
    assert "custom" in line
    assert re.search(r"QualifiedLead is a custom event", result.stdout)
    assert "Ready:" in result.stdout
    assert WORLD_TOKEN not in result.output


def test_check_refuses_a_vendor_stage_name_and_suggests_lead(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    text = EXAMPLE.read_text()
    assert 'event = "Lead"' in text
    config.write_text(text.replace('event = "Lead"', 'event = "INITIAL_LEAD"', 1))

    result = run(["check", "--config", str(config), "--offline"], WITH_TOKEN)

    assert result.exit_code != 0
    assert "INITIAL_LEAD" in result.stdout
    assert re.search(r"did you mean '?Lead'?\?", result.stdout, re.I), result.stdout
    assert "Not ready" in result.stdout


def test_check_without_the_token_fails_naming_the_variable() -> None:
    result = run(["check", "--config", str(EXAMPLE), "--offline"], NO_TOKEN)

    assert result.exit_code != 0
    assert "META_CAPI_TOKEN" in result.output
    # The closing line fits a missing token too (not "would make Meta learn nothing").
    assert "Not ready: fix the 1 ERROR line(s) above first" in result.stdout
    assert "would make Meta learn nothing" not in result.stdout


def test_check_with_the_local_emulator_down_says_to_start_it(
    make_world: MakeWorld, tmp_path: Path
) -> None:
    world = make_world([lead_row(1, "New", now=datetime.now().astimezone())])
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = world_toml(world, tmp_path / "bridge.toml")
    config.write_text(
        config.read_text().replace(world.sheets_url, f"http://127.0.0.1:{port}"), "utf-8"
    )

    started = time.monotonic()
    result = run(["check", "--config", str(config)], WITH_TOKEN)

    assert result.exit_code == 1, result.output
    assert f"nothing answers at http://127.0.0.1:{port}" in result.stdout
    assert f"sheet-bridge emulate sheets --data FILE.json --port {port}" in result.stdout
    assert "sheet-bridge demo --serve" in result.stdout
    assert "Not ready: fix the 1 ERROR line(s) above first" in result.stdout
    assert time.monotonic() - started < 10  # no retries with backoff against a closed port


@pytest.mark.parametrize(
    ("replace", "by", "key"),
    [
        ("batch_size = 500", "batch_size = 5000", "meta.batch_size"),
        ('pixel_id = "123456789012345"', 'pixel_id = "my pixel"', "meta.pixel_id"),
        ("timeout_seconds = 20", "timeout_secs = 20", "meta.timeout_secs"),
    ],
)
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, replace: str, by: str, key: str) -> None:
    text = EXAMPLE.read_text()
    assert replace in text
    config = tmp_path / "bridge.toml"
    config.write_text(text.replace(replace, by))

    for command in (["check", "--offline"], ["sync"]):
        result = run([*command, "--config", str(config)], WITH_TOKEN)
        assert result.exit_code == 2, result.output
        assert key in result.stderr
        assert str(config) in result.stderr


def test_missing_config_file_exits_2_with_what_to_do(tmp_path: Path) -> None:
    result = run(["sync", "--config", str(tmp_path / "nope.toml")], WITH_TOKEN)

    assert result.exit_code == 2
    assert "no such config file" in result.stderr


# -- sync ----------------------------------------------------------------------------------


def test_sync_runs_one_pass_and_prints_the_table_and_summary(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(1, "MQL", now=world_now), lead_row(2, "Maybe", now=world_now)])
    config = world_toml(world, tmp_path / "bridge.toml")

    result = run(["sync", "--config", str(config)], WITH_TOKEN)

    assert result.exit_code == 0, result.output
    assert len(world.meta_events()) == 2
    assert re.search(r"Row\s+Lead\s+Status\s+Result", result.stdout)
    assert re.search(r"^\s*2 .*MQL\s+sent\s+Sent now: Lead, QualifiedLead$", result.stdout, re.M)
    assert re.search(r"^\s*3 .*Maybe\s+skipped", result.stdout, re.M)
    assert "sent 1" in result.stdout and "skipped 1" in result.stdout
    assert "2 event(s) sent in 1 request(s)" in result.stdout
    assert world.column("CAPI Status")[0] == "Sent: Lead, QualifiedLead"
    assert (tmp_path / "cli-ledger.db").exists()
    assert WORLD_TOKEN not in result.output

    # The next pass sends nothing: its table says so, while the row's cell keeps its state.
    again = run(["sync", "--config", str(config)], WITH_TOKEN)

    assert re.search(
        r"^\s*2 .*MQL\s+up to date\s+At Meta before: Lead, QualifiedLead$", again.stdout, re.M
    )
    assert "Sent now" not in again.stdout
    assert "0 event(s) sent" in again.stdout
    assert world.column("CAPI Status")[0] == "Sent: Lead, QualifiedLead"


def test_sync_json_prints_one_json_object_with_the_counts(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(1, "SQL", now=world_now), lead_row(2, "New", now=world_now)])
    config = world_toml(world, tmp_path / "bridge.toml", batch_size=2)

    first = run(["sync", "--config", str(config), "--json"], WITH_TOKEN)
    second = run(["sync", "--config", str(config), "--json"], WITH_TOKEN)

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert isinstance(one, dict)
    assert (one["sent"], one["events_sent"], one["meta_requests"]) == (2, 4, 2)
    assert {"skipped", "expired", "invalid", "failed", "already_sent", "rows"} <= set(one)
    assert (two["sent"], two["already_sent"], two["events_sent"]) == (0, 2, 0)
    assert len(world.meta_events()) == 4


def test_sync_without_the_token_exits_non_zero_naming_the_variable(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    before = world.rows()
    config = world_toml(world, tmp_path / "bridge.toml")

    result = run(["sync", "--config", str(config)], NO_TOKEN)

    assert result.exit_code != 0
    assert "META_CAPI_TOKEN" in result.stderr
    assert world.meta_stats()["requests"] == 0
    assert world.rows() == before


def test_sync_dry_run_works_without_a_token_and_changes_nothing(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(1, "SQL", now=world_now)])
    before = world.rows()
    config = world_toml(world, tmp_path / "bridge.toml")

    result = run(["sync", "--config", str(config), "--dry-run"], NO_TOKEN)

    assert result.exit_code == 0, result.output
    assert "Would send: Lead, QualifiedLead, Schedule" in result.stdout
    assert "nothing was sent to Meta or written to the sheet" in result.stdout
    assert world.meta_stats()["requests"] == 0
    assert world.rows() == before
    # A missing SQLite ledger is read as empty (as the first sync will), not created.
    if not is_ledger_url(world.config.ledger_location({})):
        assert not (tmp_path / "cli-ledger.db").exists()
    assert "nothing is sent to Meta" in run(["sync", "--help"], NO_TOKEN).stdout

    # Once a sync made the ledger, a dry run reads it: nothing is due any more.
    assert run(["sync", "--config", str(config)], WITH_TOKEN).exit_code == 0
    again = run(["sync", "--config", str(config), "--dry-run"], NO_TOKEN)
    assert again.exit_code == 0 and "Would send" not in again.stdout, again.output


def test_sync_that_cannot_read_its_columns_exits_1_with_the_headers(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)], columns={"email": "E-mail"})
    config = world_toml(world, tmp_path / "bridge.toml")

    result = run(["sync", "--config", str(config)], WITH_TOKEN)

    assert result.exit_code == 1
    assert "'E-mail' (columns.email)" in result.stderr
    assert "'Lead Status'" in result.stderr
    assert world.meta_stats()["requests"] == 0


# -- demo ----------------------------------------------------------------------------------


def test_demo_json_sends_then_a_second_run_sends_nothing_new(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"

    first = run(["demo", "--data-dir", str(data_dir), "--json"], NO_TOKEN)
    second = run(["demo", "--data-dir", str(data_dir), "--json"], NO_TOKEN)

    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert one["fresh"] is True
    assert one["summary"]["sent"] > 0
    assert one["summary"]["events_sent"] > 0
    assert two["fresh"] is False
    assert two["summary"]["events_sent"] == 0
    assert two["summary"]["sent"] == 0
    assert two["meta_events"] == one["meta_events"]
    for name in ("sheets.json", "bridge.toml", "sheet-bridge.db"):
        assert (data_dir / name).exists()


def table_lines(stdout: str) -> list[str]:
    """The rows of the CLI's table: the lines between its rule and the first blank line."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"-{20,}", line)) + 1
    end = lines.index("", start)
    return lines[start:end]


def test_demo_table_names_what_this_sync_sent_and_its_counts_add_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"

    result = run(["demo", "--data-dir", str(data_dir)], NO_TOKEN)

    assert result.exit_code == 0, result.output
    out = result.stdout
    rows = table_lines(out)
    sent_now = [
        name.strip()
        for line in rows
        if (m := re.search(r"Sent now: ([^·]+)", line))
        for name in m.group(1).split(",")
    ]
    events_sent = int(re.search(r"^Sent (\d+) events in", out, re.M).group(1))  # type: ignore[union-attr]
    # Each event this sync sent is named once, under "Sent now"; no more (the footer's count).
    assert events_sent > 0
    assert len(sent_now) == events_sent, out
    # A lead with earlier stages at Meta: this sync's event apart from those.
    assert any(re.search(r"\bsent\s+Sent now: \w+.* · At Meta before: Lead", r) for r in rows)
    # An up-to-date row sends nothing now.
    assert all("Sent now" not in r for r in rows if re.search(r"\bup to date\b", r))
    # The rows by outcome add up to the table's rows.
    counts = re.search(r"^This sync, rows: (.*)$", out, re.M).group(1)  # type: ignore[union-attr]
    assert sum(int(n) for n in re.findall(r"(\d+)", counts)) == len(rows), counts
    # What the fake Meta answered, and its fbtrace_id is what the sheet's rows keep.
    answer = re.search(r"request 1: HTTP 200, events_received (\d+), fbtrace_id (\S+)", out)
    assert answer is not None, out
    assert int(answer.group(1)) == events_sent
    sheet = (data_dir / "sheets.json").read_text()
    assert f"ok · fbtrace_id {answer.group(2)}" in sheet


def test_demo_table_off_a_terminal_keeps_every_reason_whole(tmp_path: Path) -> None:
    result = run(["demo", "--data-dir", str(tmp_path / "d")], NO_TOKEN)

    rows = table_lines(result.stdout)
    assert not any(r.endswith("…") for r in rows), "\n".join(rows)
    # The longest reasons, to their last words (a CI log or make's output is no terminal).
    assert any(len(r) > 160 and r.endswith("add it to [[stages]] in the config") for r in rows)


def test_demo_on_existing_data_names_its_own_folder_to_start_afresh(tmp_path: Path) -> None:
    data_dir = tmp_path / "serve-data"
    run(["demo", "--data-dir", str(data_dir)], NO_TOKEN)

    again = run(["demo", "--data-dir", str(data_dir)], NO_TOKEN)

    assert f"run `rm -rf {data_dir}` for a fresh start" in again.stdout
    assert "rm -rf demo-data" not in again.stdout
    # Its config's header starts the fake Meta as docs/local-stand-ins.md does.
    header = (data_dir / "bridge.toml").read_text()
    assert f"emulate meta --port 8086 --record {data_dir}/meta-events.jsonl" in header
    docs = (Path(__file__).resolve().parents[1] / "docs" / "local-stand-ins.md").read_text()
    assert "emulate meta --port 8086 --record demo-data/meta-events.jsonl" in docs


def test_the_demos_next_command_runs_as_printed(tmp_path: Path) -> None:
    """As `make demo` runs it: the venv's sheet-bridge, from the folder holding the venv,
    with no venv on PATH and no META_CAPI_TOKEN set."""
    script = Path(sys.executable).parent / "sheet-bridge"
    here = Path(sys.executable).parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ("META_CAPI_TOKEN", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    demo = subprocess.run(
        [str(script), "demo", "--data-dir", str(tmp_path / "d")],
        cwd=here,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode == 0, demo.stderr
    commands = re.findall(r"`([^`]+)`", demo.stdout.rsplit("Next:", 1)[1])
    check = next(c for c in commands if " check " in c)

    done = subprocess.run(
        check, shell=True, cwd=here, env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, check + "\n" + done.stdout + done.stderr
    assert "Ready: nothing found" in done.stdout
