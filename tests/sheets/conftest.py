"""Fixtures for the Sheets side: a running emulator on loopback and clients pointed at it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sheet_bridge.config import SheetsConfig
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from sheet_bridge.sheets.client import SheetsClient, clear_metadata_cache

SHEET_ID = "sheet-1"


def leads_data(rows: list[list[Any]] | None = None, tab: str = "Leads") -> dict[str, Any]:
    """One spreadsheet in Asia/Kolkata with one tab of leads."""
    if rows is None:
        rows = [
            ["Lead Status", "Email", "Leadgen ID"],
            ["MQL", "a@example.com", "1234567890123456"],
            ["New", "b@example.com"],
        ]
    return {
        "spreadsheets": {
            SHEET_ID: {"title": "CRM leads", "timeZone": "Asia/Kolkata", "sheets": {tab: rows}}
        }
    }


@dataclass
class Emulator:
    """A running emulator: its URL, its data file, and the test hooks."""

    url: str
    path: Path
    sheet_id: str = SHEET_ID
    sleeps: list[float] = field(default_factory=list)

    def config(self, **overrides: Any) -> SheetsConfig:
        values: dict[str, Any] = {
            "spreadsheet_id": SHEET_ID,
            "tab": "Leads",
            "api_endpoint": self.url,
            "credentials": "anonymous",
        }
        return SheetsConfig(**(values | overrides))

    def client(self, **overrides: Any) -> SheetsClient:
        # No real waiting: record the backoff instead.
        return SheetsClient(self.config(**overrides), sleep=self.sleeps.append)

    def stats(self) -> dict[str, int]:
        answer: dict[str, int] = httpx.get(f"{self.url}/_emulator/stats").json()
        return answer

    def reset_stats(self) -> None:
        httpx.post(f"{self.url}/_emulator/stats/reset").raise_for_status()

    def fault(self, status: int, count: int = 1, **only: Any) -> None:
        """The next `count` calls answer `status`; `only`: the calls it is for (`method`,
        `params`)."""
        httpx.post(
            f"{self.url}/_emulator/faults", json={"status": status, "count": count, **only}
        ).raise_for_status()

    def data(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.url}/_emulator/data").json()
        return answer

    def tab(self, name: str = "Leads") -> list[list[Any]]:
        rows: list[list[Any]] = self.data()["spreadsheets"][SHEET_ID]["sheets"][name]
        return rows

    def file_data(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return loaded


@pytest.fixture(autouse=True)
def _fresh_metadata_cache() -> Iterator[None]:
    # Each test's emulator may reuse a port and spreadsheet id with a different time zone.
    clear_metadata_cache()
    yield
    clear_metadata_cache()


@pytest.fixture
def start_emulator(tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Start an emulator on 127.0.0.1 with `data` (default: leads_data()) saved to a file."""
    servers: list[BackgroundServer] = []

    def start(data: dict[str, Any] | None = None, *, from_file: bool = True) -> Emulator:
        path = tmp_path / f"sheets-{len(servers)}.json"
        if from_file:
            path.write_text(json.dumps(leads_data() if data is None else data), encoding="utf-8")
            app = create_emulator(path)
        else:
            app = create_emulator(path, data=data)
        server = BackgroundServer(app).start()
        servers.append(server)
        return Emulator(server.url, path)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def sheet_data() -> Callable[..., dict[str, Any]]:
    """leads_data(rows, tab): the data file for one spreadsheet with one tab of these rows."""
    return leads_data


@pytest.fixture
def emulator(start_emulator: Callable[..., Emulator]) -> Emulator:
    return start_emulator()
