"""The two ledger backends for the tests: where PostgreSQL is, an isolated schema per test, and
what a test does to a ledger behind the library's back (raw SQL, losing it), on either backend.

The PostgreSQL half uses SHEET_BRIDGE_TEST_POSTGRES (default: the developer machine's and CI's
server, trust auth). Each test gets a schema of its own (a search_path in the URL), dropped at
its end with any connection the test left open.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sheet_bridge.config import is_ledger_url

BACKENDS = ("sqlite", "postgres")
POSTGRES_URL = os.environ.get(
    "SHEET_BRIDGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
# CI sets this: there, a PostgreSQL that cannot be reached is a failure, not a skipped half.
REQUIRE_POSTGRES = os.environ.get("SHEET_BRIDGE_REQUIRE_POSTGRES", "") not in ("", "0")
SCHEMA_PREFIX = "sbtest_"


@functools.cache
def postgres_unavailable() -> str | None:
    """Why the PostgreSQL half cannot run here (None: it can)."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[test]')"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{_masked(POSTGRES_URL)} is unreachable ({first})"
    return None


def _masked(url: str) -> str:
    from sheet_bridge.sync.ledger.postgres import mask_url

    return mask_url(url)


def schema_url(schema: str) -> str:
    """POSTGRES_URL confined to `schema` (and named after it, to find its connections)."""
    joiner = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{joiner}options=-csearch_path%3D{schema}&application_name={schema}"


def _admin() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_URL, autocommit=True)


def new_schema() -> str:
    """A schema named after this process, so a later run can tell it was left behind."""
    schema = f"{SCHEMA_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema


def drop_orphan_schemas() -> list[str]:
    """Drop the test schemas of runs that were killed before their teardown (their process is
    gone); those of runs still going (another worktree, CI) are left alone."""
    dropped = []
    with _admin() as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (SCHEMA_PREFIX + "%",)
            )
        ]
    for name in names:
        pid = name[len(SCHEMA_PREFIX) :].split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            drop_schema(name)
            dropped.append(name)
    return dropped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_schema(schema: str) -> None:
    """The schema and every connection still using it (a test that left a ledger open)."""
    with _admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (schema,),
        )
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def run_sql(location: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Raw SQL on a ledger, as an operator or an older version would (`?` placeholders)."""
    if is_ledger_url(location):
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []
    db = sqlite3.connect(location, isolation_level=None)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def table_names(location: str) -> set[str]:
    if is_ledger_url(location):
        query = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    else:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {r[0] for r in run_sql(location, query)}


def lose(location: str, how: str) -> None:
    """The ledger lost: `: > ledger.db` ("emptied") or its file gone ("missing"); on
    PostgreSQL both are a database that lost every table (a new instance, a restore of
    nothing)."""
    if is_ledger_url(location):
        for table in table_names(location):
            run_sql(location, f"DROP TABLE {table} CASCADE")
        return
    path = Path(location)
    for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
        extra.unlink(missing_ok=True)
    if how == "emptied":
        path.write_bytes(b"")
    else:
        path.unlink()


def stored_text(location: str) -> bytes:
    """Everything the ledger stores, as bytes to search (a file's bytes, or every row)."""
    if is_ledger_url(location):
        out = []
        for table in sorted(table_names(location)):
            out += [str(r[0]) for r in run_sql(location, f"SELECT t::text FROM {table} t")]
        return "\n".join(out).encode()
    path = Path(location)
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


def snapshot(location: str, into: Path) -> Callable[[], None]:
    """A copy of the ledger as an operator's backup takes it (SQLite's online backup; on
    PostgreSQL a copy of every table, as pg_dump would restore it). Returns "put it back":
    the ledger then holds exactly what it held here, and nothing it learned since."""
    if is_ledger_url(location):
        tables = sorted(table_names(location))
        for table in tables:
            run_sql(location, f"CREATE TABLE backup_{table} AS TABLE {table}")

        def restore_tables() -> None:
            for table in tables:
                run_sql(location, f"TRUNCATE {table} CASCADE")
            for table in tables:
                run_sql(location, f"INSERT INTO {table} SELECT * FROM backup_{table}")

        return restore_tables
    source = sqlite3.connect(location)
    copy = sqlite3.connect(into)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()

    def restore_file() -> None:
        path = Path(location)
        for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            extra.unlink(missing_ok=True)
        os.replace(into, path)

    return restore_file
