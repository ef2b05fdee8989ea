"""`sheet-bridge demo --serve` runs beside another playground or a test run: when the stand-ins'
ports (8085, 8086) and the page's 8080 are taken it takes free ones and prints the URLs it
uses; a --port asked for and taken is refused in words."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sheet_bridge.local.demo import META_PORT, SHEETS_PORT

PLAYGROUND_PORT = 8080  # the page's default

# The installed command, as a person runs it.
CLI = [sys.executable, "-c", "from sheet_bridge.cli import main; main()"]


@contextlib.contextmanager
def occupied(*ports: int) -> Iterator[None]:
    """Listen on each port (one another program already holds counts as occupied too)."""
    held = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            held.append(sock)
        except OSError:
            sock.close()  # taken already: what the test wants
    try:
        yield
    finally:
        for sock in held:
            sock.close()


def read_until(proc: subprocess.Popen[str], pattern: str, timeout: float = 90) -> str:
    """The process's output up to the line matching `pattern` (a thread reads, so a silent
    process fails the test at the timeout instead of hanging it)."""
    seen: list[str] = []
    found = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if re.search(pattern, line):
                found.set()
                return

    threading.Thread(target=pump, daemon=True).start()
    assert found.wait(timeout), "".join(seen)
    return "".join(seen)


@contextlib.contextmanager
def demo_serve(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`sheet-bridge demo --serve ARGS`, stopped with Ctrl-C (SIGINT) at the end; it must
    then exit 0."""
    proc = subprocess.Popen(
        [*CLI, "demo", "--serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


@pytest.fixture
def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_demo_serve_takes_free_ports_when_the_defaults_are_taken(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with (
        occupied(PLAYGROUND_PORT, SHEETS_PORT, META_PORT),
        demo_serve(["--data-dir", str(tmp_path / "demo")], env) as proc,
    ):
        out = read_until(proc, r"Ctrl-C stops everything")
        urls = dict(
            re.findall(r"(Playground|Sheets emulator|Fake Meta): (http://127\.0\.0\.1:\d+)", out)
        )
        assert set(urls) == {"Playground", "Sheets emulator", "Fake Meta"}, out
        ports = {int(u.rsplit(":", 1)[1]) for u in urls.values()}
        assert not ports & {PLAYGROUND_PORT, SHEETS_PORT, META_PORT}, out
        assert f"taken by another program: {PLAYGROUND_PORT}, {SHEETS_PORT}, {META_PORT}" in out
        # Each URL answers: the page's config, the emulator, the fake Meta.
        page = httpx.get(urls["Playground"] + "/playground/config", timeout=10).json()
        assert page["tab"] == "Leads"
        assert httpx.get(urls["Sheets emulator"] + "/_emulator/stats", timeout=10).is_success
        assert httpx.get(urls["Fake Meta"] + "/_fake/events", timeout=10).is_success


def test_a_port_asked_for_and_taken_is_refused_in_words(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        done = subprocess.run(
            [*CLI, "demo", "--serve", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert done.returncode != 0
    assert f"port {port} is in use by another program; pick another with --port" in done.stderr


def test_port_0_takes_any_free_port_and_says_so_not_that_8080_was_taken(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with demo_serve(["--port", "0", "--data-dir", str(tmp_path / "serve-data")], env) as proc:
        out = read_until(proc, r"Ctrl-C stops everything")
        port = int(re.search(r"Playground: http://127\.0\.0\.1:(\d+)", out).group(1))  # type: ignore[union-attr]
        assert port not in (0, PLAYGROUND_PORT), out
        assert "(--port 0: any free port)" in out
        taken = re.search(r"taken by another program: ([\d, ]+);", out)
        assert taken is None or str(PLAYGROUND_PORT) not in taken.group(1).split(", "), out
        # Already serving: what to do next is in the page, not another `demo --serve`.
        next_line = next(line for line in out.splitlines() if line.startswith("Next:"))
        assert "demo --serve" not in next_line, next_line
        assert "click Sync now" in next_line
        assert httpx.get(f"http://127.0.0.1:{port}/playground/config", timeout=10).is_success
