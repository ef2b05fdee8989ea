"""Locks that know their holder (issue 22, item 3): a live pass in another PID namespace on
the same hostname (a host cron beside a container) is never taken for dead; a pass whose lock
was taken over stops before its next request to Meta, says what it did send, and its `lost`
mark is never overwritten with "done"."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from sheet_bridge.config import is_ledger_url
from sheet_bridge.sync.ledger import SyncBusy
from sheet_bridge.sync.run import PassLockLost, SyncResult
from tests.conftest import World, lead_row
from tests.faults.test_lost_ledger import assert_nothing_twice
from tests.ledger_backends import run_sql

MakeWorld = Callable[..., World]
ROOT = Path(__file__).resolve().parents[2]


def take_the_lock_away(location: str) -> None:
    """What lets another pass take a live pass's lock: on SQLite its lease lapsing (the ledger
    stalled for a minute, or a holder judged dead); on PostgreSQL its lock connection ending
    (the server dropped it)."""
    if is_ledger_url(location):
        run_sql(
            location,
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
            "AND a.application_name = current_setting('application_name') "
            "AND l.pid <> pg_backend_pid()",
        )
    else:
        run_sql(location, "UPDATE locks SET expires = 0")


# Taken over after the first request's answer (the pass stops before its next request), or
# after its last one (it stops before the write-back: the sheet is the new holder's).
@pytest.mark.parametrize("after", [2, 12])
def test_a_pass_whose_lock_was_taken_over_stops_says_what_it_sent_and_stays_lost(
    make_world: MakeWorld, world_now: datetime, after: int
) -> None:
    # 12 leads, one event each, two per request, one request at a time.
    world = make_world(
        [lead_row(i, "New", now=world_now) for i in range(12)],
        meta={"batch_size": 2, "max_in_flight": 1},
    )
    location = world.config.ledger_location({})
    first = world.bridge()
    taken: list[SyncResult] = []

    def take_over(phase: str, done: int, total: int) -> None:
        # Another pass takes the tab and does the rest.
        if phase == "send" and done == after and not taken:
            take_the_lock_away(location)
            taken.append(world.bridge().sync(trigger="hourly"))

    with pytest.raises(PassLockLost) as caught:
        first.sync(progress=take_over)

    other = taken[0]
    words = str(caught.value)
    assert "lost its lock" in words and f"It sent {after} event(s) to Meta" in words, words
    assert other.events_sent == 12 - after
    assert len(world.meta_events()) == 12
    assert_nothing_twice(world)
    record = first.ledger.get_pass(1)
    assert record is not None
    assert record.state(world_now) == "lost"  # the other pass's mark, kept
    assert record.summary is not None and record.summary["events_sent"] == after
    assert f"It sent {after} event(s)" in record.summary["error"]
    # The sheet shows every row sent: the pass that holds the lock wrote it.
    assert all(str(s).startswith("Sent: Lead") for s in world.column("CAPI Status"))


HOLDER = textwrap.dedent(
    """
    import sys, time
    from sheet_bridge.sync.ledger import SheetTab, open_ledger
    ledger = open_ledger(sys.argv[1])
    with ledger.lock(SheetTab(sys.argv[2], sys.argv[3]), wait=5):
        print("held", flush=True)
        time.sleep(60)
    """
)


@pytest.mark.sqlite_only  # PostgreSQL's advisory locks know their holder already
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1)"
)
def test_a_live_pass_in_another_pid_namespace_on_this_hostname_keeps_its_lock(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(i, "New", now=world_now) for i in range(3)])
    location = world.config.ledger_location({})
    world.bridge().sync(dry_run=True)  # the ledger exists
    # Inside its namespace the holder's PID is one no process has here: seen from here, "that
    # process is gone" (a host cron and a container share the hostname, not their PIDs).
    pid = next(p for p in range(300, 30000) if not os.path.exists(f"/proc/{p}"))
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    spawn = (
        f"i=2; while [ $i -lt {pid} ]; do /bin/true; i=$((i+1)); done; "
        f'{sys.executable} {script} "$@"'
    )
    holder = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            spawn,
            "sh",
            location,
            world.config.sheets.spreadsheet_id,
            world.config.sheets.tab,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        (row,) = run_sql(location, "SELECT pid, holder FROM locks")
        assert not os.path.exists(f"/proc/{row[0]}"), row

        with pytest.raises(SyncBusy):
            world.bridge(lock_wait=1.0).sync()

        assert world.meta_events() == []
        assert run_sql(location, "SELECT holder FROM locks") == [(row[1],)]
    finally:
        holder.kill()
        holder.wait(timeout=10)


@pytest.mark.sqlite_only  # PostgreSQL's advisory locks know their holder already
def test_a_lock_whose_pid_now_belongs_to_another_process_is_taken_over_at_once(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    location = world.config.ledger_location({})
    world.bridge().sync(dry_run=True)  # the ledger exists
    # A holder that died, its PID since given to a live process (here: this one) that started
    # at another time: same hostname, same PID namespace, a lease still running.
    namespace = os.readlink("/proc/self/ns/pid")
    run_sql(
        location,
        "INSERT INTO locks VALUES (?, ?, ?, ?, ?, ?)",
        (
            world.config.sheets.spreadsheet_id,
            world.config.sheets.tab,
            f"0123456789abcdef {namespace} 1",
            socket.gethostname(),
            os.getpid(),
            time.time() + 60,
        ),
    )

    result = world.bridge(lock_wait=1.0).sync()

    assert result.events_sent == 1
