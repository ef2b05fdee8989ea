"""Fixtures shared by the whole suite: a running Sheets emulator and fake Meta, and a bridge
wired to them on loopback (nothing here can reach Google or Meta)."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings

from sheet_bridge.config import BridgeConfig, is_ledger_url, parse_config
from sheet_bridge.local.demo_leads import DEMO_STAGES
from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from sheet_bridge.sheets.client import SheetsClient, clear_metadata_cache
from sheet_bridge.sync.ledger import open_ledger
from sheet_bridge.sync.run import Bridge, capi_client
from tests.ledger_backends import (
    BACKENDS,
    REQUIRE_POSTGRES,
    drop_orphan_schemas,
    drop_schema,
    new_schema,
    postgres_unavailable,
    schema_url,
    stored_text,
)

# The google_key / forger_key fixtures for ID-token tests.
pytest_plugins = ["tests.google_tokens"]


# Nothing in this process may reach Google or Meta (or any host but this one): a connection to
# an address that is not loopback fails at once, whatever the code under test was told. Meta's
# test events are real production data, and a test that passes by talking to Google proves
# nothing about our stand-ins. (Unix sockets and pipes pass; the stand-ins listen on loopback.)
def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:  # a name: every address it resolves to must be this host's
        infos = socket.getaddrinfo(host, None)
        return bool(infos) and all(_is_loopback(str(info[4][0])) for info in infos)


def _loopback_only(connect: Callable[..., Any]) -> Callable[..., Any]:
    def guarded(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise OSError(f"tests reach loopback only, not {address[0]!r}")
        return connect(sock, address)

    return guarded


socket.socket.connect = _loopback_only(socket.socket.connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _loopback_only(socket.socket.connect_ex)  # type: ignore[method-assign]

# CI runs the same examples every time (a failure there is reproducible); locally Hypothesis
# keeps exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The suites that run on both ledger backends: every test of theirs that builds a world or a
# ledger runs once on SQLite and once on PostgreSQL (test ids end in [sqlite] / [postgres]).
# Tests of one backend's own machinery are marked sqlite_only or postgres_only.
BOTH_BACKENDS = (
    "tests/sync/",
    "tests/web/",
    "tests/faults/",
    "tests/meta/test_request_errors.py",
    "tests/deploy/",
    "tests/replicas/",
)
_POSTGRES_SKIP = pytest.StashKey[str | None]()
_POSTGRES_ITEMS = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--ledger-backend",
        choices=("both", *BACKENDS),
        default="both",
        help="run the ledger-touching suites on SQLite, PostgreSQL or both (default)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: a test of the SQLite file or its lease lock (SQLite half only)"
    )
    config.addinivalue_line(
        "markers", "postgres_only: a test of the PostgreSQL backend's own machinery"
    )
    why = None if config.getoption("--ledger-backend") == "sqlite" else postgres_unavailable()
    if why and (REQUIRE_POSTGRES or config.getoption("--ledger-backend") == "postgres"):
        raise pytest.UsageError(f"PostgreSQL is required for these tests, but {why}")
    config.stash[_POSTGRES_SKIP] = why
    if config.getoption("--ledger-backend") != "sqlite" and not why:
        drop_orphan_schemas()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ledger_backend" not in metafunc.fixturenames:
        return
    path = metafunc.definition.path.relative_to(metafunc.config.rootpath).as_posix()
    if not path.startswith(BOTH_BACKENDS):
        return  # one backend: the fixture's default, SQLite
    wanted = metafunc.config.getoption("--ledger-backend")
    why = metafunc.config.stash[_POSTGRES_SKIP]
    params = [
        pytest.param(
            backend,
            id=backend,
            marks=[pytest.mark.skip(reason=f"PostgreSQL half not run: {why}")]
            if backend == "postgres" and why
            else [],
        )
        for backend in BACKENDS
        if wanted in ("both", backend)
    ]
    metafunc.parametrize("ledger_backend", params, indirect=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A sqlite_only test is not collected for PostgreSQL, nor a postgres_only one for SQLite."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("ledger_backend") if callspec else None
        other = {"sqlite": "postgres_only", "postgres": "sqlite_only"}.get(backend or "")
        (drop if other and item.get_closest_marker(other) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    config.stash[_POSTGRES_ITEMS] = sum(
        1
        for i in items
        if getattr(i, "callspec", None) and i.callspec.params.get("ledger_backend") == "postgres"
    )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    why = config.stash.get(_POSTGRES_SKIP, None)
    if why and config.stash.get(_POSTGRES_ITEMS, 0):
        terminalreporter.write_line(
            f"ledger: the PostgreSQL half ({config.stash[_POSTGRES_ITEMS]} tests) was not run, "
            f"only the SQLite half: {why}; set SHEET_BRIDGE_TEST_POSTGRES to a reachable server",
            yellow=True,
        )


@pytest.fixture
def ledger_backend(request: pytest.FixtureRequest) -> str:
    """sqlite or postgres (parametrized for BOTH_BACKENDS; SQLite elsewhere)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def ledger_location(
    ledger_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """This test's ledger: tmp_path/ledger.db, or a PostgreSQL schema of its own, dropped at
    the end with every ledger the test opened (and checked for the Meta tokens, as the files
    under tmp_path are)."""
    if ledger_backend == "sqlite":
        yield str(tmp_path / "ledger.db")
        return
    from sheet_bridge.sync.ledger.postgres import PostgresLedger
    from tests.meta.conftest import TOKEN as META_TEST_TOKEN

    opened: list[PostgresLedger] = []
    original = PostgresLedger.__init__

    def tracked(self: PostgresLedger, *args: Any, **kw: Any) -> None:
        original(self, *args, **kw)
        opened.append(self)

    monkeypatch.setattr(PostgresLedger, "__init__", tracked)
    schema = new_schema()
    url = schema_url(schema)
    try:
        yield url
    finally:
        for ledger in opened:
            ledger.close()
        try:
            stored = stored_text(url)
        finally:
            drop_schema(schema)
    for token in (WORLD_TOKEN, META_TEST_TOKEN):
        assert token.encode() not in stored, "a Meta token in the PostgreSQL ledger"


# Distinctive, so a leak anywhere is found by a plain substring search.
WORLD_TOKEN = "EAAGworldToken-5c4b3a29-never-leak"
WORLD_SECRET = "sidebar-shared-secret-1f2e3d-4c5b6a79"
WORLD_SHEET = "1WorldTestSheet000000000000000000000000000"
WORLD_PIXEL = "998877665544332"
WORLD_TZ = "Asia/Kolkata"
# The one test code the world's fake Meta knows (Events Manager → Test events shows such codes).
WORLD_TEST_CODE = "TEST41541"

WORLD_HEADER = [
    "Created At",
    "First Name",
    "Email",
    "Phone",
    "Leadgen ID",
    "Event ID",
    "Lead Status",
    "Status Changed At",
    "Deal Value",
]

WORLD_STAGES = DEMO_STAGES


def iso(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def lead_row(
    i: int,
    status: str,
    *,
    now: datetime,
    created_hours: float = 30.0,
    changed_hours: float | None = 2.0,
    email: str | None = None,
    phone: str = "",
    lead_id: str = "",
    pixel_id: str = "",
    value: object = "",
) -> list[object]:
    """A data row for WORLD_HEADER: times relative to `now`, a unique valid e-mail."""
    return [
        iso(now - timedelta(hours=created_hours)),
        f"Lead{i}",
        email if email is not None else f"lead{i}@example.com",
        phone,
        lead_id,
        pixel_id,
        status,
        iso(now - timedelta(hours=changed_hours)) if changed_hours is not None else "",
        value,
    ]


@dataclass
class World:
    """The emulator, the fake Meta and a bridge between them, for one test."""

    tmp: Path
    sheets_url: str
    meta_url: str
    data_path: Path
    config: BridgeConfig
    now: datetime

    def bridge(self, **kw: Any) -> Bridge:
        ledger = open_ledger(self.config.ledger_location({}))
        capi = capi_client(self.config.meta, WORLD_TOKEN, sleep=lambda s: None)
        kw.setdefault("clock", lambda: self.now)
        return Bridge(
            self.config,
            sheets=SheetsClient(self.config.sheets, sleep=lambda s: None),
            ledger=ledger,
            capi=capi,
            **kw,
        )

    def rows(self) -> list[list[object]]:
        """The tab as the emulator holds it now (header first)."""
        data = httpx.get(self.sheets_url + "/_emulator/data", timeout=10).json()
        rows: list[list[object]] = data["spreadsheets"][WORLD_SHEET]["sheets"]["Leads"]
        return rows

    def column(self, name: str) -> list[object]:
        """One column's cells for the data rows (by header), '' where absent."""
        rows = self.rows()
        col = rows[0].index(name)
        return [r[col] if col < len(r) else "" for r in rows[1:]]

    def meta_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = httpx.get(
            self.meta_url + "/_fake/events", timeout=10
        ).json()["events"]
        return events

    def meta_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(self.meta_url + "/_fake/stats", timeout=10).json()
        return stats

    def meta_fault(self, mode: str, count: int = 1, **kw: Any) -> None:
        httpx.post(
            self.meta_url + "/_fake/faults", json={"mode": mode, "count": count, **kw}, timeout=10
        ).raise_for_status()

    def sheets_fault(self, status: int, count: int = 1) -> None:
        httpx.post(
            self.sheets_url + "/_emulator/faults",
            json={"status": status, "count": count},
            timeout=10,
        ).raise_for_status()

    def sheets_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(self.sheets_url + "/_emulator/stats", timeout=10).json()
        return stats

    def edit_cells(self, cells: list[tuple[int, str, object]]) -> None:
        """Change cells the way a person would (row number, header, value)."""
        header = self.rows()[0]
        client = SheetsClient(self.config.sheets)
        client.write_cells([(r, header.index(h), v) for r, h, v in cells])


def world_config(tmp: Path, sheets_url: str, meta_url: str, **overrides: Any) -> BridgeConfig:
    data: dict[str, Any] = {
        "sheets": {
            "spreadsheet_id": WORLD_SHEET,
            "tab": "Leads",
            "api_endpoint": sheets_url,
            "credentials": "anonymous",
        },
        "meta": {
            "pixel_id": WORLD_PIXEL,
            "graph_url": meta_url,
            "default_country": "IN",
            "currency": "INR",
            "batch_size": 500,
        },
        "server": {"shared_secret_env": "SHEET_BRIDGE_SECRET", "ledger": "ledger.db"},
        # Edits sent at once and no sweep thread, unless a test asks (tests/web/test_settle.py).
        "sync": {"settle_seconds": 0, "sweep_seconds": 0},
        "columns": {
            "status": "Lead Status",
            "status_changed_at": "Status Changed At",
            "created_at": "Created At",
            "email": "Email",
            "phone": "Phone",
            "first_name": "First Name",
            "lead_id": "Leadgen ID",
            "pixel_event_id": "Event ID",
            "value": "Deal Value",
        },
        "stages": WORLD_STAGES,
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section] = {**data[section], **values}
        else:
            data[section] = values
    return parse_config(data, source=str(tmp / "bridge.toml"))


@pytest.fixture
def world_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def make_world(
    tmp_path: Path, world_now: datetime, ledger_location: str
) -> Iterator[Callable[..., World]]:
    """make_world(rows, locale=…, header=…, meta_now=…, **config_overrides): start the
    emulator with WORLD_HEADER (or `header`) + rows (in a spreadsheet of that locale) and the
    fake Meta (which checks Meta's rules against the real clock, or `meta_now`). The ledger is
    the test's `ledger_location` (SQLite or PostgreSQL)."""
    servers: list[BackgroundServer] = []

    def make(
        rows: list[list[object]],
        *,
        locale: str = "en_US",
        header: list[str] | None = None,
        meta_now: Callable[[], float] = time.time,
        **overrides: Any,
    ) -> World:
        clear_metadata_cache()
        data_path = tmp_path / "sheets.json"
        data = {
            "spreadsheets": {
                WORLD_SHEET: {
                    "title": "World",
                    "timeZone": WORLD_TZ,
                    "locale": locale,
                    "sheets": {"Leads": [list(header or WORLD_HEADER), *rows]},
                }
            }
        }
        data_path.write_text(json.dumps(data))
        sheets = BackgroundServer(create_emulator(data_path=data_path)).start()
        meta = BackgroundServer(
            create_fake_meta(
                access_token=WORLD_TOKEN,
                pixel_ids=[WORLD_PIXEL],
                test_event_codes=[WORLD_TEST_CODE],
                now=meta_now,
            )
        ).start()
        servers.extend([sheets, meta])
        if is_ledger_url(ledger_location):
            overrides["server"] = {"ledger": ledger_location, **overrides.get("server", {})}
        config = world_config(tmp_path, sheets.url, meta.url, **overrides)
        return World(tmp_path, sheets.url, meta.url, data_path, config, world_now)

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def meta_token_never_leaks(tmp_path: Path) -> Iterator[None]:
    """Suite-wide (issue 7): after each test, the fixtures' Meta tokens are in no log record
    (our loggers at DEBUG), no logged exception, and no file under the test's tmp_path (sheet
    JSON, ledger, -wal)."""
    import logging

    from tests.meta.conftest import TOKEN as META_TEST_TOKEN

    class KeepRecords(logging.Handler):
        def __init__(self) -> None:
            super().__init__(level=logging.DEBUG)
            self.records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    tokens = (WORLD_TOKEN, META_TEST_TOKEN)
    handler = KeepRecords()
    root, ours = logging.getLogger(), logging.getLogger("sheet_bridge")
    previous = ours.level
    root.addHandler(handler)
    ours.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        ours.setLevel(previous)
    formatter = logging.Formatter()
    for record in handler.records:
        text = record.getMessage()
        if record.exc_info:
            text += formatter.formatException(record.exc_info)
        for token in tokens:
            assert token not in text, f"Meta token in a log record from {record.name}"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for token in tokens:
                assert token.encode() not in data, f"Meta token in {path}"
