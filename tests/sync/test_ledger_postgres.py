"""The PostgreSQL ledger's own machinery: a pass's advisory lock is released by the server when
the holder dies (no lease to wait out), a pass that lost its lock connection stops, processes
starting together create the schema once, and every error says what failed in words without
the URL's password (issue 14). The contract both backends share is in test_ledger.py."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from sheet_bridge.sync.ledger import (
    SCHEMA_VERSION,
    LedgerError,
    LockLost,
    SheetTab,
    SyncBusy,
    open_ledger,
)
from sheet_bridge.sync.ledger.postgres import PostgresLedger, mask_url
from tests.ledger_backends import POSTGRES_URL, run_sql, table_names
from tests.sync.test_ledger import NOW, planned

pytestmark = pytest.mark.postgres_only

WHERE = SheetTab("sheet-1", "Leads")
HOLD_LOCK = """
import sys, time
from sheet_bridge.sync.ledger import SheetTab, open_ledger
ledger = open_ledger(sys.argv[1])
with ledger.lock(SheetTab("sheet-1", "Leads"), wait=5):
    print("held", flush=True)
    time.sleep(120)
"""
OPEN_AT = """
import sys, time
from sheet_bridge.sync.ledger import open_ledger
start = float(sys.argv[2])
while time.time() < start:
    pass
