"""Stopping the backend as platforms stop it (issue 22, item 2): Cloud Run sends SIGTERM and
SIGKILL 10 s later (https://cloud.google.com/run/docs/container-contract#lifecycle); a master
killed alone leaves its workers. Each test cuts a pass mid-send, lets another pass finish the
job, and finds every event at the fake Meta exactly once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sheet_bridge.config import load_config
from sheet_bridge.sync.ledger import open_ledger
from sheet_bridge.sync.run import Bridge
from sheet_bridge.web.passes import parse_pass_ref
from tests.conftest import (
    WORLD_SHEET,
    WORLD_TOKEN,
)
from tests.deploy.instances import (
    AUTH,
    EVENTS,
    LEADS,
    Instance,
    MetaGate,
    documented_env,
    mql_stand_ins,
    start_instance,
)

LATENCY = 1.5  # Meta's time to answer each request: 8 requests one at a time, ~12 s


@pytest.fixture
def slow_meta(tmp_path: Path, world_now: datetime) -> Iterator[tuple[Path, MetaGate, str]]:
    """MQL leads, a fake Meta answering in LATENCY seconds, two events per request and one
    request at a time; yields (config file, gate, Meta's URL)."""
    with mql_stand_ins(
        tmp_path, world_now, LEADS, latency=LATENCY, batch_size=2, max_in_flight=1
    ) as stand_ins:
        yield stand_ins


def env_for(config: Path, ledger: str, **more: str) -> dict[str, str]:
    return documented_env(config.parent, ledger, **{"WEB_CONCURRENCY": "1", **more})


def meta_events(meta_url: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = httpx.get(meta_url + "/_fake/events", timeout=10).json()[
        "events"
    ]
    return events


def await_events(meta_url: str, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(meta_events(meta_url)) < at_least:
        assert time.monotonic() < deadline, "the pass never reached Meta"
        time.sleep(0.05)


def finish_elsewhere(config: Path, ledger: str, gate: MetaGate) -> int:
    """Another instance's pass (here in-process) after the stop: it sends the rest."""
    gate.latency = 0.0
    bridge = Bridge.from_config(
        load_config(config),
        environ={"META_CAPI_TOKEN": WORLD_TOKEN, "SHEET_BRIDGE_LEDGER": ledger},
    )
    try:
        return bridge.sync().events_sent
    finally:
        bridge.ledger.close()


def assert_each_event_once(meta_url: str) -> None:
    events = meta_events(meta_url)
    by_event = Counter((e["user_data"]["em"], e["event_name"]) for e in events)
    by_id = Counter(e["event_id"] for e in events)
    assert len(by_event) == EVENTS, f"lost: {EVENTS - len(by_event)} event(s)"
    assert set(by_event.values()) == {1} and set(by_id.values()) == {1}, (
        f"twice: {[k for k, n in by_event.items() if n > 1]}"
    )


def gone(pid: int) -> bool:
    """Exited (a zombie, waiting for init to collect it, is gone too)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] == b"Z"


def test_sigterm_then_sigkill_10_s_later_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, ledger_location: str, slow_meta: tuple[Path, MetaGate, str]
) -> None:
    config, gate, meta_url = slow_meta
    instance = start_instance(
        env_for(config, ledger_location, K_SERVICE="sheet-bridge"), tmp_path / "gunicorn.log"
    )
    try:
        answer = httpx.post(
            instance.url + "/api/sync",
            json={"spreadsheet_id": WORLD_SHEET, "wait": 0},
            headers=AUTH,
            timeout=40,
        )
        assert answer.status_code == 202, answer.text
        await_events(meta_url, 2)  # mid-send: the first request answered
        # Cloud Run stops the instance: SIGTERM, then SIGKILL to everything 10 s later.
        instance.process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        try:
            status: int | None = instance.process.wait(timeout=10)
        except Exception:
            status = None
        took = time.monotonic() - stopped_at
        with contextlib.suppress(ProcessLookupError):  # whatever is left, as Cloud Run does
            os.killpg(instance.process.pid, signal.SIGKILL)
        sent_before = len(meta_events(meta_url))
    finally:
        instance.close()

    log = instance.log()
    print(f"stopped {took:.1f} s after SIGTERM, exit {status}")  # the README's figure
    assert status == 0 and took < 9.5, f"exit {status} after {took:.1f} s:\n{log[-3000:]}"
    ledger = open_ledger(ledger_location)
    try:
        pass_id = parse_pass_ref(answer.json()["pass_id"])
        assert pass_id is not None
        record = ledger.get_pass(pass_id)
    finally:
        ledger.close()
    # The cut pass checkpointed: ended in words, saying what it sent, nothing left "sending".
    assert record is not None and record.finished_at is not None, record
    assert record.summary is not None and "server is stopping" in record.summary["error"]
    assert 2 <= record.summary["events_sent"] == sent_before < EVENTS, record.summary
    assert finish_elsewhere(config, ledger_location, gate) == EVENTS - sent_before
    assert_each_event_once(meta_url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def can_bind(port: int) -> bool:
    """What a new gunicorn does with the port (SO_REUSEADDR, then listen)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
        return True


def test_workers_whose_master_dies_free_the_port_at_once_and_exit_in_time(
    tmp_path: Path, ledger_location: str, slow_meta: tuple[Path, MetaGate, str]
) -> None:
    config, gate, meta_url = slow_meta
    port = free_port()
    instance: Instance = start_instance(
        env_for(config, ledger_location, PORT=str(port), SHEET_BRIDGE_STOP_SECONDS="8"),
        tmp_path / "gunicorn.log",
    )
    waiting: list[httpx.Response | Exception] = []

    def request_waiting_for_its_pass() -> None:  # the add-on's sync, waiting up to 25 s
        try:
            waiting.append(
                httpx.post(
                    instance.url + "/api/sync",
                    json={"spreadsheet_id": WORLD_SHEET, "wait": 25},
                    headers=AUTH,
                    timeout=40,
                )
            )
        except httpx.HTTPError as exc:
            waiting.append(exc)

    caller = threading.Thread(target=request_waiting_for_its_pass)
    try:
        caller.start()
        await_events(meta_url, 2)
        os.kill(instance.process.pid, signal.SIGKILL)  # the master alone
        instance.process.wait(timeout=10)
        killed_at = time.monotonic()
        while not can_bind(port):
            assert time.monotonic() - killed_at < 3, (
                f"port {port} still held {time.monotonic() - killed_at:.1f} s after the "
                f"master died:\n{instance.log()[-3000:]}"
            )
            time.sleep(0.1)
        port_free = time.monotonic() - killed_at
        while not all(gone(pid) for pid in instance.workers):
            assert time.monotonic() - killed_at < 5, "orphan workers still running"
            time.sleep(0.1)
        gone_after = time.monotonic() - killed_at
        print(f"master killed: port free in {port_free:.1f} s, workers gone in {gone_after:.1f} s")
        caller.join(40)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(instance.process.pid, signal.SIGKILL)

    sent_before = len(meta_events(meta_url))
    assert finish_elsewhere(config, ledger_location, gate) == EVENTS - sent_before
    assert_each_event_once(meta_url)
