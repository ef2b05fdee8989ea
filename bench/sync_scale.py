"""Scale benchmark: one sync pass over 1,000 / 10,000 / 100,000 leads, then a pass with no change.

Run with `make bench` (not part of `make test`). Prints a table and writes bench/RESULTS.md.

How it measures, so the figures can be trusted:
- The Sheets emulator and the fake Meta each run in their own subprocess (werkzeug, threaded,
  on loopback), so their CPU and memory are not counted as the bridge's; on a 2-core machine
  they compete with the bridge for the cores, as a slow network would not.
- Each sheet size runs in a fresh bridge subprocess, so peak RSS (ru_maxrss) is per size and
  includes reading the sheet, planning, the ledger and the write-back, nothing else.
- Sheets calls come from the emulator's own counter (GET /_emulator/stats, reset between
  passes); Meta requests from the fake's (GET /_fake/stats).
- The baseline is what a hand-written Apps Script does: one POST per row. Here it is the same
  CapiClient with batch_size=1 sending each row's events, against the same fake Meta.
- The latency table (`--latency-only` runs just it) gives the fake Meta Meta's round trip
  (LATENCY_MS per request) and times the 100,000-lead first pass with several requests in
  flight and with one; one POST per row and Meta's Python SDK batching (50 events per request,
  serial) are timed the same way on a slice and extrapolated by events. "Time at Meta" is the
  fake's own log: first request in to last answer out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from sheet_bridge.local.demo_leads import DEMO_STAGES

SIZES = (1_000, 10_000, 100_000)
BASELINE_ROWS = 1_000
# The latency table: Meta answers in hundreds of milliseconds (issue 14: 150 ms per request).
LATENCY_MS = 150
LATENCY_SIZE = 100_000
IN_FLIGHT = 4
# Slices for the serial ways, small enough to time in a minute at LATENCY_MS per request.
PER_ROW_SLICE = 100
SDK_SLICE = 1_000
SDK_BATCH = 50  # facebook-python-business-sdk BatchProcessor(batch_size=50)
LATENCY_BEGIN, LATENCY_END = "<!-- latency table: begin -->", "<!-- latency table: end -->"
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
        # Edits sent at once: the bench measures the send path, not the settling wait.
        "sync": {"settle_seconds": 0},
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
    """Child mode: run the emulator or the fake Meta on a free port; print the port."""
    from werkzeug.serving import make_server

    if kind == "sheets":
        from sheet_bridge.local.sheets_emulator import create_emulator

        # In memory: the emulator's data file would be rewritten whole after every write call,
        # an O(sheet) disk write per call that Google does not make; it is not the bridge's cost.
        app = create_emulator(data=json.loads(Path(data_path).read_text()))
    else:
        from sheet_bridge.local.fake_meta import create_fake_meta

        app = create_fake_meta(access_token=TOKEN, pixel_ids=[PIXEL])
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


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
        """CPU time the server process has used (Linux /proc), or None where unknown."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# ---- one size (a fresh subprocess) -------------------------------------------------------------


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


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


def run_size(size: int, workdir: Path) -> dict[str, Any]:
    """Child mode: the servers are already up (URLs in the environment); two or three passes."""
    bridge = child_bridge(workdir, with_capi=True)
    config = bridge.config
    sheets_url, meta_url = os.environ["BENCH_SHEETS_URL"], os.environ["BENCH_META_URL"]
    rss_before = peak_rss_mb()
    passes = []
    for name in ("first", "no change", "steady"):
        if name == "steady":
            edit_some_statuses(config, size)
        httpx.post(sheets_url + "/_emulator/stats/reset")
        meta_before = httpx.get(meta_url + "/_fake/stats").json()
        started = time.perf_counter()
        result = bridge.sync(trigger="bench")
        seconds = time.perf_counter() - started
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
                "events_per_second": events / seconds if seconds else 0.0,
                "counts": result.counts,
                "cells_written": result.cells_written,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
        # As the CLI or the web server does: a pass's result is gone before the next pass.
        del result
    return {"size": size, "rss_at_start_mb": rss_before, "passes": passes}


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
    }


