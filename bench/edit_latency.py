"""Edit latency benchmark: one status edit → its event at the fake Meta, at 1,000 and 100,000 leads.

Run with `make bench` (after bench/sync_scale.py) or `python bench/edit_latency.py`. Prints a
table and writes the "Edit latency" section of bench/RESULTS.md (between its markers).

How it measures:
- The Sheets emulator (in memory) and the fake Meta run in their own subprocesses on loopback.
  The fake Meta is wrapped so each events POST of the timed edits first waits META_LATENCY_MS
  (Meta's answer time over the internet; issue 14 takes 150 ms) and then records when it
  answered: that moment is "the event is at Meta".
- The bridge and the real Flask app (test client, no HTTP in front) run in a fresh subprocess
  per sheet size and per code version: this one, and "before", the same benchmark against
  the code of BEFORE_REF (extracted with git archive) sending the one-row form
  its add-on sent. Same sheet, same servers' code, same run.
- Each size: a first sync (every lead sent, untimed), then EDITS edits, each moving one lead
  from New to MQL in the sheet and then posting /api/edits. Timed from just before the POST:
  edit → event (the fake Meta's answer) and edit → answer (the POST returns, write-back done).
- Sheets calls per edit come from the emulator's counter, reset just before each POST.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import sync_scale  # the bench's sheet, config and servers

SIZES = (1_000, 100_000)
META_LATENCY_MS = 150.0
EDITS = 10
EDITS_BEFORE_AT_100K = 4  # the code before re-reads the whole tab on each edit (seconds each)
SECRET = "bench-edit-latency-shared-secret-0123456789"
TARGET_MS = 300.0
MARK_START = "<!-- edit-latency:start -->"
MARK_END = "<!-- edit-latency:end -->"


# ---- the slow fake Meta (child mode) -------------------------------------------------------


def serve_meta(latency_ms: float) -> None:
    """The fake Meta, each events POST answered `latency_ms` later once POST /_bench/slow
    asks for it (the untimed first sync goes at loopback speed), with its answer times kept
    for GET /_bench/answered (cleared by POST /_bench/reset)."""
    from werkzeug.serving import make_server

    from sheet_bridge.local.fake_meta import create_fake_meta

    fake = create_fake_meta(access_token=sync_scale.TOKEN, pixel_ids=[sync_scale.PIXEL])
    answered: list[float] = []
    lock = threading.Lock()
    slow = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == "/_bench/answered":
            with lock:
                body = json.dumps({"answered": answered}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path in ("/_bench/reset", "/_bench/slow"):
            with lock:
                answered.clear()
            if path == "/_bench/slow":
                slow.set()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        events_post = method == "POST" and path.endswith("/events")
        if events_post and slow.is_set():
            time.sleep(latency_ms / 1000)
        result = b"".join(fake(environ, start_response))
        if events_post:
            with lock:
                answered.append(time.time())
        return [result]

    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


class MetaServer:
    def __init__(self, latency_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-meta", str(latency_ms)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# ---- one size, one code version (child mode) ------------------------------------------------


def run_edits(version: str, size: int, workdir: Path, edits: int) -> dict[str, Any]:
    """Child mode: a first sync, then `edits` timed edits through the app."""
    from sheet_bridge.sheets.client import SheetsClient
    from sheet_bridge.web.app import create_app

    sheets_url, meta_url = os.environ["BENCH_SHEETS_URL"], os.environ["BENCH_META_URL"]
    in_flight = sync_scale.IN_FLIGHT if version == "after" else None
    bridge = sync_scale.child_bridge(workdir, with_capi=True, in_flight=in_flight)
    app = create_app(bridges=[bridge], environ={"BENCH_SECRET": SECRET})
    client = app.test_client()
    auth = {"Authorization": f"Bearer {SECRET}"}
    ref = {"spreadsheet_id": sync_scale.SHEET_ID, "tab": sync_scale.TAB}

    started = time.perf_counter()
    body: dict[str, Any] = {"spreadsheet_id": sync_scale.SHEET_ID}
    if version == "after":
        body["wait"] = 25  # the code before answered only when the pass ended
    first = client.post("/api/sync", json=body, headers=auth)
    if first.status_code == 202:  # a pass longer than the wait: follow it to its end
        pass_id = first.get_json()["pass_id"]
        while first.get_json()["state"] == "running":
            time.sleep(0.5)
            first = client.get(f"/api/passes/{pass_id}", headers=auth)
    first_seconds = time.perf_counter() - started
    if first.status_code != 200 or first.get_json().get("state") in ("failed", "lost"):
        raise SystemExit(f"first sync: {first.status_code} {first.get_data(as_text=True)[:500]}")

    sheet = SheetsClient(bridge.config.sheets)
    table = sheet.read_table()
    status_col = table.header.index("Lead Status")
    key_col = table.header.index("CAPI Key")
    new_rows = [
        (table.row_number(i), str(r[key_col]))
        for i, r in enumerate(table.rows)
        if len(r) > key_col and r[status_col] == "New"
    ]
    step = max(len(new_rows) // edits, 1)
    chosen = new_rows[::step][:edits]
    del table
    httpx.post(meta_url + "/_bench/slow").raise_for_status()  # Meta's speed from here on

    measured = []
    for row, key in chosen:
        sheet.write_cells([(row, status_col, "MQL")])  # the person's edit, before the trigger
        httpx.post(sheets_url + "/_emulator/stats/reset").raise_for_status()
        httpx.post(meta_url + "/_bench/reset").raise_for_status()
        at = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
        if version == "before":
            body = {**ref, "row": row, "old_value": "New", "new_value": "MQL", "at": at}
        else:
            body = {**ref, "at": at, "rows": [{"row": row, "status": "MQL", "key": key}]}
        t0 = time.time()
        answer = client.post("/api/edits", json=body, headers=auth)
        t1 = time.time()
        if answer.status_code != 200:
            raise SystemExit(f"edit: {answer.status_code} {answer.get_data(as_text=True)[:500]}")
        # The edit is answered before Meta is (its send runs in the background): wait for it.
        deadline = time.time() + 30
        while not (answered := httpx.get(meta_url + "/_bench/answered").json()["answered"]):
            if time.time() > deadline:
                break
            time.sleep(0.02)
        calls = httpx.get(sheets_url + "/_emulator/stats").json()
        if not answered:
            raise SystemExit(f"edit of row {row}: no event reached the fake Meta")
        measured.append(
            {
                "row": row,
                "to_event_ms": (min(answered) - t0) * 1000,
                "to_answer_ms": (t1 - t0) * 1000,
                "meta_requests": len(answered),
                "sheets_calls": calls.pop("total"),
                "sheets_by_method": calls,
            }
        )
    return {
        "version": version,
        "size": size,
        "first_sync_seconds": first_seconds,
        "edits": measured,
    }


# ---- orchestration ---------------------------------------------------------------------------


# The version before edits cost what they change: main on 2026-12-03 after the ledger became
# a package (the bench builds its bridge with those names), before /api/edits changed.
BEFORE_REF = "0d57928"


def before_source(root: Path) -> tuple[Path, str] | None:
    """The code of BEFORE_REF, extracted under `root`."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", BEFORE_REF],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "sheet_bridge"],
            cwd=repo,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    target = root / "before"
    target.mkdir()
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target, commit[:10]


