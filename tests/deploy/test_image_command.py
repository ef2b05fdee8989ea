"""The backend as the image runs it (issue 14 "Deploy"): the Dockerfile's CMD, run from the
repository with the environment the README documents, on each ledger backend, against the
Sheets emulator and the fake Meta. No image is built (there may be no registry to pull the base
image from); what the image adds around the command is checked as text."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from sheet_bridge.sync.ledger import open_ledger
from sheet_bridge.web.passes import parse_pass_ref
from tests.conftest import (
    WORLD_PIXEL,
    WORLD_SECRET,
    WORLD_SHEET,
    WORLD_TOKEN,
)
from tests.deploy.instances import (
    AUTH,
    DOCUMENTED_ENV,
    EVENTS,
    LEADS,
    ROOT,
    MetaGate,
    dockerfile_command,
    documented_env,
    mql_stand_ins,
    start_instance,
)


@pytest.fixture
def stand_ins(tmp_path: Path, world_now: datetime) -> Iterator[tuple[Path, MetaGate, str]]:
    """The emulator with a tab of MQL leads, the fake Meta behind a gate, and a config folder
    for them; yields (config folder, gate, fake Meta's URL)."""
    with mql_stand_ins(tmp_path, world_now, LEADS, batch_size=4) as (config, gate, meta_url):
        yield config.parent, gate, meta_url


def follow(url: str, answer: httpx.Response) -> dict[str, Any]:
    """A /api/sync answer, followed to the end of its pass when it was a 202."""
    assert answer.status_code in (200, 202), answer.text
    body: dict[str, Any] = answer.json()
    while body.get("state") == "running":
        body = httpx.get(f"{url}/api/passes/{body['pass_id']}", headers=AUTH, timeout=10).json()
    return body


def test_the_image_command_serves_healthz_and_one_pass_and_stops_on_sigterm(
    tmp_path: Path, ledger_location: str, stand_ins: tuple[Path, MetaGate, str]
) -> None:
    folder, _, meta_url = stand_ins
    instance = start_instance(documented_env(folder, ledger_location), tmp_path / "gunicorn.log")
    try:
        health = httpx.get(instance.url + "/healthz", timeout=5)
        answer = httpx.post(
            instance.url + "/api/sync",
            json={"spreadsheet_id": WORLD_SHEET, "wait": 25},
            headers=AUTH,
            timeout=40,
        )
        summary = follow(instance.url, answer)
        record = httpx.get(
            f"{instance.url}/api/passes/{summary['pass_id']}", headers=AUTH, timeout=10
        ).json()
        probe = httpx.get(
            f"{instance.url}/api/status?spreadsheet_id={WORLD_SHEET}&probe=query-never-logged",
            headers=AUTH,
            timeout=10,
        )
        stopped = instance.terminate()
    finally:
        instance.close()

    assert health.status_code == 200 and health.json() == {"ok": True}
    assert summary["state"] == "done" and summary["sent"] == LEADS, summary
    assert summary["events_sent"] == EVENTS
    assert record["state"] == "done" and record["summary"]["sent"] == LEADS
    assert probe.status_code == 200, probe.text
    events = httpx.get(meta_url + "/_fake/events", timeout=10).json()["events"]
    assert len({e["event_id"] for e in events}) == len(events) == EVENTS
    log = instance.log()
    assert stopped == 0, log[-3000:]
    assert '"GET /api/status" 200' in log  # the access log names the path...
    assert "query-never-logged" not in log  # ...never the query
    assert "pass sync on" in log  # sheet-bridge's own lines reach the error log
    assert WORLD_TOKEN not in log and WORLD_SECRET not in log
    assert "Traceback" not in log


def test_a_stopping_worker_lets_its_running_pass_finish(
    tmp_path: Path, ledger_location: str, stand_ins: tuple[Path, MetaGate, str]
) -> None:
    folder, gate, meta_url = stand_ins
    instance = start_instance(documented_env(folder, ledger_location), tmp_path / "gunicorn.log")
    try:
        gate.hold(WORLD_PIXEL, after=1)  # the pass's second request waits at Meta
        answer = httpx.post(
            instance.url + "/api/sync",
            json={"spreadsheet_id": WORLD_SHEET, "wait": 0},
            headers=AUTH,
            timeout=40,
        )
        assert answer.status_code == 202, answer.text
        assert gate.held.wait(30), "the pass never reached Meta"
        # A redeploy: gunicorn's master is told to stop while the pass is mid-send.
        instance.process.send_signal(signal.SIGTERM)
        instance.wait_for_log(r"(?s)(Worker exiting.*){2}")
        gate.release.set()
        stopped = instance.process.wait(timeout=60)
    finally:
        instance.close()

    ledger = open_ledger(ledger_location)
    try:
        pass_id = parse_pass_ref(answer.json()["pass_id"])
        assert pass_id is not None
        record = ledger.get_pass(pass_id)
    finally:
        ledger.close()
    assert stopped == 0, instance.log()[-3000:]
    assert record is not None
    assert record.finished_at is not None and record.error is None, record
    assert record.summary is not None and record.summary["sent"] == LEADS
    events = httpx.get(meta_url + "/_fake/events", timeout=10).json()["events"]
    assert len({e["event_id"] for e in events}) == len(events) == EVENTS


def test_the_image_runs_the_command_as_documented_and_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    readme = (ROOT / "README.md").read_text() + (ROOT / "docs" / "deploy.md").read_text()
    ignored = (ROOT / ".dockerignore").read_text()

    assert dockerfile_command() == [
        "gunicorn",
        "-c",
        "gunicorn.conf.py",
        "sheet_bridge.web.app:create_app()",
    ]
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", dockerfile, re.M)
    assert (
        "pip install --constraint /tmp/src/constraints.txt '/tmp/src[server,postgres]'"
        in dockerfile
    )
    assert "!constraints.txt" in ignored.splitlines()
    assert "COPY gunicorn.conf.py /app/gunicorn.conf.py" in dockerfile
    # Nothing from a developer's checkout (a venv, a ledger, demo data, tests) enters the image.
    assert ignored.splitlines()[1] == "*"
    documented = readme + (ROOT / "docs" / "operating.md").read_text()
    for name in DOCUMENTED_ENV:
        assert name in documented, f"{name} is read by the image but not documented"


def test_the_image_pins_every_runtime_dependency_in_constraints_txt() -> None:
    """A rebuild installs the versions the tests ran against (docs/operating.md "Upgrades and
    rollbacks"): every dependency the image installs, named in pyproject.toml, is pinned."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [
        *project["dependencies"],
        *project["optional-dependencies"]["server"],
        *project["optional-dependencies"]["postgres"],
    ]
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"not pinned: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    for spec in wanted:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), (
            f"constraints.txt pins {requirement.name}=={pins[name]}, outside {spec!r}"
        )
