"""The backend started as the Dockerfile starts it, in a child process group of its own, and
what the tests put around it: bridge configs in a folder, and a fake Meta that can hold a
request (to kill or stop an instance while a pass is mid-send) or answer slowly.

The command is read from the Dockerfile's CMD line and run from the repository root (where
gunicorn.conf.py is, as in the image's WORKDIR) with only the environment the README
documents, so the image and the tests cannot drift apart unnoticed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from tests.conftest import (
    WORLD_HEADER,
    WORLD_PIXEL,
    WORLD_SECRET,
    WORLD_SHEET,
    WORLD_STAGES,
    WORLD_TOKEN,
    WORLD_TZ,
    lead_row,
)

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
# Settable by whoever runs the image (docs/deploy.md).
DOCUMENTED_ENV = (
    "PORT",
    "SHEET_BRIDGE_HOST",
    "WEB_CONCURRENCY",
    "GUNICORN_THREADS",
    "SHEET_BRIDGE_CONFIG",
    "SHEET_BRIDGE_LEDGER",
    "META_CAPI_TOKEN",
    "SHEET_BRIDGE_SECRET",
    # docs/operating.md: the health check's own port, the log format, the project for traces
    "SHEET_BRIDGE_HEALTH_PORT",
    "SHEET_BRIDGE_HEALTH_HOST",
    "SHEET_BRIDGE_LOG_FORMAT",
    "GOOGLE_CLOUD_PROJECT",
    "SHEET_BRIDGE_STOP_SECONDS",
    # Set by Cloud Run (https://cloud.google.com/run/docs/container-contract#env-vars): the
    # stop then fits its 10 s from SIGTERM to SIGKILL.
    "K_SERVICE",
)
_LISTENING = re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")
_BOOTED = re.compile(r"Booting worker with pid: (\d+)")
_HEALTH = re.compile(r"Health check at: (http://127\.0\.0\.1:\d+)/healthz")


def dockerfile_command() -> list[str]:
    """The Dockerfile's CMD, in exec form (a JSON list)."""
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("CMD "):
            command: list[str] = json.loads(line.removeprefix("CMD "))
            return command
    raise AssertionError("the Dockerfile has no CMD line")


@dataclass
class Instance:
    """One running backend: a gunicorn master and its workers, one process group."""

    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    workers: list[int] = field(default_factory=list)
    health_url: str = ""  # the master's health listener (docs/operating.md)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the master and every worker at once: a container or VM gone."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the master, as systemd or Cloud Run stop it; its exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def wait_for_log(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Until the log shows `pattern` (a regular expression)."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log())
            if found:
                return found
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the instance's log:\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


def start_instance(env: Mapping[str, str], log_path: Path, timeout: float = 60) -> Instance:
    """Run the Dockerfile's CMD with `env` (documented names only) on a free loopback port;
    return once every worker answers /healthz-ready (all booted, the app loaded)."""
    unknown = set(env) - set(DOCUMENTED_ENV)
    assert not unknown, f"not documented for the image: {sorted(unknown)}"
    environ = {
        # The venv's gunicorn first, as the image's is on its PATH.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
        "PORT": "0",
        "SHEET_BRIDGE_HOST": "127.0.0.1",
        "SHEET_BRIDGE_HEALTH_PORT": "0",
        **env,
    }
    out = log_path.open("wb")
    process = subprocess.Popen(
        dockerfile_command(),
        cwd=ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: kill() takes the workers too
    )
    out.close()
    instance = Instance(process, log_path)
    try:
        instance.url = instance.wait_for_log(_LISTENING.pattern, timeout).group(1)
        workers = int(env.get("WEB_CONCURRENCY", "4"))
        deadline = time.monotonic() + timeout
        while len(_BOOTED.findall(instance.log())) < workers or not _healthy(instance.url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the instance did not start:\n{instance.log()[-3000:]}")
            time.sleep(0.05)
        instance.workers = [int(p) for p in _BOOTED.findall(instance.log())]
        health = _HEALTH.search(instance.log())
        instance.health_url = health.group(1) if health else ""
    except BaseException:
        instance.close()
        raise
    return instance


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).json() == {"ok": True}
    except (httpx.HTTPError, ValueError):
        return False


