"""`sheet-bridge demo`: a local sheet of realistic leads, the emulator, the fake Meta, one sync."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sheet_bridge.config import BridgeConfig, parse_config
from sheet_bridge.local import demo_leads as demo
from sheet_bridge.local.fake_meta import FakeMetaState, create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from sheet_bridge.sheets.client import SheetsClient
from sheet_bridge.sheets.table import col_letter
from sheet_bridge.sync.ledger import SqliteLedger
from sheet_bridge.sync.outcomes import RowReport, pass_words
from sheet_bridge.sync.run import Bridge, SyncResult, capi_client, utc_now

SHEETS_PORT = 8085
META_PORT = 8086
BACKEND_PORT = 8080

CONFIG_TEMPLATE = """\
# Written by `sheet-bridge demo`: the demo sheet in the local emulator → the fake Meta.
# Start both by hand and sync (see docs/local-stand-ins.md):
#   sheet-bridge emulate sheets --data {data_dir}/sheets.json --port {sheets_port}
#   sheet-bridge emulate meta --port {meta_port} --record {data_dir}/meta-events.jsonl
#   META_CAPI_TOKEN={token} sheet-bridge sync --config {data_dir}/bridge.toml

[sheets]
spreadsheet_id = "{spreadsheet_id}"
tab = "{tab}"
api_endpoint = "http://127.0.0.1:{sheets_port}"
credentials = "anonymous"

[meta]
pixel_id = "{pixel_id}"
access_token_env = "META_CAPI_TOKEN"
graph_url = "http://127.0.0.1:{meta_port}"
api_version = "v25.0"
action_source = "system_generated"
lead_event_source = "Google Sheets"
default_country = "IN"
currency = "INR"

[server]
shared_secret_env = "SHEET_BRIDGE_SECRET"
ledger = "sheet-bridge.db"

[sync]
# The demo sends an edit at once so the grid shows it; a real bridge waits settle_seconds
# (default 120) first, so a mis-click changed back sends nothing (docs/edits.md).
settle_seconds = 0

[columns]
status = "Lead Status"
status_changed_at = "Status Changed At"
created_at = "Created At"
email = "Email"
phone = "Phone"
first_name = "First Name"
last_name = "Last Name"
city = "City"
country = "Country"
lead_id = "Leadgen ID"
pixel_event_id = "Event ID"
value = "Deal Value"

[[stages]]
status = ["New", "New Lead"]
event = "Lead"
value = 100

[[stages]]
status = "MQL"
event = "QualifiedLead"   # not one of Meta's 17: a deliberate Conversion Leads stage name
custom = true
value = 1000

[[stages]]
status = "SQL"
event = "Schedule"
value = 5000

[[stages]]
status = "Opportunity"
event = "StartTrial"
value = 20000

[[stages]]
status = ["Customer", "Won"]
event = "Purchase"
value = 50000

[[stages]]
status = "On hold"
event = "Contact"
send = false

[[stages]]
status = ["Disqualified", "Junk"]
event = "Disqualified"
custom = true
negative = true
"""


@dataclass
class DemoEnvironment:
    """The running pieces of a demo: emulator, fake Meta, and a bridge wired to them."""

    data_dir: Path
    config: BridgeConfig
    bridge: Bridge
    sheets_url: str
    meta_url: str
    # The fake Meta's own record of each request and its answer (GET /_fake/requests).
    fake_meta: FakeMetaState

    def meta_answers(self, since: int = 0) -> list[dict[str, Any]]:
        """What the fake Meta answered to each events request from the `since`-th on: HTTP
        status and body (events_received and fbtrace_id, or Meta's error)."""
        with self.fake_meta.lock:
            log = list(self.fake_meta.request_log[since:])
        return [{"status": e["status"], **e["answer"]} for e in log if "answer" in e]


def write_config(data_dir: Path) -> Path:
    path = data_dir / "bridge.toml"
    if not path.exists():
        path.write_text(
            CONFIG_TEMPLATE.format(
                data_dir=data_dir,
                sheets_port=SHEETS_PORT,
                meta_port=META_PORT,
                token=demo.DEMO_TOKEN,
                spreadsheet_id=demo.DEMO_SPREADSHEET_ID,
                tab=demo.DEMO_TAB,
                pixel_id=demo.DEMO_PIXEL_ID,
            )
        )
    return path


# How the demo's Created At column shows its date-time serials, as a sheet whose column was
# given Format → Number → Date time (https://developers.google.com/sheets/api/guides/formats).
CREATED_AT_FORMAT = {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"}


def seed_sheet(path: Path, rows: list[list[object]], dated_rows: int = 0) -> None:
    """The demo spreadsheet: `rows` (header first), and the Created At column formatted as a
    date-time down to row `dated_rows` (so rows added later show dates too)."""
    col = col_letter(demo.HEADER.index("Created At"))
    formats = {f"{col}{r}": CREATED_AT_FORMAT for r in range(2, max(dated_rows, len(rows)) + 1)}
    data = {
        "spreadsheets": {
            demo.DEMO_SPREADSHEET_ID: {
                "title": "Leads (sheet-bridge demo)",
                "timeZone": demo.DEMO_TIME_ZONE,
                "sheets": {demo.DEMO_TAB: rows},
                "formats": {demo.DEMO_TAB: formats},
            }
        }
    }
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False))


