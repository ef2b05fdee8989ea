"""The `sheet-bridge` command: demo, sync, adopt, backup, check, report, audience, serve,
emulate."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TextIO

import click

from sheet_bridge import __version__
from sheet_bridge.config import BridgeConfig, ConfigError, load_config

if TYPE_CHECKING:
    from sheet_bridge.sync.ledger import LedgerBackend


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _pass_errors() -> Iterator[None]:
    """A pass or an adopt that could not run: one line and the exit code scripts rely on."""
    from sheet_bridge.sync.ledger import LedgerError, SyncBusy
    from sheet_bridge.sync.run import LedgerBehindSheet, SyncError

    try:
        yield
    except SyncBusy:
        _fail("another sync of this tab is running; try again in a minute", 3)
    except LedgerBehindSheet as exc:
        _fail(exc.for_operator, 1)  # the config's path as given, not its name alone
    except (SyncError, LedgerError) as exc:
        _fail(str(exc), 1)


def _load(path: str) -> BridgeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc))
        raise AssertionError from None  # unreachable: _fail exits


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sheet-bridge")
@click.option("-v", "--verbose", is_flag=True, help="Log what each step does (no PII, no token).")
def main(verbose: bool) -> None:
    """Send CRM lead stages from a Google Sheet to Meta's Conversions API."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-data"),
    show_default=True,
    help="Where the demo sheet, its config and the ledger live.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--serve", is_flag=True, help="Keep the playground up to edit cells by hand.")
@click.option(
    "--port",
    type=int,
    default=None,
    help=(
        "Playground port (with --serve; default 8080, or a free one when 8080 is taken; "
        "0: any free port)."
    ),
)
def demo(data_dir: Path, as_json: bool, serve: bool, port: int | None) -> None:
    """Seed a local sheet of realistic leads, sync it to a fake Meta, print what happened."""
    from sheet_bridge.local.demo import outcome_json, render_outcome, run_demo

    outcome = run_demo(data_dir)
    if as_json:
        click.echo(json.dumps(outcome_json(outcome, data_dir), indent=2))
    else:
        click.echo(render_outcome(outcome, data_dir, serving=serve))
    if serve:
        from sheet_bridge.local.playground import serve_playground

        serve_playground(data_dir, port=port)


class PassBar:
    """A pass's progress on a terminal: a click progress bar per phase (reading, sending,
    writing back), shown only once the pass has run `delay` seconds, so a short pass prints
    nothing. Written to `stream` (stderr), leaving stdout to the table or the JSON."""

    WORDS: ClassVar[dict[str, str]] = {
        "read": "Reading the sheet",
        "send": "Sending to Meta",
        "write": "Writing back",
    }

    def __init__(self, stream: TextIO, delay: float = 1.0) -> None:
        self.stream = stream
        self.delay = delay
        self.started = time.monotonic()
        self.phase: str | None = None
        self.bar: Any = None
        self.shown = 0

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self.phase:
            self.close()
            self.phase = phase
        if total <= 1 or time.monotonic() - self.started < self.delay:
            return
        if self.bar is None:
            label = self.WORDS.get(phase, phase)
            self.bar = click.progressbar(
                length=total, label=label, file=self.stream, show_pos=True, show_percent=True
            )
            self.bar.__enter__()
            self.shown = 0
        step = min(done, total) - self.shown
        if step > 0:
            self.bar.update(step)
            self.shown += step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def pass_bar(as_json: bool) -> PassBar | None:
    """The progress bar for a pass: None under --json and when stderr is not a terminal
    (a cron job's or a systemd timer's log gets the summary only)."""
    stream = sys.stderr
    return None if as_json or not stream.isatty() else PassBar(stream)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(), help="Bridge TOML.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Plan only: nothing is sent to Meta, written to the sheet or recorded of the leads "
    "(the ledger notes the preview pass; a ledger file that does not exist yet is not created).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--trigger",
    type=click.Choice(["cli", "hourly"]),
    default="cli",
    show_default=True,
    help="hourly: a scheduled pass (a systemd timer, cron); three failing in a row is an alert.",
)
def sync(config_path: str, dry_run: bool, as_json: bool, trigger: str) -> None:
    """One full pass over the sheet. Exit 0 when the pass ran (row failures are reported)."""
    from sheet_bridge.local.demo import format_table, summary_line, table_width
    from sheet_bridge.sync.run import Bridge

    config = _load(config_path)
    with _pass_errors(), contextlib.ExitStack() as scratch:
        ledger = _dry_run_ledger(config, scratch) if dry_run else None
        bridge = Bridge.from_config(config, ledger=ledger)
        if bridge.capi is None and not dry_run:
            _fail(
                f"the Meta access token is missing: set the environment variable "
                f"{config.meta.access_token_env} (generate a CAPI token in Events Manager), "
                "or use --dry-run"
            )
        bar = pass_bar(as_json)
        try:
            result = bridge.sync(dry_run=dry_run, trigger=trigger, progress=bar)
        finally:
            if bar is not None:
                bar.close()
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    labels = {r.row: r.lead_key for r in result.rows}
    click.echo(format_table(result.rows, labels, table_width()))
    click.echo("")
    click.echo(("Dry run: " if dry_run else "") + summary_line(result.counts))
    if dry_run:
        due = sum(1 for r in result.rows if r.outcome == "due")
        click.echo(
            f"{due} row(s) would send events; nothing was sent to Meta or written to the sheet."
        )
    else:
        click.echo(
            f"{result.events_sent} event(s) sent in {result.meta_requests} request(s); "
            f"{result.cells_written} cell(s) written back in {result.seconds:.1f} s."
        )
    for notice in result.notices:
        click.echo(f"warning: {notice}", err=True)


