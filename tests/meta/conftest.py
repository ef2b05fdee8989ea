"""Fixtures for the Meta client and the fake Meta: a fake clock, events, a running fake."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from flask import Flask

from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.meta.client import CapiClient
from sheet_bridge.meta.identity import sha256_hex
from sheet_bridge.meta.payload import build_event

# Distinctive, so a leak anywhere is found by a plain substring search.
TOKEN = "EAAGtokenSecret-9f8e7d6c5b4a-do-not-leak"
PIXEL = "1234567890"
VERSION = "v25.0"
DAY = 86400


@dataclass
class FakeClock:
    """A monotonic clock that only moves when the client sleeps: no test waits for backoff."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def events_path() -> str:
    """The Graph path the client POSTs to, for scripted answers."""
    return f"/{VERSION}/{PIXEL}/events"


def make_event(i: int, *, age: float = 3600.0, **overrides: Any) -> dict[str, Any]:
    """A valid Conversion Leads event, `age` seconds old; `overrides` replace top-level keys."""
    event = build_event(
        event_name="Lead",
        event_time=int(time.time() - age),
        event_id=f"ev-{i}",
        action_source="system_generated",
        user_data={
            "em": sha256_hex(f"lead{i}@example.com"),
            "country": sha256_hex("us"),
            "lead_id": 10**16 + i,
        },
        lead_status="New",
        lead_event_source="Google Sheets",
        value=100.0,
        currency="USD",
    )
    event.update(overrides)
    return event


@pytest.fixture(name="make_event")
def make_event_fixture() -> Callable[..., dict[str, Any]]:
    return make_event


@dataclass
class RunningFake:
    """The fake Meta on loopback, with its test hooks as methods."""

    app: Flask
    url: str

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = httpx.get(f"{self.url}/_fake/stats").json()
        return result

    def events(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(f"{self.url}/_fake/events").json()["events"]
        return result

    def fault(self, mode: str, count: int = 1, delay: float | None = None) -> None:
        spec: dict[str, Any] = {"mode": mode, "count": count}
        if delay is not None:
            spec["delay"] = delay
        httpx.post(f"{self.url}/_fake/faults", json=spec).raise_for_status()

    def post(self, body: dict[str, Any], pixel: str = PIXEL) -> httpx.Response:
        return httpx.post(f"{self.url}/{VERSION}/{pixel}/events", json=body, timeout=10)


@pytest.fixture
def fake_meta() -> Iterator[RunningFake]:
    app = create_fake_meta(access_token=TOKEN)
    with BackgroundServer(app) as server:
        yield RunningFake(app, server.url)


ClientFactory = Callable[..., CapiClient]


@pytest.fixture
def make_client(fake_clock: FakeClock) -> Iterator[ClientFactory]:
    """Clients with the fake clock, a no-op sleep that records pauses, and a fixed jitter."""
    made: list[CapiClient] = []

    def factory(url: str, **kw: Any) -> CapiClient:
        options: dict[str, Any] = {
            "sleep": fake_clock.sleep,
            "clock": fake_clock.clock,
            "jitter": lambda: 1.0,
            "timeout": 5.0,
        }
        options.update(kw)
        client = CapiClient(url, VERSION, PIXEL, TOKEN, **options)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()