def measure(version: str, size: int, root: Path, source: Path | None) -> dict[str, Any]:
    workdir = root / f"{version}-{size}"
    workdir.mkdir()
    data_path = workdir / "sheets.json"
    data_path.write_text(
        json.dumps(sync_scale.sheet_data(sync_scale.lead_rows(size, datetime.now(UTC))))
    )
    sheets, meta = sync_scale.Server("sheets", data_path), MetaServer(META_LATENCY_MS)
    edits = EDITS if version == "after" or size < 10_000 else EDITS_BEFORE_AT_100K
    env = {**os.environ, "BENCH_SHEETS_URL": sheets.url, "BENCH_META_URL": meta.url}
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                version,
                "--size",
                str(size),
                "--dir",
                str(workdir),
                "--edits",
                str(edits),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        sheets.stop()
        meta.stop()
    if out.returncode != 0:
        raise SystemExit(f"{version} {size} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    edits = result["edits"]
    to_event = sorted(e["to_event_ms"] for e in edits)
    methods: dict[str, int] = {}
    for e in edits:
        for name, n in e["sheets_by_method"].items():
            methods[name] = methods.get(name, 0) + n
    return {
        "n": len(edits),
        "event_median": statistics.median(to_event),
        "event_max": to_event[-1],
        "answer_median": statistics.median(e["to_answer_ms"] for e in edits),
        "calls": {k: v / len(edits) for k, v in sorted(methods.items())},
        "calls_total": sum(e["sheets_calls"] for e in edits) / len(edits),
    }


def table(results: list[dict[str, Any]], before_commit: str | None) -> str:
    head = (
        "| leads | code | edits | edit → event at Meta, median (max) ms | edit → answer, "
        "median ms | Sheets calls per edit |\n|---:|---|---:|---:|---:|---|\n"
    )
    names = {"before": f"before ({before_commit}, one-row form)", "after": "this version"}
    lines = []
    for r in results:
        s = summary(r)
        calls = ", ".join(f"{k} {v:g}" for k, v in s["calls"].items())
        lines.append(
            f"| {r['size']:,} | {names[r['version']]} | {s['n']} | {s['event_median']:.0f} "
            f"({s['event_max']:.0f}) | {s['answer_median']:.0f} | {s['calls_total']:g} "
            f"({calls}) |"
        )
    return head + "\n".join(lines)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in results:
        if r["version"] != "after":
            continue
        s = summary(r)
        met = "met" if s["event_max"] < TARGET_MS else "MISSED"
        out.append(
            f"- {r['size']:,} leads: edit → event < {TARGET_MS:.0f} ms: {met} (median "
            f"{s['event_median']:.0f} ms, worst {s['event_max']:.0f} ms; "
            f"{META_LATENCY_MS:.0f} ms of it is Meta's)"
        )
    return out


def section(results: list[dict[str, Any]], before_commit: str | None, machine: str) -> str:
    return f"""{MARK_START}
## Edit latency (issue 14: an edit costs what it changes)

Written by `bench/edit_latency.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ({machine}).

One status edit (a lead moved from New to MQL) through the real Flask app, timed from the
POST /api/edits to the moment the fake Meta answered the event's request; the fake Meta takes
{META_LATENCY_MS:.0f} ms per request (Meta's answer time over the internet). Each size: a first
sync of every lead, then the edits, on leads spread over the sheet. "before" is the code this
branch started from, run in the same run against the same sheet and servers, with the one-row
body its add-on sent.

{table(results, before_commit)}

{chr(10).join(verdicts(results))}

Before, an edit read the whole tab (`values.get`), typed every row and loaded every lead's
history to send one lead's event, so its cost grew with the sheet. Now it reads the header and
the edited rows with one `values.batchGet`, loads only those leads' history, and writes only
their cells: 1 read + 2 writes (bridge cells, CAPI Log) per edit that sends, at any size.

Profiled (cProfile, 100,000 leads, 2026-12-03): the first version of the partial pass still
took 407 ms median (449 worst) at 100,000 leads. 344 ms of each edit went to the ledger's
`unreadable()`, which scans every stored transition of the tab for unusable times; an edit's
pass now leaves that to the next full pass (its history query skips such records anyway; a
full pass still pays ~0.3 s for it at this size). The emulator measured the widest of its
100,000 rows on every range it read (~10 ms each); it now keeps that until the next write.
The CAPI Log append after the send (edit → answer, not edit → event) also measured every log
line in the emulator; it no longer copies each one.
{MARK_END}"""


def write_section(text: str, path: Path) -> None:
    """Put the section in RESULTS.md, replacing the previous one (sync_scale.py writes the rest)."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_START in old and MARK_END in old:
        start = old.index(MARK_START)
        end = old.index(MARK_END) + len(MARK_END)
        new = old[:start] + text + old[end:]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve-meta", type=float)
    parser.add_argument("--child", choices=["before", "after"])
    parser.add_argument("--size", type=int, default=0)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--edits", type=int, default=EDITS)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--no-before", action="store_true", help="measure this version only")
    args = parser.parse_args()
    if args.serve_meta is not None:
        serve_meta(args.serve_meta)
        return
    if args.child:
        print(json.dumps(run_edits(args.child, args.size, args.dir, args.edits)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="sheet-bridge-edit-bench-") as tmp:
        root = Path(tmp)
        before = None if args.no_before else before_source(root)
        for size in sizes:
            runs: list[tuple[str, Path | None]] = [("after", None)]
            if before is not None:
                runs.insert(0, ("before", before[0]))
            for version, source in runs:
                print(f"{size:,} leads, {version} …", file=sys.stderr, flush=True)
                results.append(measure(version, size, root, source))
    commit = before[1] if before is not None else None
    print(table(results, commit))
    print("\n".join(verdicts(results)))
    if set(SIZES) <= set(sizes):
        m = sync_scale.machine()
        text = section(results, commit, f"{m['cores']} cores, {m['cpu']}, Python {m['python']}")
        write_section(text, Path(__file__).with_name("RESULTS.md"))
        print(f"\nwrote the edit latency section of {Path(__file__).with_name('RESULTS.md')}")


if __name__ == "__main__":
    main()