def _dry_run_ledger(config: BridgeConfig, scratch: contextlib.ExitStack) -> LedgerBackend | None:
    """A dry run over an SQLite ledger file that does not exist yet reads an empty ledger, as
    the first real sync will (it creates the file): a throwaway one, so the preview leaves no
    file behind. None: the configured ledger (it exists, or is a PostgreSQL database)."""
    import os
    import tempfile

    from sheet_bridge.config import is_ledger_url
    from sheet_bridge.sync.ledger import open_ledger

    location = config.ledger_location(os.environ)
    if is_ledger_url(location) or Path(location).exists():
        return None
    folder = scratch.enter_context(tempfile.TemporaryDirectory(prefix="sheet-bridge-dry-run-"))
    ledger = open_ledger(Path(folder) / "ledger.db")
    scratch.callback(ledger.close)
    return ledger


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(), help="Bridge TOML.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def adopt(config_path: str, as_json: bool) -> None:
    """Rebuild the ledger from the sheet's CAPI columns and CAPI Log (sends nothing)."""
    from sheet_bridge.sync.adopt import adopt_sheet
    from sheet_bridge.sync.run import Bridge

    config = _load(config_path)
    with _pass_errors():
        result = adopt_sheet(Bridge.from_config(config))
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else result.text())


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(), help="Bridge TOML.")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The copy to write (a new file).",
)
def backup(config_path: str, out_path: Path) -> None:
    """Copy the SQLite ledger while passes run (SQLite's online backup; PostgreSQL: pg_dump)."""
    from sheet_bridge.config import is_ledger_url
    from sheet_bridge.sync.ledger import SqliteLedger

    config = _load(config_path)
    location = config.ledger_location()
    if is_ledger_url(location):
        _fail(
            "the ledger is on PostgreSQL: back it up with pg_dump --format=custom "
            '(docs/operating.md "Backups")'
        )
    if not Path(location).exists():
        _fail(f"no ledger at {location}: nothing to back up")
    if out_path.exists():
        _fail(f"{out_path} exists: name a new file (a backup never overwrites one)")
    with _pass_errors():
        ledger = SqliteLedger(location)
        try:
            events = ledger.backup(out_path)
        finally:
            ledger.close()
    click.echo(f"Ledger copied to {out_path} ({events} events).")


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(), help="Bridge TOML.")
@click.option("--offline", is_flag=True, help="Check the file only; do not open the sheet.")
def check(config_path: str, offline: bool) -> None:
    """Before going live: config, columns, event names, token; what Meta will optimise on."""
    from sheet_bridge.checks import run_checks

    config = _load(config_path)
    report = run_checks(config, connect=not offline)
    click.echo(report.text())
    sys.exit(0 if report.ok else 1)