def run_first_pass(workdir: Path, in_flight: int) -> dict[str, Any]:
    """Child mode: one first pass, `in_flight` requests at a time."""
    bridge = child_bridge(workdir, with_capi=True, in_flight=in_flight)
    started = time.perf_counter()
    result = bridge.sync(trigger="bench")
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this process: the pass and its threads
    return {
        "seconds": seconds,
        "events": result.events_sent,
        "requests": result.meta_requests,
        "counts": result.counts,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def child(mode: str, size: int, workdir: Path, *extra: str) -> dict[str, Any]:
    env = {**os.environ}
    args = ["--child", mode, "--size", str(size), "--dir", str(workdir), *extra]
    out = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{mode} {size} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(
    mode: str,
    size: int,
    root: Path,
    *extra: str,
    latency_ms: float = 0.0,
    account: bool = False,
) -> dict[str, Any]:
    """Fresh emulator, fake Meta and bridge process for one size. With `latency_ms`, the fake
    answers that much later; with `account`, the result has the fake's account of it."""
    workdir = root / "-".join([mode, str(size), *extra, f"{latency_ms:g}ms"])
    workdir.mkdir()
    data_path = workdir / "sheets.json"
    data_path.write_text(json.dumps(sheet_data(lead_rows(size, datetime.now(UTC)))))
    sheets, meta = Server("sheets", data_path), Server("meta")
    try:
        os.environ["BENCH_SHEETS_URL"], os.environ["BENCH_META_URL"] = sheets.url, meta.url
        if latency_ms:
            speed = {"latency_ms": latency_ms}
            httpx.post(meta.url + "/_fake/speed", json=speed, timeout=10).raise_for_status()
        result = child(mode, size, workdir, *extra)
        if account:
            result["at_meta"] = at_meta(meta.url)
            result["at_meta"]["cpu_seconds"] = meta.cpu_seconds()
        return result
    finally:
        sheets.stop()
        meta.stop()


def at_meta(meta_url: str) -> dict[str, Any]:
    """The fake's account: requests, most in flight at once, first request in to last answer
    out (its own clock)."""
    stats = httpx.get(meta_url + "/_fake/stats", timeout=60).json()
    log = httpx.get(meta_url + "/_fake/requests", timeout=60).json()["requests"]
    span = max(r["finished"] for r in log) - min(r["started"] for r in log) if log else 0.0
    return {
        "requests": stats["requests"],
        "events": stats["events"],
        "rejections": stats["rejections"],
        "peak_in_flight": stats["peak_in_flight"],
        "seconds": span,
    }


def measure_latency(root: Path, size: int = LATENCY_SIZE) -> dict[str, Any]:
    """The latency table's runs, one after another in this run."""
    out: dict[str, Any] = {"size": size, "latency_ms": LATENCY_MS, "load": os.getloadavg()}
    for key, in_flight, latency in (
        (f"ours_{IN_FLIGHT}", IN_FLIGHT, LATENCY_MS),
        ("ours_1", 1, LATENCY_MS),
        ("ours_at_once", IN_FLIGHT, 0),
    ):
        print(f"{size:,} leads at {latency} ms, {in_flight} in flight …", file=sys.stderr)
        out[key] = measure(
            "first", size, root, "--in-flight", str(in_flight), latency_ms=latency, account=True
        )
    for name, rows, batch in (("per_row", PER_ROW_SLICE, 1), ("sdk", SDK_SLICE, SDK_BATCH)):
        print(f"{name}: {rows:,} leads at {LATENCY_MS} ms …", file=sys.stderr)
        out[name] = measure(
            "baseline", rows, root, "--batch", str(batch), latency_ms=LATENCY_MS, account=True
        )
    return out


# ---- report ------------------------------------------------------------------------------------


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


def table(results: list[dict[str, Any]], baseline: dict[str, Any]) -> str:
    head = (
        "| leads | pass | wall s | events | events/s | Meta requests (⌈events/500⌉) "
        "| Sheets calls | peak RSS MB |\n|---:|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in results:
        for p in r["passes"]:
            by = ", ".join(f"{k} {v}" for k, v in sorted(p["sheets_by_method"].items()))
            lines.append(
                f"| {r['size']:,} | {p['pass']} | {p['seconds']:.2f} | {p['events']:,} "
                f"| {p['events_per_second']:,.0f} | {p['meta_requests']} "
                f"({p['expected_requests']}) | {p['sheets_calls']} ({by}) "
                f"| {p['peak_rss_mb']:.0f} |"
            )
    base = (
        f"\nBaseline, one POST per row ({baseline['rows']:,} rows with events, "
        f"{baseline['events']:,} events): {baseline['requests']:,} requests, "
        f"{baseline['seconds']:.2f} s, {baseline['events_per_second']:,.0f} events/s."
    )
    return head + "\n".join(lines) + "\n" + base


def verdicts(results: list[dict[str, Any]], ratio: float) -> list[str]:
    out = []
    big = next(r for r in results if r["size"] == max(SIZES))
    first, again = big["passes"][0], big["passes"][1]
    worst_steady = max(p["sheets_calls"] for r in results for p in r["passes"][1:])
    worst_first = max(r["passes"][0]["sheets_calls"] for r in results)
    exact = all(
        p["meta_requests"] == p["expected_requests"] and p["meta_rejections"] == 0
        for r in results
        for p in r["passes"]
    )
    peak = max(p["peak_rss_mb"] for r in results for p in r["passes"])

    def ok(cond: bool) -> str:
        return "met" if cond else "MISSED"

    out.append(
        f"- Sheets calls per pass ≤ 3: {ok(worst_steady <= 3)} for every pass after the first "
        f"(worst {worst_steady}); the first pass on a fresh sheet takes up to {worst_first} "
        "(see the note below)"
    )
    out.append(f"- Meta requests = ⌈events / {BATCH_SIZE}⌉, no rejection: {ok(exact)}")
    out.append(
        f"- 100,000-lead first pass < 30 s: {ok(first['seconds'] < 30)} "
        f"({first['seconds']:.1f} s, {first['events']:,} events)"
    )
    out.append(
        f"- 100,000-lead no-change pass < 5 s: {ok(again['seconds'] < 5)} "
        f"({again['seconds']:.1f} s)"
    )
    out.append(f"- peak memory < 500 MB: {ok(peak < 500)} ({peak:.0f} MB, bridge process)")
    out.append(f"- batching vs one POST per row (1,000 rows): {ratio:.0f}× faster")
    return out


def latency_rows(lat: dict[str, Any]) -> list[dict[str, Any]]:
    """The latency table's rows; the serial ways extrapolated from their slice to our events."""
    ours = lat["ours_" + str(IN_FLIGHT)]
    events = ours["events"]
    # What the pass does besides talking to Meta (read, plan, ledger, write-back), as measured
    # on ours; a serial way's whole pass is that plus its own time at Meta.
    rest = ours["seconds"] - ours["at_meta"]["seconds"]
    rows = []
    for key, way, latency in (
        (f"ours_{IN_FLIGHT}", f"ours, {IN_FLIGHT} in flight", LATENCY_MS),
        ("ours_1", "ours, one at a time (before this change)", LATENCY_MS),
        ("ours_at_once", f"ours, {IN_FLIGHT} in flight, Meta answering at once", 0),
    ):
        r = lat[key]
        rows.append(
            {
                "way": way,
                "latency": latency,
                "per_request": f"≤ {BATCH_SIZE}",
                "requests": r["at_meta"]["requests"],
                "in_flight": r["at_meta"]["peak_in_flight"],
                "at_meta": r["at_meta"]["seconds"],
                "pass": r["seconds"],
                "rss": r["peak_rss_mb"],
                "cpu": (r["cpu_seconds"], r["at_meta"]["cpu_seconds"]),
                "how": f"measured, {lat['size']:,} leads",
            }
        )
    for key, way, per, leads in (
        ("sdk", "Meta's Python SDK batching, serial", str(SDK_BATCH), SDK_SLICE),
        ("per_row", "one POST per row event", "1", PER_ROW_SLICE),
    ):
        r = lat[key]
        scale = events / r["events"]
        at_meta = r["at_meta"]["seconds"] * scale
        rows.append(
            {
                "way": way,
                "latency": LATENCY_MS,
                "per_request": per,
                "requests": round(r["requests"] * scale),
                "in_flight": r["at_meta"]["peak_in_flight"],
                "at_meta": at_meta,
                "pass": rest + at_meta,
                "rss": None,
                "cpu": None,
                "how": (
                    f"{leads:,}-lead slice ({r['events']:,} events, {r['requests']:,} "
                    f"requests, {r['at_meta']['seconds']:.1f} s at Meta) × {scale:,.1f}"
                ),
            }
        )
    return rows


def latency_section(lat: dict[str, Any]) -> str:
    """The latency table and its verdict, between markers so `--latency-only` can replace it."""
    rows = latency_rows(lat)
    ours, serial, at_once = rows[0], rows[1], rows[2]
    head = (
        "| way | Meta's latency ms | events per request | requests | most in flight "
        "| time at Meta s | whole first pass s | peak RSS MB | CPU s: bridge / fake Meta | how |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        estimated = r["rss"] is None
        rss = "" if estimated else f"{r['rss']:.0f}"
        cpu = "" if r["cpu"] is None else f"{r['cpu'][0]:.0f} / {r['cpu'][1] or 0:.0f}"
        lines.append(
            f"| {r['way']} | {r['latency']} | {r['per_request']} | {r['requests']:,} "
            f"| {r['in_flight']} | {r['at_meta']:,.1f} | {'≈ ' if estimated else ''}"
            f"{r['pass']:,.1f} | {rss} | {cpu} | {r['how']} |"
        )
    wait_serial = ours["requests"] * LATENCY_MS / 1000
    verdict = "met" if ours["pass"] < 30 else "MISSED"
    load = ", ".join(f"{x:.1f}" for x in lat["load"])
    gap = (
        ""
        if ours["pass"] < 30
        else " What is left above 30 s is the CPU the pass needs on this machine at this load "
        "(the row with Meta answering at once), not waiting."
    )
    return f"""{LATENCY_BEGIN}
## At Meta's speed: {LATENCY_MS} ms per request

The fake Meta answers every request {LATENCY_MS} ms late (Meta's real round trip is ~100-300
ms); a {lat["size"]:,}-lead first pass (nothing sent before), each run in fresh processes, one
after another in the same run (load average {load} when it began, on {os.cpu_count()} cores).
"Time at Meta" is the fake's own log, first request in to last answer out. The serial ways are
timed the same way on a slice and extrapolated by events (× our {ours["requests"]:,} requests'
events); their whole pass is our pass's time outside Meta plus their time at Meta (≈). Meta's
SDK: `BatchProcessor(batch_size=50, concurrent_requests=4)` awaits each request before the next
(facebook_business/adobjects/serverside/batch_processor.py), so it is serial in effect. CPU:
the bridge process (the pass and its sending threads) and the fake Meta's process, which share
the machine's cores (Meta's own work would run on Meta's machines).

{head}{chr(10).join(lines)}

- {lat["size"]:,}-lead first pass at {LATENCY_MS} ms per request < 30 s: {verdict}
  ({ours["pass"]:.1f} s). The same pass with Meta answering at once took {at_once["pass"]:.1f} s:
  {LATENCY_MS} ms per request added {ours["pass"] - at_once["pass"]:.1f} s with {IN_FLIGHT} in
  flight and {serial["pass"] - at_once["pass"]:.1f} s one at a time ({ours["requests"]} requests
  are {wait_serial:.0f} s of waiting one at a time, {wait_serial / IN_FLIGHT:.0f} s
  {IN_FLIGHT} at a time).{gap}
{LATENCY_END}"""


def write_latency_section(section: str, path: Path) -> bool:
    """Replace the latency section of an existing RESULTS.md (`--latency-only`)."""
    if not path.exists():
        return False
    text = path.read_text()
    if LATENCY_BEGIN not in text or LATENCY_END not in text:
        return False
    before, rest = text.split(LATENCY_BEGIN, 1)
    after = rest.split(LATENCY_END, 1)[1]
    path.write_text(before + section + after)
    return True


def write_results(
    results: list[dict[str, Any]],
    baseline: dict[str, Any],
    ratio: float,
    path: Path,
    latency: str = "",
) -> str:
    m = machine()
    first_big = next(r for r in results if r["size"] == max(SIZES))["passes"][0]
    writes = first_big["sheets_by_method"].get("values.batchUpdate", 0)
    appends = first_big["sheets_by_method"].get("values.append", 0)
    text = f"""# Sync scale benchmark

Written by `make bench` (`bench/sync_scale.py`) on {m["date"]}.

Machine: {m["cores"]} cores, {m["cpu"]}, {m["ram"]} RAM, Python {m["python"]}, {m["os"]};
load average {m["load"]} (1, 5, 15 min) when the run ended: the machine is shared.

Setup: the Sheets emulator and the fake Meta each run in their own subprocess on loopback
(threaded werkzeug); the bridge runs in a fresh subprocess per sheet size, so peak RSS is the
bridge's own for that size. Leads have e-mails, phones in six formats (some number cells),
15–17 digit lead ids as text on 60 % of rows, statuses across the funnel (New 40 %, MQL 20 %,
SQL 14 %, Opportunity 8 %, Customer 5 %, Disqualified 8 %, On hold 3 %, blank 2 %), created and
changed within the last 6 days. A lead at a later stage owes every earlier stage too
(docs/meta-events.md), so events > leads. Batch size {BATCH_SIZE}. The ledger is SQLite on local
disk.

Passes: **first** (nothing sent before: every due event goes), **no change** (the same sheet
again), **steady** ({EDITS_IN_STEADY_PASS} leads moved to Customer, then a pass).

{table(results, baseline)}

Ratio: the batched pass on the same 1,000 rows sends {ratio:.0f}× more events per second than
one POST per row (the Apps Script baseline).

## Against the targets

{chr(10).join(verdicts(results, ratio))}

{latency}

## Profiled: the first pass at 150 ms per request (100,000 leads, same machine, 2026-12-03)

cProfile of the pass thread (which slows it: 75 s wall, 66 s CPU; the fake Meta used 5.6 s):
reading and typing the sheet 5.3 s, planning 30.8 s, sending 24.6 s, write-back 11.7 s. Of the
sending, the ledger's writes are 14.4 s (marking each request's events `sending` 8.2 s,
recording Meta's answers 6.2 s: SQLite `executemany` with a JSON encoding of each lead's
user_data), the row reports 5.7 s, and waiting for Meta's answers only 3.5 s: with 4 requests
in flight the 56 s of waiting one at a time are almost all hidden behind work the pass does
anyway. So the 30 s target is missed on this machine for CPU, the same as with Meta answering
at once (the table's third row): planning (phonenumbers, hashing) and the ledger's writes, not
Meta's latency. The sending threads build and encode each request's payload; the ledger and
the reports stay on the pass's thread, each answer recorded before the request holding the
same lead's next stage leaves.

## Profiled and fixed (100,000 leads, same machine, 2026-11-26)

Tools: pyinstrument for time, tracemalloc snapshots and RSS read at each progress step for
memory. Two rounds; figures are for 100,000 leads.

**Round 1.** Before any fix (emulator backed by its data file then): first pass 43.5 s,
no-change pass 8.5 s, peak RSS 976 MB, Sheets calls 17 on the first pass (one 28 MB
`values.append` of the CAPI Log, over Google's advised 2 MB) and 2 on the no-change pass.
Causes: `config.stage_map` rebuilt for every row while rendering reports (~2.5 s a pass); a
slow Unicode scan of every ASCII cell before hashing (~2 s); the whole user_data JSON of every
event held in a list before one `executemany` (~100 MB); one user_data dict copied per event;
one A1 range per row in the write-back (100,000 ranges); the CAPI Log tab discovered by a
failing append plus a second `spreadsheets.get`; the emulator rewriting its whole data file
after each write call (its cost, not the bridge's: the bench runs it in memory). After: first
pass 27.3 s, no-change pass 7.1 s (MISSED), peak RSS 941 MB (MISSED).

**Round 2.** After: first pass ~25 s, no-change pass ~4 s, peak RSS ~440 MB (the table above);
the bridge process for 1,000 leads went from 181 MB to ~70 MB. Causes, and what changed:
- googleapiclient renders a docstring for every method from the discovery schema each time a
  resource is built: 70 MB of RSS on the first `spreadsheets()`, ~20 MB more on each later one
  (one per request) until the cyclic collector ran (googleapis/google-api-python-client#2779,
  open). The renderer is blanked on our own service and its resources are built once; a test
  pins the saving.
- The cyclic collector walked millions of live objects (cells, records, reports) over and over:
  about half of the no-change pass. It is now off while a phase builds them, and what a phase
  built is frozen until the pass ends (`sync/run.py` `gc_paused`); Meta sends stay outside.
- Every event's payload dict (~190,000) lived for the whole pass, ~150 MB: a planned event now
  keeps the parts and builds its payload when sent.
- The read table, the typed lead rows, the plan and every report were all alive at the end:
  now the table shrinks to its bridge cells after typing, the lead rows go after planning, and
  a lead's report is written as soon as Meta has answered its last event, its planned events
  let go (the plan shrinks as the reports grow).
- One hash string per row for repeated names and cities (~300,000 copies): now one per
  distinct value; one match-keys object per shape of identifiers.
- Report events and bridge cells as dicts, CAPI Log lines as a separate list (~100 MB): now
  tuples, and log lines are generated while they are appended, 2 MB at a time.
- The write-back split measured bodies as UTF-8, but googleapiclient sends JSON's ASCII
  escapes (an emoji is 12 bytes on the wire, not 4): bodies with non-Latin text could exceed
  2 MB. Now measured as sent (found on the way; a test pins it).

## Left to do

- The first pass on a fresh large sheet makes more than 3 Sheets calls (see below): the 2 MB
  rule is kept rather than the count.
- The no-change pass is still proportional to the sheet (~1 s read and typing, ~1 s ledger
  history, ~1 s planning, ~1 s reports at 100,000 leads). A fingerprint per row in the ledger
  would make it proportional to what changed; not needed for the target, so not built.
- phonenumbers (parse + is_valid_number, one per lead) is about a quarter of the first pass.
- The ledger's writes while sending (marking and recording ~190,000 events, ~14 s of a
  100,000-lead first pass under the profiler on 2026-12-03) run on the pass's thread, between
  Meta's answers. Planning could also overlap sending (the first requests could leave before
  the last lead is planned) if the oldest-first order were given up; neither is built.

## Sheets calls, in detail

- A pass reads the tab with one `values.get`; the spreadsheet's time zone comes from one
  `spreadsheets.get` that is cached for 15 minutes per process (cold in each fresh bench
  process, so the first pass counts it).
- It writes the bridge columns with `values.batchUpdate` (RAW) and appends to the `CAPI Log`
  tab with one `values.append`; the first pass on a sheet also creates that tab
  (`spreadsheets.batchUpdate` addSheet).
- The first pass of 100,000 leads writes five bridge cells on every row, more than the 2 MB per
  request Google advises (developers.google.com/sheets/api/limits), so the write is split into
  {writes} `values.batchUpdate` calls of
  ≤ 2 MB each, and its CAPI Log rows (one per event sent) into {appends} `values.append` calls
  of ≤ 2 MB. That is why the first pass exceeds 3 calls at that size (5 on a fresh sheet below
  ~5,000 events); the 2 MB rule is kept rather than the count. Every later pass writes only the
  rows that changed: the no-change pass is a single read, a pass that sends is read + write +
  log append = 3.
- Meta requests count POSTs at the fake; events/s on the "no change" and "steady" rows are
  diluted by the whole-sheet read and plan (few events, same fixed cost).
- Loopback has no network latency. Against graph.facebook.com every request also costs a round
  trip (~100–300 ms), so one POST per row (1,823 requests for 1,000 rows) would take minutes
  where the batched pass makes 4 requests; the ratio above is CPU-bound and understates that.
"""
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "DATA"))
    parser.add_argument("--child", choices=["passes", "baseline", "first"])
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help=f"only the table at {LATENCY_MS} ms per request (rewrites its section of RESULTS.md)",
    )
    parser.add_argument("--latency-size", type=int, default=LATENCY_SIZE)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    if args.child == "passes":
        print(json.dumps(run_size(args.size, args.dir)))
        return
    if args.child == "baseline":
        print(json.dumps(run_baseline(args.dir, args.batch)))
        return
    if args.child == "first":
        print(json.dumps(run_first_pass(args.dir, args.in_flight)))
        return

    path = Path(__file__).with_name("RESULTS.md")
    sizes = [] if args.latency_only else [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="sheet-bridge-bench-") as tmp:
        root = Path(tmp)
        for size in sizes:
            print(f"{size:,} leads …", file=sys.stderr, flush=True)
            results.append(measure("passes", size, root))
        if sizes:
            print(f"baseline: one POST per row on {BASELINE_ROWS:,} rows …", file=sys.stderr)
            baseline = measure("baseline", BASELINE_ROWS, root)
        latency = measure_latency(root, args.latency_size)
    section = latency_section(latency)
    if args.latency_only:
        print(section)
        if args.latency_size == LATENCY_SIZE and write_latency_section(section, path):
            print(f"\nrewrote the latency section of {path}")
        return
    small = next((r for r in results if r["size"] == BASELINE_ROWS), None)
    if small is None:
        small = {"passes": [{"events_per_second": float("nan")}]}
    ratio = small["passes"][0]["events_per_second"] / baseline["events_per_second"]
    print(table(results, baseline))
    print(f"\nratio (batched / one POST per row, events/s): {ratio:.0f}×\n")
    print(section)
    if set(SIZES) <= set(sizes) and args.latency_size == LATENCY_SIZE:
        write_results(results, baseline, ratio, path, section)
        print("\n".join(verdicts(results, ratio)))
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
