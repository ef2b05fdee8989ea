"""The CLI's progress bar (issue 22, item 8): on a terminal a pass longer than a second shows
click's progress bar on stderr; --json and a stderr that is not a terminal (cron, a systemd
timer) get none. The terminal is a real pseudo-terminal; the pass runs against the emulator
and a fake Meta whose first answer takes 1.5 s."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from tests.conftest import WORLD_TOKEN, World, lead_row
from tests.test_cli import WITH_TOKEN, run, world_toml

MakeWorld = Callable[..., World]
CLI = [sys.executable, "-c", "from sheet_bridge.cli import main; main()"]


def slow_world(make_world: MakeWorld, world_now: datetime, tmp_path: Path) -> tuple[World, Path]:
    world = make_world([lead_row(i, "MQL", now=world_now) for i in range(1, 5)])
    config = world_toml(world, tmp_path / "bridge.toml", batch_size=1, timeout_seconds=10)
    world.meta_fault("timeout", count=1, delay=1.5)  # answers, after 1.5 s
    return world, config


def on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; (exit status, stdout, the terminal)."""
    main_fd, child_fd = pty.openpty()
    env = {**os.environ, "META_CAPI_TOKEN": WORLD_TOKEN, "COLUMNS": "100"}
    env.pop("SHEET_BRIDGE_LEDGER", None)
    process = subprocess.Popen(
        CLI + args, stdout=subprocess.PIPE, stderr=child_fd, stdin=subprocess.DEVNULL, env=env
    )
    os.close(child_fd)
    seen = b""
    while True:
        ready, _, _ = select.select([main_fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    assert process.stdout is not None
    out = process.stdout.read().decode()
    code = process.wait(60)
    os.close(main_fd)
    return code, out, seen.decode(errors="replace")


def test_a_pass_longer_than_a_second_shows_a_progress_bar_on_a_terminal(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world, config = slow_world(make_world, world_now, tmp_path)

    code, out, terminal = on_a_terminal(["sync", "--config", str(config)])

    assert code == 0, out + terminal
    assert "Sending to Meta" in terminal
    assert "100%" in terminal and "8/8" in terminal  # 4 leads × (Lead, QualifiedLead)
    assert "8 event(s) sent" in out  # the summary stays on stdout, without the bar
    assert "Sending to Meta" not in out
    assert len(world.meta_events()) == 8


def test_json_on_a_terminal_and_a_pass_off_a_terminal_show_no_progress(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    _, config = slow_world(make_world, world_now, tmp_path)
    code, out, terminal = on_a_terminal(["sync", "--config", str(config), "--json"])
    assert code == 0, out + terminal
    assert terminal.strip() == ""

    world2_config = config  # the same tab, now in step: one more pass off a terminal
    piped = run(["sync", "--config", str(world2_config)], WITH_TOKEN)
    assert piped.exit_code == 0
    assert piped.stderr == ""