@contextmanager
def demo_environment(
    data_dir: Path,
    *,
    sheets_port: int = 0,
    meta_port: int = 0,
    clock: Callable[[], datetime] | None = None,
) -> Iterator[DemoEnvironment]:
    """Start the emulator on the data dir's sheets.json and the fake Meta (port 0 = any free
    port; a port another program holds = any free port too), and build a bridge for them from
    the data dir's bridge.toml."""
    config_path = write_config(data_dir)
    with ExitStack() as stack:
        sheets = stack.enter_context(
            BackgroundServer(
                create_emulator(data_path=data_dir / "sheets.json"), port=sheets_port, or_free=True
            )
        )
        fake_meta = create_fake_meta(
            access_token=demo.DEMO_TOKEN,
            pixel_ids=[demo.DEMO_PIXEL_ID],
            record=data_dir / "meta-events.jsonl",
        )
        meta = stack.enter_context(BackgroundServer(fake_meta, port=meta_port, or_free=True))
        config = _local_config(config_path, sheets.url, meta.url)
        ledger = SqliteLedger(config.ledger_location({}))
        stack.callback(ledger.close)
        capi = capi_client(config.meta, demo.DEMO_TOKEN)
        stack.callback(capi.close)
        bridge = Bridge(
            config,
            sheets=SheetsClient(config.sheets),
            ledger=ledger,
            capi=capi,
            clock=clock or utc_now,
        )
        yield DemoEnvironment(
            data_dir, config, bridge, sheets.url, meta.url, fake_meta.extensions["fake_meta"]
        )


def _local_config(path: Path, sheets_url: str, meta_url: str) -> BridgeConfig:
    import tomllib

    data: dict[str, Any] = tomllib.loads(path.read_text())
    data["sheets"]["api_endpoint"] = sheets_url
    data["meta"]["graph_url"] = meta_url
    return parse_config(data, source=str(path))


@dataclass
class DemoOutcome:
    fresh: bool
    yesterday: SyncResult | None
    today: SyncResult
    edits: int
    new_rows: int
    meta_events: int
    custom_names: dict[str, int]
    # What the fake Meta answered to today's requests (DemoEnvironment.meta_answers).
    meta_answers: list[dict[str, Any]]


def run_demo(data_dir: Path, *, now: datetime | None = None) -> DemoOutcome:
    """Seed (first run only), replay yesterday's sync and today's edits, then sync now."""
    data_dir.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(UTC)
    sheet_file = data_dir / "sheets.json"
    fresh = not sheet_file.exists()
    day = demo.demo_day(now)
    if fresh:
        for stale in (
            "sheet-bridge.db",
            "sheet-bridge.db-wal",
            "sheet-bridge.db-shm",
            "meta-events.jsonl",
        ):
            (data_dir / stale).unlink(missing_ok=True)
        seed_sheet(sheet_file, day.yesterday_rows, len(day.yesterday_rows) + len(day.new_rows))
    yesterday = None
    with demo_environment(data_dir) as env:
        bridge = env.bridge
        if fresh:
            real_clock = bridge.clock
            bridge.clock = lambda: now - timedelta(days=1)
            yesterday = bridge.sync(trigger="demo: yesterday's hourly sync")
            bridge.clock = real_clock
            _apply_today(env, day)
        before = len(env.fake_meta.request_log)
        today = bridge.sync(trigger="demo")
        answers = env.meta_answers(before)
    total, custom = recorded_events(data_dir / "meta-events.jsonl")
    return DemoOutcome(
        fresh,
        yesterday,
        today,
        len(day.edits) if fresh else 0,
        len(day.new_rows) if fresh else 0,
        total,
        custom,
        answers,
    )