def write_bridge_config(
    folder: Path,
    name: str,
    *,
    spreadsheet_id: str,
    sheets_url: str,
    meta_url: str,
    pixel_id: str,
    stages: Iterable[Mapping[str, Any]],
    batch_size: int = 500,
    sync: Mapping[str, float] | None = None,
    max_in_flight: int = 4,
) -> Path:
    """One bridge's .toml in `folder` (one tab of one spreadsheet; the ledger comes from
    SHEET_BRIDGE_LEDGER, as in a container). `sync`: its [sync] table (edits' settling)."""
    lines = [
        "[sheets]",
        f'spreadsheet_id = "{spreadsheet_id}"',
        'tab = "Leads"',
        f'api_endpoint = "{sheets_url}"',
        'credentials = "anonymous"',
        "",
        "[meta]",
        f'pixel_id = "{pixel_id}"',
        f'graph_url = "{meta_url}"',
        'default_country = "IN"',
        'currency = "INR"',
        f"batch_size = {batch_size}",
        f"max_in_flight = {max_in_flight}",
        "",
        "[server]",
        'shared_secret_env = "SHEET_BRIDGE_SECRET"',
        "",
        "[sync]",
        *(f"{key} = {value}" for key, value in (sync or {}).items()),
        "",
        "[columns]",
        'status = "Lead Status"',
        'status_changed_at = "Status Changed At"',
        'created_at = "Created At"',
        'email = "Email"',
        'phone = "Phone"',
        'first_name = "First Name"',
        'lead_id = "Leadgen ID"',
        'pixel_event_id = "Event ID"',
        'value = "Deal Value"',
    ]
    for stage in stages:
        lines += ["", "[[stages]]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in stage.items()]
    path = folder / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class MetaGate:
    """WSGI middleware around the fake Meta: each events POST waits `latency` seconds (Meta's
    own time to answer), and `hold(pixel, after=n)` holds the (n+1)-th next POST for that
    pixel, its body already received, until `release` is set. `held` is set when it arrives:
    a test awaits it instead of sleeping, and kills or stops the instance sending it."""

    def __init__(self, app: Any, latency: float = 0.0) -> None:
        self.app = app
        self.latency = latency
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._pixel: str | None = None
        self._skip = 0

    def hold(self, pixel_id: str, after: int = 0) -> None:
        with self._lock:
            self._pixel, self._skip = pixel_id, after
        self.held.clear()
        self.release.clear()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") == "POST" and path.endswith("/events"):
            if self.latency:
                time.sleep(self.latency)
            if self._take(path.split("/")[2]):
                # Received whole before holding: Meta keeps these events even though the
                # sender is dead by the time they are answered.
                size = int(environ.get("CONTENT_LENGTH") or 0)
                environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(size))
                self.held.set()
                self.release.wait(120)
        return self.app(environ, start_response)

    def _take(self, pixel_id: str) -> bool:
        with self._lock:
            if self._pixel != pixel_id:
                return False
            if self._skip:
                self._skip -= 1
                return False
            self._pixel = None
            return True


# The MQL world the instance tests run: 8 leads at MQL, each owing Lead and QualifiedLead.
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}
LEADS = 8
EVENTS = 2 * LEADS


@contextlib.contextmanager
def mql_stand_ins(
    tmp_path: Path, now: datetime, leads: int, *, latency: float = 0.0, **config: Any
) -> Iterator[tuple[Path, MetaGate, str]]:
    """The emulator with a tab of `leads` MQL leads (two events each), the fake Meta behind a
    gate answering in `latency` seconds, and a config folder for them (`config`: more
    write_bridge_config arguments); yields (config file, gate, fake Meta's URL)."""
    rows = [lead_row(i, "MQL", now=now) for i in range(1, leads + 1)]
    sheet = {"title": "Deploy", "timeZone": WORLD_TZ, "sheets": {"Leads": [WORLD_HEADER, *rows]}}
    sheets = BackgroundServer(create_emulator(data={"spreadsheets": {WORLD_SHEET: sheet}}))
    gate = MetaGate(create_fake_meta(access_token=WORLD_TOKEN, pixel_ids=[WORLD_PIXEL]), latency)
    meta = BackgroundServer(gate)
    with sheets, meta:
        folder = tmp_path / "config"
        folder.mkdir()
        path = write_bridge_config(
            folder,
            "leads",
            spreadsheet_id=WORLD_SHEET,
            sheets_url=sheets.url,
            meta_url=meta.url,
            pixel_id=WORLD_PIXEL,
            stages=WORLD_STAGES,
            **config,
        )
        yield path, gate, meta.url
        gate.release.set()  # never leave a server thread held


def documented_env(folder: Path, ledger: str, **more: str) -> dict[str, str]:
    """The environment README documents for the image, for the configs in `folder`."""
    return {
        "SHEET_BRIDGE_CONFIG": str(folder),
        "SHEET_BRIDGE_LEDGER": ledger,
        "META_CAPI_TOKEN": WORLD_TOKEN,
        "SHEET_BRIDGE_SECRET": WORLD_SECRET,
        "WEB_CONCURRENCY": "2",
        **more,
    }
