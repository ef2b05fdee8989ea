"""Scale benchmark: every figure of issue 24's "Done when" in one run (`make bench`).

Prints its tables and writes bench/RESULTS.md (all of it but two hand-kept sections: the
profiles between PROFILE_START/PROFILE_END and bench/edit_latency.py's section, both kept as
they are). In one run, one measurement after another:
- passes at 1,000 / 10,000 / 100,000 leads with Meta at 150 ms per request: first (nothing
  sent before), no change, steady (EDITS_IN_STEADY_PASS leads moved on);
- the 100,000-lead first pass with Meta answering at once, and Meta's Python SDK batching and
  one POST per row timed on a slice at 150 ms and extrapolated by events;
- 10,000 leads side by side: the first pass at 150 ms and with Meta answering at once,
  alternated, SIDE_RUNS runs each (medians and their ratio);
- 20,000 leads: the first pass with the ledger in PostgreSQL (an empty schema of its own per
  run, dropped afterwards) and in SQLite, alternated, PG_RUNS runs each.

How it measures, so the figures can be trusted:
- The Sheets emulator and the fake Meta each run in their own subprocess (werkzeug, threaded,
  on loopback), so their CPU and memory are not counted as the bridge's; on a 2-core machine
  they compete with the bridge for the cores, as a slow network would not.
- Each run is a fresh bridge subprocess with fresh servers (the sheet file is generated once
  per size). Its peak memory counts the bridge process and every process it starts: the
  larger of (a) the largest sum of VmRSS over the bridge and all its descendants, sampled
  from /proc by this parent every SAMPLE_SECONDS, and (b) the bridge's own ru_maxrss plus
  the largest sum of its descendants' VmRSS, sampled by the bridge itself. (a) sees children
  that run at the same time; (b) sees a peak between two samples. PostgreSQL's server
  processes are not the bridge's and are not counted.
- Sheets calls come from the emulator's own counter (reset between passes); Meta requests,
  the most requests in flight and the time at Meta (first request in to last answer out)
  from the fake's own account.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from sheet_bridge.local.demo_leads import DEMO_STAGES

SIZES = (1_000, 10_000, 100_000)
LATENCY_MS = 150  # Meta's answer time over the internet (issue 14)
IN_FLIGHT = 4
# Runs of each way, alternated. The two ratios move by ±0.04 from one bench to the next with
# the same code (2026-12-05): five and three runs (an odd count: the median is a run).
SIDE_SIZE, SIDE_RUNS = 10_000, 5
PG_SIZE, PG_RUNS = 20_000, 3
# BENCH_PG_URL: another server (its database must let the bench create a schema).
PG_URL = os.environ.get("BENCH_PG_URL") or "postgresql://127.0.0.1:5432/test"
# The ledger comparison runs with Meta answering at once: waiting would hide ledger time.
PG_LATENCY_MS = 0
# Slices for the serial ways, small enough to time in a minute at LATENCY_MS per request.
PER_ROW_SLICE = 100
SDK_SLICE = 1_000
SDK_BATCH = 50  # facebook-python-business-sdk BatchProcessor(batch_size=50)
SAMPLE_SECONDS = 0.05
# Issue 24's targets.
FIRST_PASS_S, NO_CHANGE_S, PEAK_MB, SIDE_RATIO, PG_RATIO = 25.0, 4.0, 500.0, 1.2, 1.2
PROFILE_START, PROFILE_END = "<!-- profile:start -->", "<!-- profile:end -->"
EDIT_START, EDIT_END = "<!-- edit-latency:start -->", "<!-- edit-latency:end -->"
PROFILE_PLACEHOLDER = (
    "## Profiles\n\n_Before/after profiles of the 100,000-lead first pass go here (written by "
    "hand; `make bench` keeps this section as it is)._"
)
TOKEN = "bench-token-not-a-real-one"
PIXEL = "123456789012345"
SHEET_ID = "1BenchScaleSheet00000000000000000000000000"
TAB = "Leads"
TIME_ZONE = "Asia/Kolkata"
BATCH_SIZE = 500
EDITS_IN_STEADY_PASS = 100
HEADER = [
    "Created At",
    "First Name",
    "Last Name",
    "Email",
    "Phone",
    "City",
    "Leadgen ID",
    "Lead Status",
    "Status Changed At",
    "Deal Value",
]
# A realistic funnel: most leads stay early; a few close or are disqualified.
STATUS_WEIGHTS = [
    ("New", 40),
    ("MQL", 20),
    ("SQL", 14),
    ("Opportunity", 8),
    ("Customer", 5),
    ("Disqualified", 8),
    ("On hold", 3),
    ("", 2),
]
FIRST = ["Aarav", "Diya", "Vihaan", "Ananya", "Arjun", "Ishita", "Kabir", "Meera", "Rohan", "Zoya"]
LAST = ["Sharma", "Patel", "Iyer", "Reddy", "Khan", "Das", "Gupta", "Nair", "Singh", "Joshi"]
CITIES = ["Mumbai", "Delhi", "Bengaluru", "Pune", "Chennai", "Kolkata", "Hyderabad", "Jaipur"]
DOMAINS = ["gmail.com", "outlook.com", "yahoo.co.in", "example.com", "company.in"]


# ---- the sheet -------------------------------------------------------------------------------


def phone_cell(rng: random.Random, i: int) -> object:
    """Phones the way sales people type them (several formats, some blank, some numbers)."""
    n = 9_000_000_000 + (i * 7919) % 999_999_999
    digits = str(n)
    style = i % 6
    if style == 0:
        return f"+91 {digits[:5]} {digits[5:]}"
    if style == 1:
        return f"0{digits}"
    if style == 2:
        return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    if style == 3:
        return n  # a number cell
    if style == 4:
        return f"91-{digits}"
    return "" if rng.random() < 0.5 else digits


def lead_rows(size: int, now: datetime, seed: int = 7) -> list[list[object]]:
    rng = random.Random(seed)
    statuses = [s for s, _ in STATUS_WEIGHTS]
    weights = [w for _, w in STATUS_WEIGHTS]
    tz_now = now.astimezone()
    rows: list[list[object]] = []
    for i in range(size):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        created = tz_now - timedelta(hours=rng.uniform(24, 6 * 24))
        changed = created + (tz_now - created) * rng.uniform(0.1, 0.99)
        status = rng.choices(statuses, weights)[0]
        lead_id = str(10**14 + rng.randrange(10**16)) if rng.random() < 0.6 else ""
        rows.append(
            [
                created.isoformat(timespec="seconds"),
                first,
                last,
                f"{first}.{last}{i}@{rng.choice(DOMAINS)}".lower(),
                phone_cell(rng, i),
                rng.choice(CITIES),
                lead_id,
                status,
                changed.isoformat(timespec="seconds") if status else "",
                rng.choice(["", "", 25000, "₹ 40,000"]) if status == "Customer" else "",
            ]
        )
    return rows


def sheet_data(rows: list[list[object]]) -> dict[str, Any]:
    return {
        "spreadsheets": {
            SHEET_ID: {
                "title": "Bench",
                "timeZone": TIME_ZONE,
                "sheets": {TAB: [HEADER, *rows]},
            }
        }
    }


def config_data(
    sheets_url: str, meta_url: str, ledger: Path, in_flight: int | None = IN_FLIGHT
) -> dict[str, Any]:
    return {
        "sheets": {
            "spreadsheet_id": SHEET_ID,
            "tab": TAB,
            "api_endpoint": sheets_url,
            "credentials": "anonymous",
        },
        "meta": {
            "pixel_id": PIXEL,
            "graph_url": meta_url,
            "default_country": "IN",
            "currency": "INR",
            "batch_size": BATCH_SIZE,
            "timeout_seconds": 60,
            **({"max_in_flight": in_flight} if in_flight is not None else {}),
        },
        "server": {"shared_secret_env": "BENCH_SECRET", "ledger": str(ledger)},
        # Edits sent at once: the bench measures the send path, not the settling wait. A version
        # from before max_in_flight (in_flight None, edit_latency.py's "before") had no settling
        # and refuses the section.
        **({"sync": {"settle_seconds": 0}} if in_flight is not None else {}),
        "columns": {
            "status": "Lead Status",
            "status_changed_at": "Status Changed At",
            "created_at": "Created At",
            "email": "Email",
            "phone": "Phone",
            "first_name": "First Name",
            "last_name": "Last Name",
            "city": "City",
            "lead_id": "Leadgen ID",
            "value": "Deal Value",
        },
        "stages": DEMO_STAGES,
    }


# ---- the servers (subprocesses) ----------------------------------------------------------------


def serve(kind: str, data_path: str) -> None:
    """Child mode: run the emulator or the fake Meta on a free port; print the port once it
    listens.

    Under gunicorn's threaded worker (a dependency of the server extra), which keeps a
    connection open between requests as Google's and Meta's endpoints do. Werkzeug's
    development server (`sheet-bridge emulate`) closes each one, so every request would pay a
    new connection: a cost of the stand-in, not of the bridge (httpx keeps its connections)."""
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    if kind == "sheets":
        from sheet_bridge.local.sheets_emulator import create_emulator

        # In memory: the emulator's data file would be rewritten whole after every write call,
        # an O(sheet) disk write per call that Google does not make; it is not the bridge's cost.
        app = create_emulator(data=json.loads(Path(data_path).read_text()))
    else:
        from sheet_bridge.local.fake_meta import create_fake_meta

        app = create_fake_meta(access_token=TOKEN, pixel_ids=[PIXEL])
    with socket.socket() as probe:  # a free port (gunicorn says none back)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class Serve(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            settings = {
                "bind": f"127.0.0.1:{port}",
                "workers": 1,  # one process: the stand-in's state (events, faults) is one
                "worker_class": "gthread",
                "threads": 16,
                "keepalive": 120,
                "timeout": 600,
                "graceful_timeout": 1,
                "loglevel": "warning",
                "when_ready": lambda _server: print(port, flush=True),
            }
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Serve().run()


class Server:
    def __init__(self, kind: str, data_path: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, str(data_path or "")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used (Linux /proc), or None where unknown."""
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# ---- the bridge's side (a fresh subprocess per run) ---------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