def _ledger_events(config: BridgeConfig) -> list[Any]:
    """The ledger's events for the config's tab (never another tab's); a missing ledger is an
    error, not a new file."""
    from sheet_bridge.config import is_ledger_url
    from sheet_bridge.sync.ledger import LedgerError, SheetTab, open_ledger

    location = config.ledger_location()
    if not is_ledger_url(location) and not Path(location).exists():
        _fail(
            f"no ledger at {location}: run a sync first, or point [server] ledger (or "
            "SHEET_BRIDGE_LEDGER) at the bridge's ledger file"
        )
    where = SheetTab(config.sheets.spreadsheet_id, config.sheets.tab)
    try:
        ledger = open_ledger(location)
        ledger.claim_legacy_rows(where)
        return list(ledger.events(where))
    except LedgerError as exc:
        _fail(str(exc), 1)
        raise AssertionError from None  # unreachable: _fail exits


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(), help="Bridge TOML.")
@click.option(
    "--chart",
    "chart_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the weekly chart here (SVG).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def report(config_path: str, chart_path: Path | None, as_json: bool) -> None:
    """Funnel report and advice from the ledger (no token, no network)."""
    from datetime import UTC, datetime

    from sheet_bridge.insights.chart import weekly_chart
    from sheet_bridge.insights.funnel import funnel_report

    if chart_path is not None and chart_path.suffix.lower() != ".svg":
        _fail(f"--chart {chart_path}: only SVG is written (no image libraries); use a .svg name")
    config = _load(config_path)
    result = funnel_report(_ledger_events(config), config, datetime.now(UTC))
    if chart_path is not None:
        chart_path.write_text(weekly_chart(result), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        click.echo(result.text())
    if chart_path is not None:
        click.echo(f"Chart written to {chart_path}", err=True)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(), help="Bridge TOML.")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The customer-list CSV to write.",
)
@click.option("--days", default=90, show_default=True, type=click.IntRange(min=1))
def audience(config_path: str, out_path: Path, days: int) -> None:
    """Junk audience: recently disqualified leads as a hashed Meta customer list (CSV)."""
    from datetime import UTC, datetime

    from sheet_bridge.insights.audience import junk_audience

    config = _load(config_path)
    result = junk_audience(_ledger_events(config), config, datetime.now(UTC), days=days)
    result.write(out_path)
    click.echo(result.text(out_path))


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True),
    help="One bridge TOML, or a folder of them (one per sheet tab).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True)
def serve(config_path: str, host: str, port: int) -> None:
    """Run the backend the Apps Script sidebar calls (use gunicorn in production)."""
    from sheet_bridge.web.app import StartupError, create_app

    try:
        app = create_app(config_path)
    except (ConfigError, StartupError) as exc:
        _fail(str(exc))
        return
    click.echo(f"sheet-bridge backend on http://{host}:{port} (Ctrl-C to stop)", err=True)
    app.run(host=host, port=port, threaded=True)


@main.group()
def emulate() -> None:
    """The local stand-ins: a Sheets API emulator and a fake Meta Graph endpoint."""


@emulate.command("sheets")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False))
@click.option("--port", default=8085, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def emulate_sheets(data_path: str, port: int, host: str) -> None:
    """Serve the Sheets v4 API over a JSON file (written back after each change)."""
    from sheet_bridge.local.sheets_emulator import serve as serve_sheets

    click.echo(f"Sheets API emulator on http://{host}:{port} over {data_path}", err=True)
    serve_sheets(data_path, host, port)


@emulate.command("meta")
@click.option("--port", default=8086, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--record", type=click.Path(dir_okay=False), help="Append accepted events here.")
@click.option(
    "--token",
    envvar="META_CAPI_TOKEN",
    default="local-demo-token",
    show_default=True,
    help="The access token the fake accepts (default: $META_CAPI_TOKEN or the demo's).",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Answer each request after this long (Meta's round trip is ~100-300 ms).",
)
@click.option(
    "--per-event-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="And this much longer per event in the request.",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Take at most this many calls per --rate-window; answer the rest as Meta throttles.",
)
@click.option(
    "--rate-window",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="The rate limit's window, in seconds.",
)
@click.option(
    "--throttle-code",
    type=click.Choice(["4", "17", "32", "613", "80004"]),
    default="80004",
    show_default=True,
    help="Meta's error code for a call over the limit (80004: too many calls, business use case).",
)
def emulate_meta(
    port: int,
    host: str,
    record: str | None,
    token: str,
    latency_ms: float,
    per_event_ms: float,
    rate_limit: int | None,
    rate_window: float,
    throttle_code: str,
) -> None:
    """Serve a fake Meta Graph API that applies Meta's CAPI rules and keeps what it accepts."""
    from sheet_bridge.local.fake_meta import MetaSpeed
    from sheet_bridge.local.fake_meta import serve as serve_meta

    speed = MetaSpeed(latency_ms, per_event_ms, rate_limit, rate_window, int(throttle_code))
    click.echo(f"Fake Meta Graph API on http://{host}:{port}", err=True)
    serve_meta(host, port, record, access_token=token, speed=speed)


def run() -> Any:  # pragma: no cover - console-script shim
    return main()