def _apply_today(env: DemoEnvironment, day: demo.DemoDay) -> None:
    """What the sales team did since yesterday: status edits (each reported as the onEdit
    trigger does) and new leads arriving at the bottom of the sheet."""
    header = demo.HEADER
    status_col = header.index("Lead Status")
    changed_col = header.index("Status Changed At")
    cells: list[tuple[int, int, object]] = []
    for row, old, new, at in day.edits:
        cells.append((row, status_col, new))
        cells.append((row, changed_col, demo.stamp(at)))
        env.bridge.record_edit(row, old, new, at)
    first_new = len(day.yesterday_rows) + 1
    for i, values in enumerate(day.new_rows):
        cells.extend((first_new + i, col, v) for col, v in enumerate(values) if v != "")
    env.bridge.sheets.write_cells(cells)


def recorded_events(path: Path) -> tuple[int, dict[str, int]]:
    """Events the fake Meta accepted across demo runs (its --record file), and custom names."""
    from sheet_bridge.meta.events import STANDARD_EVENTS

    total, custom = 0, dict[str, int]()
    if path.exists():
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            total += 1
            name = json.loads(line).get("event_name", "")
            if name not in STANDARD_EVENTS:
                custom[name] = custom.get(name, 0) + 1
    return total, custom


# ---- printing ---------------------------------------------------------------------------

_RESULT_WORDS = {
    "sent": "sent",
    "failed": "FAILED",
    "expired": "expired",
    "baseline": "baseline",
    "invalid": "invalid",
    "skipped": "skipped",
    "already_sent": "up to date",
    "due": "due",
}


def lead_label(row: list[object], header: list[object]) -> str:
    """First name and last initial: enough to find the row, no full personal data printed."""

    def cell(name: str) -> str:
        i = header.index(name) if name in header else -1
        return str(row[i]).strip() if 0 <= i < len(row) and row[i] is not None else ""

    first, last = cell("First Name"), cell("Last Name")
    return (first + (f" {last[0]}." if last else "")).strip() or "(no name)"


def table_width() -> int | None:
    """The terminal's width when stdout is one; None (lines never cut) when it is a file, a
    pipe, a CI log or make's output, where the full reasons must stay readable."""
    if not sys.stdout.isatty():
        return None
    return max(100, shutil.get_terminal_size((140, 20)).columns)


def format_table(
    reports: Sequence[RowReport], labels: dict[int, str], width: int | None = None
) -> str:
    """One line per row: what this pass did for it (pass_words). `width` cuts each line to
    fit a terminal; None keeps every line whole."""
    lines = [f"{'Row':>4}  {'Lead':<14} {'Status':<15} {'Result':<10} What this sync did"]
    lines.append("-" * min(width or 120, 160))
    room = max(40, width - 48) if width else None
    for r in sorted(reports, key=lambda r: r.row):
        text = pass_words(r)
        if room is not None and len(text) > room:
            text = text[: room - 1] + "…"
        lines.append(
            f"{r.row:>4}  {labels.get(r.row, '')[:14]:<14} {r.status[:15]:<15} "
            f"{_RESULT_WORDS[r.outcome]:<10} {text}"
        )
    return "\n".join(lines)


def summary_line(counts: dict[str, int]) -> str:
    """Rows by outcome; every row is in one of them, so they add up to the rows read
    (a preview's due rows and an edit's pending rows only when there are some)."""
    order = ["sent", "already_sent", "pending", "expired", "baseline", "invalid", "skipped"]
    order += ["failed", "due"]
    words = {"already_sent": "up to date", "due": "would send"}
    shown = [k for k in order if k not in ("pending", "due") or counts.get(k)]
    shown += sorted(k for k in counts if k not in order and counts[k])
    return " · ".join(f"{words.get(k, k)} {counts.get(k, 0)}" for k in shown)


def cli_command(cwd: Path | None = None) -> str:
    """`sheet-bridge` as it can be typed here: the bare name when that is on PATH and is the
    one running (an activated venv, pipx), else the path of the one running, relative to the
    working directory when it is below it (`.venv/bin/sheet-bridge` after `make demo`)."""
    script = Path(sys.executable).parent / "sheet-bridge"
    if not script.is_file():  # not a console-script install: run the module
        return f"{shlex.quote(sys.executable)} -m sheet_bridge.cli"
    on_path = shutil.which("sheet-bridge")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "sheet-bridge"
    here = (cwd or Path.cwd()).resolve()
    try:
        return shlex.quote(str(script.absolute().relative_to(here)))
    except ValueError:
        return shlex.quote(str(script.absolute()))


