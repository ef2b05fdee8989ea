"""Operating the image (issue 22, items 4 and 5): the Dockerfile's health check answers while
slow clients hold every request thread, and /metrics and the JSON logs are what Prometheus and
Cloud Logging read. The backend is the Dockerfile's CMD (a real gunicorn), the clients real
sockets on loopback (docs/operating.md)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import WORLD_SHEET
from tests.deploy.instances import ROOT, MetaGate, start_instance
from tests.deploy.test_image_command import AUTH, EVENTS, documented_env, follow, stand_ins

__all__ = ["stand_ins"]  # the fixture, shared with the image command's tests

SLOW_CLIENTS = 40  # as in the report; far more than 1 worker × 8 threads


def dockerfile_healthcheck() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (exec form), run with this interpreter."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK "))
    command = next(line.strip() for line in lines[start:] if line.strip().startswith("CMD "))
    argv: list[str] = json.loads(command.removeprefix("CMD "))
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


class Slowloris:
    """`count` connections that each send a request line and then one header byte a second,
    never finishing their headers: each holds one of gunicorn's request threads."""

    def __init__(self, url: str, count: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.socks = [socket.create_connection((host, int(port)), timeout=5) for _ in range(count)]
        for s in self.socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        while not self.stop.wait(1.0):
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.sendall(b"X")

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> str:
    return str(tmp_path / "ledger.db")


def test_the_images_health_check_answers_while_slow_clients_hold_every_request_thread(
    tmp_path: Path, sqlite_ledger: str, stand_ins: tuple[Path, MetaGate, str]
) -> None:
    folder, _, _ = stand_ins
    env = documented_env(folder, sqlite_ledger, WEB_CONCURRENCY="1")
    instance = start_instance(env, tmp_path / "gunicorn.log")
    slow: Slowloris | None = None
    try:
        slow = Slowloris(instance.url, SLOW_CLIENTS)
        time.sleep(1.0)  # every connection accepted and handed to a thread
        with pytest.raises(httpx.TimeoutException):  # the service port is starved: the setup
            httpx.get(instance.url + "/healthz", timeout=2)
        health_port = instance.health_url.rsplit(":", 1)[-1] if instance.health_url else "8081"
        run_env = {**os.environ, "PORT": instance.url.rsplit(":", 1)[-1]}
        run_env["SHEET_BRIDGE_HEALTH_PORT"] = health_port

        started = time.monotonic()
        check = subprocess.run(
            dockerfile_healthcheck(), env=run_env, capture_output=True, timeout=30
        )
        took = time.monotonic() - started

        assert check.returncode == 0, check.stderr.decode(errors="replace")[-2000:]
        assert took < 3, f"the health check took {took:.1f} s"
        answer = httpx.get(instance.health_url + "/healthz", timeout=2).json()
        assert answer == {"ok": True, "workers": 1}
    finally:
        if slow is not None:
            slow.close()
        instance.close()


@pytest.fixture
def metrics_env(
    stand_ins: tuple[Path, MetaGate, str], sqlite_ledger: str
) -> Iterator[dict[str, str]]:
    folder, _, _ = stand_ins
    yield documented_env(
        folder, sqlite_ledger, K_SERVICE="sheet-bridge", GOOGLE_CLOUD_PROJECT="acme-crm"
    )


def test_metrics_add_up_every_worker_and_cloud_run_logs_are_json_with_trace_and_request_id(
    tmp_path: Path, metrics_env: dict[str, str]
) -> None:
    instance = start_instance(metrics_env, tmp_path / "gunicorn.log")
    trace_id = "105445aa7843bc8bf206b12000100000"
    try:
        answer = httpx.post(
            instance.url + "/api/sync",
            json={"spreadsheet_id": WORLD_SHEET, "wait": 20},
            headers={
                **AUTH,
                "X-Cloud-Trace-Context": f"{trace_id}/1;o=1",
                "X-Request-Id": "req-sync-1",
            },
            timeout=30,
        )
        assert follow(instance.url, answer)["events_sent"] == EVENTS
        assert answer.headers["X-Request-Id"] == "req-sync-1"
        # Scraped more than once: each scrape may land on another worker.
        scrapes = [httpx.get(instance.url + "/metrics", timeout=10) for _ in range(4)]
    finally:
        instance.terminate()

    for scrape in scrapes:
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(scrape.text)
            for s in family.samples
        }
        assert samples[("sheet_bridge_passes_total", (("outcome", "done"),))] == 1
        assert samples[("sheet_bridge_events_total", (("result", "sent"),))] == EVENTS
        assert samples[("sheet_bridge_meta_request_seconds_count", ())] >= EVENTS / 4
        assert samples[("sheet_bridge_lost_passes", (("bridge", "leads"),))] == 0
        assert samples[("sheet_bridge_edits_pending", (("bridge", "leads"),))] == 0
        assert samples[("sheet_bridge_ledger_up", (("bridge", "leads"),))] == 1

    lines = [line for line in instance.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line: one JSON object
    assert all(e["severity"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") for e in entries)
    passes = [e for e in entries if e["message"].startswith("pass sync on")]
    assert len(passes) == 1, lines
    assert passes[0]["severity"] == "INFO"
    assert passes[0]["request_id"] == "req-sync-1"
    assert passes[0]["logging.googleapis.com/trace"] == f"projects/acme-crm/traces/{trace_id}"
    assert passes[0]["logging.googleapis.com/spanId"] == "1"