# The largest VmRSS of this process and its descendants (a hashing worker, say) added up at
# one instant, sampled by `watch_tree` every TREE_SAMPLE_SECONDS. Not RUSAGE_CHILDREN's
# ru_maxrss: a child started with spawn is forked before it execs, and its ru_maxrss counts the
# parent's pages it shared for that instant. Nor this process's own peak plus its children's:
# the two come at different times (a worker lives while a first pass sends; the bridge's own
# peak is in the pass that follows), and their sum is no instant's memory.
_TREE_PEAK_KB = [0]
TREE_SAMPLE_SECONDS = 0.02


def watch_tree() -> None:
    """Sample this process's memory with its descendants', for `memory`."""

    def sample() -> None:
        me = os.getpid()
        while True:
            _TREE_PEAK_KB[0] = max(_TREE_PEAK_KB[0], tree_rss_kb(me))
            time.sleep(TREE_SAMPLE_SECONDS)

    threading.Thread(target=sample, daemon=True, name="bench-memory").start()


def memory() -> dict[str, float]:
    """This process's exact peak RSS, and its tree's largest sampled sum."""
    return {"self_mb": peak_rss_mb(), "tree_mb": _TREE_PEAK_KB[0] / 1024}


def cpu_seconds() -> float:
    """CPU of this process (the pass and its threads) and of the children it waited for."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def proc_children(pid: int) -> list[int]:
    """The processes `pid` started (Linux /proc; none where unknown)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time a server has used, its worker process included (gunicorn's, see `serve`)."""
    total = 0.0
    for each in (pid, *proc_children(pid)):
        cpu = proc_cpu_seconds(each)
        if cpu is None:
            return None
        total += cpu
    return total


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU time another process has used (Linux /proc), or None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def child_bridge(workdir: Path, *, with_capi: bool, in_flight: int | None = IN_FLIGHT) -> Any:
    """The bridge a child process measures, wired to the servers named in the environment
    (`in_flight` None: a version from before the setting, which it would refuse)."""
    from sheet_bridge.config import parse_config
    from sheet_bridge.sheets.client import SheetsClient
    from sheet_bridge.sync.ledger import open_ledger
    from sheet_bridge.sync.run import Bridge, capi_client

    sheets_url, meta_url = os.environ["BENCH_SHEETS_URL"], os.environ["BENCH_META_URL"]
    config = parse_config(
        config_data(sheets_url, meta_url, workdir / "ledger.db", in_flight),
        source=str(workdir / "b.toml"),
    )
    # BENCH_LEDGER: a postgresql:// URL (an empty schema of its own) to time that ledger instead.
    location = os.environ.get("BENCH_LEDGER") or config.ledger_location({})
    return Bridge(
        config,
        sheets=SheetsClient(config.sheets),
        ledger=open_ledger(location),
        capi=capi_client(config.meta, TOKEN) if with_capi else None,
    )


def timed_first_pass(bridge: Any) -> dict[str, Any]:
    """One first pass, with the CPU it took here and at the fake Meta. The fake's account of
    it is fetched by the parent afterwards: its request log is megabytes that would count in
    this process's peak memory."""
    meta_pid = int(os.environ.get("BENCH_META_PID") or 0)
    meta_cpu = tree_cpu_seconds(meta_pid) if meta_pid else None
    cpu = cpu_seconds()
    started = time.perf_counter()
    result = bridge.sync(trigger="bench")
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    meta_cpu_after = tree_cpu_seconds(meta_pid) if meta_pid else None
    return {
        "seconds": seconds,
        "events": result.events_sent,
        "requests": result.meta_requests,
        "counts": result.counts,
        "cpu_seconds": cpu,
        "meta_cpu_seconds": (
            meta_cpu_after - meta_cpu
            if meta_cpu is not None and meta_cpu_after is not None
            else None
        ),
    }


def run_size(size: int, workdir: Path) -> dict[str, Any]:
    """Child mode: the servers are already up (URLs in the environment); three passes."""
    bridge = child_bridge(workdir, with_capi=True)
    config = bridge.config
    sheets_url, meta_url = os.environ["BENCH_SHEETS_URL"], os.environ["BENCH_META_URL"]
    passes = []
    first: dict[str, Any] = {}
    for name in ("first", "no change", "steady"):
        if name == "steady":
            edit_some_statuses(config, size)
        httpx.post(sheets_url + "/_emulator/stats/reset")
        meta_before = httpx.get(meta_url + "/_fake/stats").json()
        if name == "first":
            first = timed_first_pass(bridge)
            seconds, cells = first["seconds"], None
        else:
            started = time.perf_counter()
            result = bridge.sync(trigger="bench")
            seconds = time.perf_counter() - started
            cells = result.cells_written
            # As the CLI or the web server does: a pass's result is gone before the next pass.
            del result
        calls = httpx.get(sheets_url + "/_emulator/stats").json()
        meta_after = httpx.get(meta_url + "/_fake/stats").json()
        events = meta_after["events"] - meta_before["events"]
        passes.append(
            {
                "pass": name,
                "seconds": seconds,
                "sheets_calls": calls.pop("total"),
                "sheets_by_method": calls,
                "meta_requests": meta_after["requests"] - meta_before["requests"],
                "meta_rejections": meta_after["rejections"] - meta_before["rejections"],
                "events": events,
                "expected_requests": math.ceil(events / BATCH_SIZE),
                "cells_written": cells,
            }
        )
    return {"size": size, "passes": passes, "first": first, "memory": memory()}


def run_first_pass(workdir: Path, in_flight: int) -> dict[str, Any]:
    """Child mode: one first pass, `in_flight` requests at a time."""
    bridge = child_bridge(workdir, with_capi=True, in_flight=in_flight)
    return {**timed_first_pass(bridge), "memory": memory()}


def edit_some_statuses(config: Any, size: int) -> None:
    """A steady-state pass: a sales team moved EDITS_IN_STEADY_PASS leads one stage on."""
    from sheet_bridge.sheets.client import SheetsClient

    client = SheetsClient(config.sheets)
    status_col = HEADER.index("Lead Status")
    changed_col = HEADER.index("Status Changed At")
    now = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
    step = max(size // EDITS_IN_STEADY_PASS, 1)
    cells: list[tuple[int, int, object]] = []
    for n in range(EDITS_IN_STEADY_PASS):
        row = 2 + n * step
        cells += [(row, status_col, "Customer"), (row, changed_col, now)]
    client.write_cells(cells)


def run_baseline(workdir: Path, batch: int = 1) -> dict[str, Any]:
    """Child mode: the same events sent one request after another, `batch` events each: 1 is
    one POST per row event, as a hand-written Apps Script does; 50 is Meta's Python SDK
    (BatchProcessor(batch_size=50, concurrent_requests=4) awaits each request before the next:
    facebook_business/adobjects/serverside/batch_processor.py). Same client, same fake."""
    from sheet_bridge.sync.plan import plan
    from sheet_bridge.sync.run import capi_client

    bridge = child_bridge(workdir, with_capi=False)
    config = bridge.config
    _, _, leads = bridge.read()
    the_plan = plan(leads, config, {}, datetime.now(UTC))
    per_row = [[e.payload for e in d.events] for d in the_plan.decisions if d.events]
    client = capi_client(config.meta, TOKEN, batch_size=batch)
    started = time.perf_counter()
    if batch == 1:
        for events in per_row:
            for event in events:  # one row's events, one request each: no batching at all
                client.send([event])
    else:
        client.send([event for events in per_row for event in events])
    seconds = time.perf_counter() - started
    events_sent = sum(len(e) for e in per_row)
    return {
        "rows": len(per_row),
        "events": events_sent,
        "requests": client.requests_made,
        "seconds": seconds,
        "events_per_second": events_sent / seconds,
        "memory": memory(),
    }


# ---- the parent: fresh servers and a bridge process per run -------------------------------------


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def tree_rss_kb(pid: int) -> int:
    """VmRSS of a process and all its descendants (Linux /proc), KiB; 0 once it is gone.

    A descendant still running its parent's program is left out: a child between its fork and
    its exec (multiprocessing's spawn, subprocess) shows its parent's pages as its own."""
    total, todo = 0, [pid]
    root = _cmdline(pid)
    while todo:
        p = todo.pop()
        try:
            if p != pid and _cmdline(p) == root:
                continue
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [
                    int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()
                ]
        except (OSError, ValueError):
            continue  # gone between two reads
    return total


def child(mode: str, size: int, workdir: Path, *extra: str, env: dict[str, str]) -> dict[str, Any]:
    """One bridge process; its JSON answer plus `peak_mb`, its tree's peak memory."""
    args = ["--child", mode, "--size", str(size), "--dir", str(workdir), *extra]
    proc = subprocess.Popen(
        [sys.executable, __file__, *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampled = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(SAMPLE_SECONDS):
            sampled[0] = max(sampled[0], tree_rss_kb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate()
    finally:
        done.set()
        sampler.join()
    if proc.returncode != 0:
        last = [line for line in err.splitlines() if line.strip()][-1:] or ["no stderr"]
        raise RuntimeError(f"{mode} {size} {' '.join(extra)} failed: {last[0]}\n{err[-4000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    mem = result["memory"]
    result["peak_mb"] = max(sampled[0] / 1024, mem["tree_mb"], mem["self_mb"])
    return result


def sheet_file(root: Path, size: int) -> Path:
    """The sheet of `size` leads, generated once per run and size (every run reads the same)."""
    path = root / f"sheet-{size}.json"
    if not path.exists():
        path.write_text(json.dumps(sheet_data(lead_rows(size, datetime.now(UTC)))))
    return path


def measure(
    mode: str,
    size: int,
    root: Path,
    *extra: str,
    latency_ms: float = 0.0,
    ledger: str | None = None,
) -> dict[str, Any]:
    """Fresh emulator, fake Meta and bridge process for one run; the fake answers `latency_ms`
    late. The result has the fake's account of the first pass (`at_meta`)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{mode}-{size}-", dir=root))
    LOADS.append(os.getloadavg()[0])
    sheets, meta = Server("sheets", sheet_file(root, size)), Server("meta")
    try:
        if latency_ms:
            speed = {"latency_ms": latency_ms}
            httpx.post(meta.url + "/_fake/speed", json=speed, timeout=10).raise_for_status()
        env = {
            "BENCH_SHEETS_URL": sheets.url,
            "BENCH_META_URL": meta.url,
            "BENCH_META_PID": str(meta.proc.pid),
            "BENCH_LEDGER": ledger or "",
        }
        result = child(mode, size, workdir, *extra, env=env)
        first = result.get("first", result)
        first["at_meta"] = at_meta(meta.url, first.get("requests"))
        return result
    finally:
        sheets.stop()
        meta.stop()


def at_meta(meta_url: str, first_n: int | None = None) -> dict[str, Any]:
    """The fake's account of its first `first_n` requests (all when None): how many, the most
    in flight at once, first request in to last answer out (its own clock)."""
    log = httpx.get(meta_url + "/_fake/requests", timeout=60).json()["requests"]
    log = sorted(log, key=lambda r: r["started"])[:first_n]
    span = max(r["finished"] for r in log) - min(r["started"] for r in log) if log else 0.0
    edges = sorted([(r["started"], 1) for r in log] + [(r["finished"], -1) for r in log])
    in_flight = most = 0
    for _, step in edges:
        in_flight += step
        most = max(most, in_flight)
    events = sum(len(r.get("event_ids") or []) for r in log)
    return {"requests": len(log), "events": events, "peak_in_flight": most, "seconds": span}


class PgSchema:
    """An empty schema of its own in the test database for one run, dropped afterwards."""

    count = 0

    def __init__(self) -> None:
        import psycopg  # the `postgres` extra; ImportError when it is not installed

        PgSchema.count += 1
        self.name = f"sb_bench_{os.getpid()}_{PgSchema.count}"
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        options = urllib.parse.quote(f"-csearch_path={self.name}")
        self.url = f"{PG_URL}?options={options}&application_name={self.name}"

    def drop(self) -> None:
        import psycopg

        try:
            with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
        except psycopg.Error as exc:  # the server went away: the run's figures still count
            say(f"  could not drop schema {self.name}: {first_line(exc)}")


# The 1-minute load average as each run began: how quiet the machine was during the bench.
LOADS: list[float] = []


def first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def alternate(runs: int, ways: list[tuple[str, Callable[[], dict[str, Any]]]]) -> dict[str, list]:
    """`runs` runs of each way, alternated, the order flipped every round (ABBA…) so a drift of
    the machine's load falls on both alike."""
    out: dict[str, list] = {name: [] for name, _ in ways}
    for n in range(runs):
        for name, run in ways if n % 2 == 0 else ways[::-1]:
            say(f"  {name}, run {n + 1} of {runs} …")
            out[name].append(run())
    return out


def run_all(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"load_start": os.getloadavg(), "started": time.perf_counter()}
    res["side_size"], res["pg_size"] = args.side_size, args.pg_size
    res["sizes"] = []
    for size in args.sizes:
        say(f"{size:,} leads, three passes, Meta at {LATENCY_MS} ms …")
        res["sizes"].append(measure("passes", size, root, latency_ms=LATENCY_MS))
    big = max(args.sizes)
    say(f"{big:,} leads, first pass, Meta answering at once …")
    res["big_at_once"] = measure("first", big, root)
    say(f"{args.side_size:,} leads side by side, Meta at {LATENCY_MS} ms and at once:")
    res["side"] = alternate(
        args.side_runs,
        [
            ("slow", lambda: measure("first", args.side_size, root, latency_ms=LATENCY_MS)),
            ("fast", lambda: measure("first", args.side_size, root)),
        ],
    )
    say(f"{args.pg_size:,} leads, ledger in SQLite and in PostgreSQL:")

    def postgres() -> dict[str, Any]:
        try:
            schema = PgSchema()
        except Exception as exc:  # unreachable, no psycopg…: said in the table, not raised
            return {"error": f"{type(exc).__name__}: {first_line(exc)}"}
        try:
            return measure("first", args.pg_size, root, latency_ms=PG_LATENCY_MS, ledger=schema.url)
        except RuntimeError as exc:  # the run failed: said in the table, the bench goes on
            return {"error": first_line(exc)}
        finally:
            schema.drop()

    res["pg"] = alternate(
        args.pg_runs,
        [
            ("sqlite", lambda: measure("first", args.pg_size, root, latency_ms=PG_LATENCY_MS)),
            ("postgres", postgres),
        ],
    )
    for name, rows, batch in (("per_row", PER_ROW_SLICE, 1), ("sdk", SDK_SLICE, SDK_BATCH)):
        say(f"{name}: {rows:,} leads at {LATENCY_MS} ms …")
        res[name] = measure("baseline", rows, root, "--batch", str(batch), latency_ms=LATENCY_MS)
    res["seconds"] = time.perf_counter() - res.pop("started")
    res["load_end"] = os.getloadavg()
    res["load_max"] = max(LOADS, default=0.0)
    return res


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": cpu,
        "ram": ram,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": ", ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


# ---- report ------------------------------------------------------------------------------------


def ok(cond: bool) -> str:
    return "met" if cond else "**MISSED**"


def runs_cell(values: list[float]) -> str:
    """Runs in run order, the median in bold (with an even count the median is no run: given
    after them)."""
    mid = statistics.median(values)
    cells = [f"{v:.2f}" for v in values]
    if len(values) % 2:
        cells[values.index(mid)] = f"**{mid:.2f}**"
        return " / ".join(cells)
    return " / ".join(cells) + f" (median **{mid:.2f}**)"


def calls_cell(p: dict[str, Any]) -> str:
    by = ", ".join(f"{k} {v}" for k, v in sorted(p["sheets_by_method"].items()))
    return f"{p['sheets_calls']}: {by}" if by else str(p["sheets_calls"])


def requests_cell(p: dict[str, Any]) -> str:
    """Meta requests, checked against ⌈events / batch size⌉ and rejections."""
    exact = p["meta_requests"] == p["expected_requests"]
    if exact and not p["meta_rejections"]:
        return f"{p['meta_requests']:,} ✓"
    return (
        f"{p['meta_requests']:,} (⌈events/{BATCH_SIZE}⌉ = {p['expected_requests']:,}, "
        f"{p['meta_rejections']} rejected) ✗"
    )


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """The figures the targets are judged on, and where each came from."""
    sizes = res["sizes"]
    big = max(sizes, key=lambda r: r["size"])
    runs = [(f"{r['size']:,} leads, three passes at {LATENCY_MS} ms", r) for r in sizes]
    runs.append((f"{big['size']:,}-lead first pass, Meta answering at once", res["big_at_once"]))
    for key, label in (("slow", f"{LATENCY_MS} ms"), ("fast", "Meta answering at once")):
        runs += [(f"{res['side_size']:,}-lead first pass, {label}", r) for r in res["side"][key]]
    for key in ("sqlite", "postgres"):
        runs += [
            (f"{res['pg_size']:,}-lead first pass, {key}", r)
            for r in res["pg"][key]
            if "error" not in r
        ]
    peak_label, peak_run = max(runs, key=lambda lr: lr[1]["peak_mb"])
    slow = statistics.median(r["seconds"] for r in res["side"]["slow"])
    fast = statistics.median(r["seconds"] for r in res["side"]["fast"])
    pg_runs = res["pg"]["postgres"]
    pg_errors = [r["error"] for r in pg_runs if "error" in r]
    sqlite = statistics.median(r["seconds"] for r in res["pg"]["sqlite"])
    pg = None if pg_errors else statistics.median(r["seconds"] for r in pg_runs)
    later = [p for r in sizes for p in r["passes"][1:]]
    every = [p for r in sizes for p in r["passes"]]
    return {
        "big": big,
        "first": big["passes"][0]["seconds"],
        "no_change": big["passes"][1]["seconds"],
        "peak_run": peak_run,
        "peak_label": peak_label,
        "side_ratio": slow / fast,
        "sqlite": sqlite,
        "pg": pg,
        "pg_error": pg_errors[0] if pg_errors else None,
        "later": later,
        "exact": all(
            p["meta_requests"] == p["expected_requests"] and not p["meta_rejections"] for p in every
        ),
    }


def targets_table(res: dict[str, Any], s: dict[str, Any]) -> str:
    n = f"{s['big']['size']:,}"
    peak = s["peak_run"]["peak_mb"]
    rows = [
        (
            f"{n}-lead first pass, Meta at {LATENCY_MS} ms per request",
            f"< {FIRST_PASS_S:g} s",
            f"{s['first']:.1f} s",
            ok(s["first"] < FIRST_PASS_S),
        ),
        (
            f"{n}-lead pass with no change",
            f"< {NO_CHANGE_S:g} s",
            f"{s['no_change']:.2f} s",
            ok(s["no_change"] < NO_CHANGE_S),
        ),
        (
            "peak memory of the bridge, its process and any it starts (largest of all runs)",
            f"< {PEAK_MB:g} MB",
            f"{peak:.0f} MB ({s['peak_label']})",
            ok(peak < PEAK_MB),
        ),
        (
            f"{res['side_size']:,}-lead first pass at {LATENCY_MS} ms ÷ the same with Meta "
            f"answering at once (medians of {len(res['side']['slow'])} alternated runs)",
            f"≤ {SIDE_RATIO:g}",
            f"{s['side_ratio']:.2f}",
            ok(s["side_ratio"] <= SIDE_RATIO),
        ),
    ]
    pg_name = (
        f"{res['pg_size']:,}-lead first pass, ledger in PostgreSQL ÷ in SQLite (medians of "
        f"{len(res['pg']['sqlite'])} alternated runs, Meta answering at once)"
    )
    if s["pg"] is None:
        rows.append(
            (pg_name, f"≤ {PG_RATIO:g}", "not measured (→ the ledger table)", "**not measured**")
        )
    else:
        ratio = s["pg"] / s["sqlite"]
        rows.append((pg_name, f"≤ {PG_RATIO:g}", f"{ratio:.2f}", ok(ratio <= PG_RATIO)))
    over = sorted({p["pass"] for p in s["later"] if p["sheets_calls"] > 3})
    rows.append(
        (
            "Sheets calls of every pass after the first (an earlier issue's target)",
            "≤ 3",
            f"→ passes (over 3: {', '.join(over)})" if over else "→ passes",
            ok(not over),
        )
    )
    rows.append(
        (
            f"Meta requests = ⌈events / {BATCH_SIZE}⌉, none rejected",
            "every pass",
            "every pass" if s["exact"] else "not every pass (✗ below)",
            ok(s["exact"]),
        )
    )
    head = "| target | wanted | measured | |\n|---|---|---|---|\n"
    return head + "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)


def peak_cell(run: dict[str, Any], s: dict[str, Any]) -> str:
    return "→ targets" if run is s["peak_run"] else f"{run['peak_mb']:.0f}"


def passes_table(res: dict[str, Any], s: dict[str, Any]) -> str:
    head = (
        "| leads | pass | wall s | events | Meta requests (✓: = ⌈events/500⌉, none rejected) "
        "| Sheets calls | peak memory MB (whole run) |\n|---:|---|---:|---:|---:|---|---:|\n"
    )
    lines = []
    for r in res["sizes"]:
        for i, p in enumerate(r["passes"]):
            wall = f"{p['seconds']:.2f}"
            if r is s["big"] and i < 2:
                wall = "→ targets"
            elif r["size"] == res["side_size"] and i == 0:
                wall = "→ side by side"
            lines.append(
                f"| {r['size']:,} | {p['pass']} | {wall} | {p['events']:,} | {requests_cell(p)} "
                f"| {calls_cell(p)} | {peak_cell(r, s) if i == 0 else ''} |"
            )
    return head + "\n".join(lines)


def cpu_cell(run: dict[str, Any]) -> str:
    meta = run.get("meta_cpu_seconds")
    return f"{run['cpu_seconds']:.0f} / {'?' if meta is None else f'{meta:.0f}'}"


def ways_table(res: dict[str, Any], s: dict[str, Any]) -> tuple[str, str]:
    """The big first pass at LATENCY_MS, with Meta answering at once, and the serial ways
    (extrapolated from their slice by events)."""
    big = s["big"]
    ours, at_once = big["first"], res["big_at_once"]
    events = big["passes"][0]["events"]
    # What the pass does besides talking to Meta (read, plan, ledger, write-back), as measured
    # on ours; a serial way's whole pass is that plus its own time at Meta.
    rest = ours["seconds"] - ours["at_meta"]["seconds"]
    head = (
        "| way | Meta's latency ms | events per request | requests | most in flight "
        "| time at Meta s | whole first pass s | peak memory MB | CPU s: bridge / fake Meta "
        "| how |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| ours, {IN_FLIGHT} in flight | {LATENCY_MS} | ≤ {BATCH_SIZE} | → passes "
        f"| {ours['at_meta']['peak_in_flight']} | {ours['at_meta']['seconds']:.1f} | → targets "
        f"| → passes | {cpu_cell(ours)} | measured (the passes run's first pass) |",
        f"| ours, {IN_FLIGHT} in flight | 0 | ≤ {BATCH_SIZE} "
        f"| {'same' if at_once['requests'] == ours['requests'] else at_once['requests']} "
        f"| {at_once['at_meta']['peak_in_flight']} | {at_once['at_meta']['seconds']:.1f} "
        f"| {at_once['seconds']:.1f} | {peak_cell(at_once, s)} | {cpu_cell(at_once)} "
        "| measured |",
    ]
    for key, way, per, leads in (
        ("sdk", "Meta's Python SDK batching, serial", str(SDK_BATCH), SDK_SLICE),
        ("per_row", "one POST per row event", "1", PER_ROW_SLICE),
    ):
        r = res[key]
        scale = events / r["events"]
        wait = r["at_meta"]["seconds"] * scale
        one_each = " (one per event)" if per == "1" else ""
        # One per event: the big first pass's events, a figure of the passes table.
        requests = "→ passes (events)" if per == "1" else f"≈ {round(r['requests'] * scale):,}"
        lines.append(
            f"| {way} | {LATENCY_MS} | {per} | {requests} "
            f"| {r['at_meta']['peak_in_flight']} | ≈ {wait:,.0f} | ≈ {rest + wait:,.0f} | | "
            f"| {leads:,}-lead slice: {r['requests']:,} requests{one_each}, "
            f"{r['at_meta']['seconds']:.1f} s at Meta; × {scale:,.1f} (events) |"
        )
    added = ours["seconds"] - at_once["seconds"]
    note = (
        f"Meta's {LATENCY_MS} ms per request added {added:+.1f} s to the whole first pass\n"
        f"with {IN_FLIGHT} requests in flight (one at a time they would be "
        f"{ours['requests'] * LATENCY_MS / 1000:.0f} s of waiting)."
    )
    return head + "\n".join(lines), note


def side_table(res: dict[str, Any]) -> str:
    head = "| Meta | first pass s, in run order (median in bold) |\n|---|---|\n"
    slow, fast = ([r["seconds"] for r in res["side"][k]] for k in ("slow", "fast"))
    return (
        head
        + f"| {LATENCY_MS} ms per request | {runs_cell(slow)} |\n"
        + f"| answering at once | {runs_cell(fast)} |"
    )


def pg_table(res: dict[str, Any], s: dict[str, Any]) -> str:
    head = "| ledger | first pass s, in run order (median in bold) |\n|---|---|\n"
    sqlite = runs_cell([r["seconds"] for r in res["pg"]["sqlite"]])
    if s["pg_error"] is not None:
        pg = f"not measured: {s['pg_error']}"
    else:
        pg = runs_cell([r["seconds"] for r in res["pg"]["postgres"]])
    return head + f"| SQLite (local file) | {sqlite} |\n| PostgreSQL ({PG_URL}) | {pg} |"


def kept_section(old: str, start: str, end: str, default: str) -> str:
    """A section of the old RESULTS.md between its markers, as it was (`default` if none)."""
    if start in old and end in old:
        return old[old.index(start) : old.index(end) + len(end)]
    return default


def results_text(res: dict[str, Any], old: str) -> str:
    s = summary(res)
    m = machine()
    load = [", ".join(f"{x:.2f}" for x in res[k]) for k in ("load_start", "load_end")]
    ways, ways_note = ways_table(res, s)
    profile = kept_section(
        old, PROFILE_START, PROFILE_END, f"{PROFILE_START}\n{PROFILE_PLACEHOLDER}\n{PROFILE_END}"
    )
    edits = kept_section(old, EDIT_START, EDIT_END, "")
    n = f"{s['big']['size']:,}"
    busy = ""
    if res["load_max"] > (os.cpu_count() or 2) / 2:
        busy = ", more while other work ran (a load above half the cores): read them as high"
    return (
        f"""# Sync scale benchmark

- Written by `make bench` (`bench/sync_scale.py`) on {m["date"]}; its runs took
  {res["seconds"] / 60:.1f} min.
- Machine: {m["cores"]} cores, {m["cpu"]}, {m["ram"]} RAM, Python {m["python"]}, {m["os"]}.
- Load average (1, 5, 15 min) when the runs began: {load[0]}; when they ended: {load[1]};
  the highest 1-minute load as a run began: {res["load_max"]:.2f}. The machine is shared:
  figures move by ±10 % from run to run{busy}.

## Against the targets

{targets_table(res, s)}

Each figure of this file appears once: a cell "→ targets" (or "→ passes", "→ side by
side") points to the table that holds it.

## Passes (Meta at {LATENCY_MS} ms per request)

Each size in one bridge process: **first** (nothing sent before: every due event goes),
**no change** (the same sheet again), **steady** (then {EDITS_IN_STEADY_PASS} leads moved to
Customer, and a pass).

{passes_table(res, s)}

## The {n}-lead first pass and other ways of sending

{ways}

{ways_note}

Time at Meta: the fake's own log, first request in to last answer out. The serial ways are
timed at the same latency on a slice and extrapolated by events to this pass's events; their
whole pass (≈) is our pass's time outside Meta plus their time at Meta. Meta's SDK:
`BatchProcessor(batch_size=50, concurrent_requests=4)` awaits each request before the next
(facebook_business/adobjects/serverside/batch_processor.py). CPU: the bridge process (with any
children) and the fake Meta's process over the first pass; they share the machine's cores.

## {res["side_size"]:,} leads side by side: is Meta's waiting hidden?

The first pass, each run in fresh processes, alternating (order flipped each round)
between the fake Meta at {LATENCY_MS} ms per request and answering at once. The ratio of the
medians is in the targets.

{side_table(res)}

## The ledger: PostgreSQL against SQLite, {res["pg_size"]:,} leads

The first pass with Meta answering at once (its waiting would hide the ledger's time), each
PostgreSQL run in an empty schema of its own (`?options=-csearch_path%3D…`, dropped
afterwards), alternating with SQLite runs. The ratio of the medians is in the targets.

{pg_table(res, s)}

## How it is measured

- The Sheets emulator (in memory) and the fake Meta each run in their own subprocess on
  loopback (threaded werkzeug); each run above is a fresh bridge process with fresh servers.
- Peak memory counts the bridge process and any process it starts (a hashing worker, say), added
  up at one instant: the largest of (a) the sum of VmRSS over the bridge and all its descendants,
  sampled from /proc by the parent every {SAMPLE_SECONDS * 1000:.0f} ms, (b) the same sum sampled
  by the bridge itself every {TREE_SAMPLE_SECONDS * 1000:.0f} ms, and (c) the bridge's own
  ru_maxrss (exact, between samples too). Not RUSAGE_CHILDREN (a spawned child's ru_maxrss
  counts the parent's pages it shared between its fork and its exec), and not the bridge's peak
  plus its worker's: they come at different times (the worker lives while a first pass sends,
  the bridge's own peak is in the pass with no change), and that sum, reported until
  2026-12-04, was no instant's memory. PostgreSQL's server processes are not counted.
- Leads: e-mails, phones in six formats (some number cells), 15–17 digit lead ids as text on
  60 % of rows, statuses across the funnel (New 40 %, MQL 20 %, SQL 14 %, Opportunity 8 %,
  Customer 5 %, Disqualified 8 %, On hold 3 %, blank 2 %), created and changed within the last
  6 days. A lead at a later stage owes every earlier stage too (docs/meta-events.md), so
  events > leads. Batch size {BATCH_SIZE}, at most {IN_FLIGHT} requests in flight. The
  ledger is SQLite on local disk unless said otherwise.
- Sheets calls: the emulator's own counter. A pass reads the tab with one `values.get` and
  the CAPI Log's lines past the count the ledger knows with one `values.batchGet` (none on a
  fresh sheet); the time zone's `spreadsheets.get` is cached per process (cold in each fresh
  bench process, so the first pass counts it); the first pass on a sheet creates the
  `CAPI Log` tab (`spreadsheets.batchUpdate`). The first pass of a large sheet writes more
  than the 2 MB per request Google advises (developers.google.com/sheets/api/limits), so its
  write-back (`values.batchUpdate`) and CAPI Log append (`values.append`) are split into
  ≤ 2 MB calls; later passes write only the rows that changed (then one write-back and one
  append).
- Meta requests: POSTs counted by the fake.

{profile}

{edits}
""".rstrip("\n")
        + "\n"
    )


def print_summary(res: dict[str, Any]) -> None:
    s = summary(res)
    print(targets_table(res, s))
    print()
    print(passes_table(res, s))
    print()
    print(ways_table(res, s)[0])
    print()
    print(side_table(res))
    print()
    print(pg_table(res, s))
    print(f"\nbench took {res['seconds']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "DATA"))
    parser.add_argument("--child", choices=["passes", "baseline", "first"])
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--side-size", type=int, default=SIDE_SIZE)
    parser.add_argument("--side-runs", type=int, default=SIDE_RUNS)
    parser.add_argument("--pg-size", type=int, default=PG_SIZE)
    parser.add_argument("--pg-runs", type=int, default=PG_RUNS)
    parser.add_argument(
        "--out",
        type=Path,
        help="write the results here (default: bench/RESULTS.md, only with the default sizes)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    if args.child:
        watch_tree()
    if args.child == "passes":
        print(json.dumps(run_size(args.size, args.dir)))
        return
    if args.child == "baseline":
        print(json.dumps(run_baseline(args.dir, args.batch)))
        return
    if args.child == "first":
        print(json.dumps(run_first_pass(args.dir, args.in_flight)))
        return

    args.sizes = [int(s) for s in args.sizes.split(",")]
    default = args.sizes == list(SIZES) and (
        args.side_size,
        args.side_runs,
        args.pg_size,
        args.pg_runs,
    ) == (SIDE_SIZE, SIDE_RUNS, PG_SIZE, PG_RUNS)
    with tempfile.TemporaryDirectory(prefix="sheet-bridge-bench-") as tmp:
        res = run_all(args, Path(tmp))
    print_summary(res)
    results = Path(__file__).with_name("RESULTS.md")
    path = args.out or (results if default else None)
    if path is not None:
        # The hand-kept sections come from RESULTS.md even when writing elsewhere.
        old = results.read_text() if results.exists() else ""
        path.write_text(results_text(res, old))
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