def next_steps(data_dir: Path, *, serving: bool = False) -> str:
    """What to try after the demo, as commands that run as printed from here."""
    command = cli_command()
    check = (
        f"META_CAPI_TOKEN={demo.DEMO_TOKEN} {command} check --config "
        f"{shlex.quote(str(data_dir / 'bridge.toml'))} --offline"
    )
    if serving:
        return (
            f"Next: the playground below runs on this data: change a Lead Status cell, click "
            f"Sync now in the sidebar, watch the CAPI columns fill in. Afterwards: `{check}`."
        )
    serve = f"{command} demo --serve"
    if data_dir != Path("demo-data"):
        serve += f" --data-dir {shlex.quote(str(data_dir))}"
    return f"Next: `{check}`, or `{serve}` to edit cells and click Sync now in the real sidebar."


def meta_answer_lines(answers: list[dict[str, Any]]) -> list[str]:
    """The fake Meta's answer to each request of the pass, as it sent it."""
    lines = []
    for i, a in enumerate(answers, 1):
        if "error" in a:
            error = a["error"]
            words = (
                f"HTTP {a['status']}, error code {error.get('code')}: {error.get('message')} "
                f"(fbtrace_id {error.get('fbtrace_id')})"
            )
        else:
            words = (
                f"HTTP {a['status']}, events_received {a.get('events_received')}, "
                f"fbtrace_id {a.get('fbtrace_id')}"
            )
        lines.append(f"  request {i}: {words}")
    return lines


def render_outcome(outcome: DemoOutcome, data_dir: Path, *, serving: bool = False) -> str:
    sheet = json.loads((data_dir / "sheets.json").read_text())
    rows = sheet["spreadsheets"][demo.DEMO_SPREADSHEET_ID]["sheets"][demo.DEMO_TAB]
    header = rows[0]
    labels = {i + 1: lead_label(r, header) for i, r in enumerate(rows) if i > 0}
    today = outcome.today
    out = [
        f"sheet-bridge demo: {len(rows) - 1} leads in a local Google Sheets emulator, synced to "
        "a fake Meta. Nothing leaves this machine.",
        "",
    ]
    if outcome.fresh and outcome.yesterday is not None:
        first = outcome.yesterday
        baseline = sum(1 for r in first.rows if any(e[2] == "baseline" for e in r.event_states))
        out.append(
            f"Yesterday sheet-bridge was installed on this sheet. Its first sync sent "
            f"{first.events_sent} events, each at a time the sheet or the ledger can vouch for, "
            f"and recorded {baseline} imported leads as a baseline: "
            "their stages were reached before anyone could see when, so nothing was sent for "
            "them (no invented times); their changes from then on are sent."
        )
        out.append(
            f"Since then the sales team made {outcome.edits} status edits and "
            f'{outcome.new_rows} new leads arrived. Today\'s sync ("Sent now": sent by this '
            'sync; "At Meta before": sent by an earlier one):'
        )
    else:
        fresh = f"rm -rf {shlex.quote(str(data_dir))}"
        out.append(f"Sync on the existing demo data (run `{fresh}` for a fresh start):")
    out += ["", format_table(today.rows, labels, table_width()), ""]
    out.append(f"This sync, rows: {summary_line(today.counts)}")
    out.append(
        f"Sent {today.events_sent} events in {today.meta_requests} request(s) to the fake Meta, "
        f"which now holds {outcome.meta_events}; wrote {today.cells_written} cells back."
    )
    if outcome.meta_answers:
        out.append(
            "Meta answered (the fbtrace_id is in each sent row's CAPI Response cell and in the "
            "CAPI Log tab):"
        )
        out += meta_answer_lines(outcome.meta_answers)
    if today.events_sent == 0:
        out.append(
            "Nothing new to send: every lead's stages are already at Meta (or expired, or a "
            "baseline)."
        )
    if outcome.custom_names:
        names = ", ".join(f"{k} ({v})" for k, v in sorted(outcome.custom_names.items()))
        out.append(f"Custom (non-standard) event names Meta received: {names} — deliberate here.")
    out += [
        "",
        f"Files: {data_dir}/sheets.json (the sheet), {data_dir}/bridge.toml (its config), "
        f"{data_dir}/sheet-bridge.db (the ledger).",
        next_steps(data_dir, serving=serving),
    ]
    return "\n".join(out)


def outcome_json(outcome: DemoOutcome, data_dir: Path) -> dict[str, Any]:
    return {
        "fresh": outcome.fresh,
        "data_dir": str(data_dir),
        "yesterday": outcome.yesterday.to_json() if outcome.yesterday else None,
        "summary": outcome.today.to_json(),
        "edits": outcome.edits,
        "new_rows": outcome.new_rows,
        "meta_events": outcome.meta_events,
        "custom_event_names": outcome.custom_names,
        "meta_answers": outcome.meta_answers,
    }