open_ledger(sys.argv[1]).close()
print("opened", flush=True)
"""


@pytest.fixture
def ledger(ledger_location: str) -> Iterator[PostgresLedger]:
    opened = open_ledger(ledger_location)
    assert isinstance(opened, PostgresLedger)
    yield opened
    opened.close()


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- the lock ------------------------------------------------------------------------------


def test_the_lock_of_a_holder_killed_with_sigkill_is_free_at_once(
    ledger: PostgresLedger, ledger_location: str
) -> None:
    holder = python(HOLD_LOCK, ledger_location)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held", holder.stderr
        with pytest.raises(SyncBusy), ledger.lock(WHERE, wait=0.2):
            pass  # pragma: no cover - never entered

        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        started = time.monotonic()
        with ledger.lock(WHERE, wait=5) as lease:
            waited = time.monotonic() - started
            lease.check()
    finally:
        holder.kill()
        holder.wait(10)
    # No lease to run out (SQLite waits LOCK_LEASE for a holder on another host): the server
    # freed the lock when the dead process's connection closed.
    assert waited < 1.0


def test_a_waiting_pass_gets_the_lock_the_moment_its_holder_ends(ledger: PostgresLedger) -> None:
    other = open_ledger(ledger.url)
    try:
        with other.lock(WHERE, wait=0):
            started = time.monotonic()
            with pytest.raises(SyncBusy), ledger.lock(WHERE, wait=0.3):
                pass  # pragma: no cover - never entered
            assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        with ledger.lock(WHERE, wait=5):
            assert time.monotonic() - started < 0.5
    finally:
        other.close()


def test_a_pass_whose_lock_connection_died_stops_before_sending_more(
    ledger: PostgresLedger, ledger_location: str
) -> None:
    with ledger.lock(WHERE, wait=0) as lease:
        lease.check()  # ours
        # The server ends the lock's connection (a failover, an idle-connection killer): the
        # lock is gone, and another pass takes the tab.
        run_sql(
            ledger_location,
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
            "WHERE l.locktype = 'advisory' AND l.pid <> pg_backend_pid() AND l.granted "
            "AND l.pid IN (SELECT pid FROM pg_stat_activity WHERE application_name = "
            "current_setting('application_name'))",
        )
        with open_ledger(ledger_location).lock(WHERE, wait=5):
            with pytest.raises(LockLost, match="run the sync again"):
                lease.check()
            with pytest.raises(LockLost):
                lease.check()  # and stays lost


def test_two_ledgers_in_one_database_do_not_share_locks(
    ledger: PostgresLedger, ledger_location: str
) -> None:
    other_schema = "sbtest_other_" + ledger.schema[-8:]
    run_sql(ledger_location, f"CREATE SCHEMA {other_schema}")
    try:
        other = open_ledger(ledger_location.replace(ledger.schema, other_schema))
        with ledger.lock(WHERE, wait=0), other.lock(WHERE, wait=0):
            pass
        other.close()
    finally:
        run_sql(ledger_location, f"DROP SCHEMA {other_schema} CASCADE")


# -- the schema ----------------------------------------------------------------------------


def test_processes_starting_together_create_the_schema_once(ledger_location: str) -> None:
    start = time.time() + 1.5  # all four are running by then, and open at the same instant
    procs = [python(OPEN_AT, ledger_location, str(start)) for _ in range(4)]
    outputs = [p.communicate(timeout=60) for p in procs]

    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outputs]
    assert run_sql(ledger_location, "SELECT key, value FROM ledger_info") == [
        ("schema_version", str(SCHEMA_VERSION))
    ]
    assert {"events", "transitions", "pending_edits", "passes"} <= table_names(ledger_location)


def test_a_ledger_of_an_unknown_schema_version_is_refused_and_left_alone(
    ledger: PostgresLedger, ledger_location: str
) -> None:
    run_sql(ledger_location, "UPDATE ledger_info SET value = '2' WHERE key = 'schema_version'")
    before = table_names(ledger_location)

    with pytest.raises(LedgerError, match="no known schema version"):
        open_ledger(ledger_location)

    assert table_names(ledger_location) == before
    assert run_sql(ledger_location, "SELECT value FROM ledger_info") == [("2",)]


def test_a_search_path_naming_no_schema_is_refused_in_words(ledger_location: str) -> None:
    missing = ledger_location.replace("search_path%3D", "search_path%3Dsbtest_absent_")

    with pytest.raises(LedgerError, match="names no schema that exists"):
        open_ledger(missing)


# -- bulk writes -----------------------------------------------------------------------------


def test_a_bulk_write_that_fails_leaves_nothing_and_the_next_one_works(
    ledger: PostgresLedger,
) -> None:
    # The first bulk write on a connection makes its staging table; a failure rolls that back
    # too, and the next write on the same connection must make it again.
    broken = dataclasses.replace(planned("Lkey1"), lead_key=None)  # type: ignore[arg-type]

    with pytest.raises(LedgerError, match="lead_key"):
        ledger.mark_sending(WHERE, [planned("Lkey0"), broken], {}, {}, NOW)

    assert ledger.counts_by_state(WHERE) == {}
    ledger.mark_sending(WHERE, [planned("Lkey2")], {}, {}, NOW)
    assert ledger.counts_by_state(WHERE) == {"sending": 1}


def test_events_pages_keep_room_for_the_answer_of_each_row(
    ledger_location: str,
) -> None:
    """events is filled half (added within schema 5): recording Meta's answer then updates a
    row in its own page and no index. A ledger at 5 made before it gains it on opening, its
    events kept."""
    fillfactor = "SELECT reloptions FROM pg_class WHERE oid = 'events'::regclass"
    first = open_ledger(ledger_location)
    first.mark_sending(WHERE, [planned("kA")], {}, {}, NOW)
    first.close()
    assert run_sql(ledger_location, fillfactor) == [(["fillfactor=50"],)]
    run_sql(ledger_location, "ALTER TABLE events RESET (fillfactor)")

    again = open_ledger(ledger_location)
    try:
        assert run_sql(ledger_location, fillfactor) == [(["fillfactor=50"],)]
        assert again.counts_by_state(WHERE) == {"sending": 1}
    finally:
        again.close()


# -- errors in words, never the password ---------------------------------------------------


def test_an_unreachable_server_is_named_without_its_password() -> None:
    url = "postgresql://bridge:s3cret-pw@127.0.0.1:1/ledger"

    with pytest.raises(LedgerError) as caught:
        PostgresLedger(url, connect_timeout=2)

    message = str(caught.value)
    assert "Cannot reach the PostgreSQL ledger" in message
    assert "bridge:***@127.0.0.1:1/ledger" in message
    assert "s3cret" not in message


@pytest.mark.usefixtures("ledger_backend")  # a server to refuse it
def test_a_login_postgres_refuses_says_to_check_the_user_and_password() -> None:
    base = POSTGRES_URL.split("://", 1)[1].split("@", 1)[-1]
    url = f"postgresql://no_such_role_sb:s3cret-pw@{base}"

    with pytest.raises(LedgerError) as caught:
        PostgresLedger(url)

    message = str(caught.value)
    assert "refused the login" in message and "user and password" in message
    assert "s3cret" not in message


@pytest.mark.usefixtures("ledger_backend")  # a server to refuse it
def test_a_missing_database_says_to_create_it() -> None:
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/sb_no_such_database"

    with pytest.raises(LedgerError, match=r"does not exist.*createdb"):
        PostgresLedger(url)


def test_a_malformed_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(LedgerError) as caught:
        open_ledger("postgresql://bridge:pass word@127.0.0.1:5432/ledger")

    assert "not a valid PostgreSQL URL" in str(caught.value)
    assert "pass word" not in str(caught.value) and "word" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u:p%40w/x@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgres://h/db?user=u&password=pw&x=1", "postgres://h/db?user=u&password=***&x=1"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_mask_url_hides_the_password_wherever_the_url_puts_it(url: str, shown: str) -> None:
    assert mask_url(url) == shown


@pytest.mark.usefixtures("ledger_backend")  # a server to refuse it
def test_a_server_with_no_connection_left_is_not_called_a_refused_login() -> None:
    # A role allowed no connection: PostgreSQL answers 53300 too_many_connections ("too many
    # connections for role …"), as a full server does with "sorry, too many clients already".
    role = f"sb_full_{os.getpid()}"
    run_sql(POSTGRES_URL, f"DROP ROLE IF EXISTS {role}")
    run_sql(POSTGRES_URL, f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    base = POSTGRES_URL.split("://", 1)[1].split("@", 1)[-1]
    try:
        with pytest.raises(LedgerError) as caught:
            PostgresLedger(f"postgresql://{role}:s3cret-pw@{base}")
    finally:
        run_sql(POSTGRES_URL, f"DROP ROLE IF EXISTS {role}")

    message = str(caught.value)
    assert "too many connections" in message and "no connection left" in message, message
    assert "refused the login" not in message and "user and password" not in message
    assert "max_connections" in message and "s3cret" not in message
