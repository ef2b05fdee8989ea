"""`sheet-bridge check`: everything that would make Meta learn nothing, found before going live."""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import socket
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from sheet_bridge.config import BridgeConfig, Stage, is_ledger_url, status_key
from sheet_bridge.meta.events import classify_event_name, send_window
from sheet_bridge.meta.versions import version_problem

if TYPE_CHECKING:
    from sheet_bridge.sync.plan import LeadRow

Level = Literal["ok", "info", "warn", "error"]
_MARK = {"ok": "ok   ", "info": "info ", "warn": "WARN ", "error": "ERROR"}
# Meta's test codes as Events Manager → Test events shows them: TEST12345.
_TEST_CODE = re.compile(r"^TEST\d+$")


@dataclass(frozen=True)
class Finding:
    level: Level
    text: str


@dataclass(frozen=True)
class StageLine:
    statuses: tuple[str, ...]
    event: str
    verdict: str  # standard | custom | refused | never sent
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "statuses": list(self.statuses),
            "event": self.event,
            "verdict": self.verdict,
            "note": self.note,
        }


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)
    stages: list[StageLine] = field(default_factory=list)

    def add(self, level: Level, text: str) -> None:
        self.findings.append(Finding(level, text))

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.findings)

    def warnings(self) -> list[str]:
        return [f.text for f in self.findings if f.level in ("warn", "error")]

    def text(self) -> str:
        lines = ["Stages (funnel order):"]
        width = max((len(", ".join(s.statuses)) for s in self.stages), default=10)
        for s in self.stages:
            lines.append(
                f"  {', '.join(s.statuses):<{width}}  → {s.event:<16} {s.verdict:<11} {s.note}"
            )
        lines.append("")
        lines.extend(f"{_MARK[f.level]} {f.text}" for f in self.findings)
        lines.append("")
        if self.ok:
            lines.append("Ready: nothing found that would make Meta learn nothing.")
        else:
            n = sum(1 for f in self.findings if f.level == "error")
            lines.append(
                f"Not ready: fix the {n} ERROR line(s) above first; until then sheet-bridge "
                "cannot send, or Meta would learn nothing from what it sends."
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stages": [s.to_json() for s in self.stages],
            "findings": [{"level": f.level, "text": f.text} for f in self.findings],
        }


def conversion_rule(stage: Stage) -> str:
    """The Events Manager rule that selects one stage's events as sheet-bridge sends them
    (docs/meta-events.md): the stage's own event name, since each stage has its own (the config
    refuses two stages with one name) and each event's lead_status is its own stage's status.
    "Lead where lead_status = MQL" would select nothing: the Lead event carries New."""
    return f"event = {stage.event}"


def check_stages(config: BridgeConfig, report: CheckReport) -> None:
    """Each stage's event name: standard, custom by choice, or refused with a suggestion."""
    for stage in config.stage_map.stages:
        if not stage.send:
            report.stages.append(StageLine(stage.statuses, stage.event, "never sent", ""))
            continue
        check = classify_event_name(stage.event, stage.custom)
        note = ""
        if check.verdict == "refused":
            report.add("error", check.message)
            note = f"did you mean {check.suggestion}?" if check.suggestion else "not a Meta event"
        elif check.verdict == "custom":
            label = stage.statuses[0]
            rule = conversion_rule(stage)
            note = f'create a custom conversion "{label}": {rule}'
            report.add(
                "info",
                f"{stage.event} is a custom event by choice (stage {label}); Meta records it but "
                f'optimises on it only through a custom conversion: create "{label}" in Events '
                f"Manager with the rule {rule}",
            )
        if stage.negative:
            note = (note + "; " if note else "") + "negative: never counts as progress"
        report.stages.append(StageLine(stage.statuses, stage.event, check.verdict, note))
    positive = [s for s in config.stage_map.positive if s.send]
    if not positive:
        report.add("error", "no positive stage is sent: Meta would receive nothing")
    elif positive[0].event != "Lead":
        report.add(
            "warn",
            f"the first stage sends {positive[0].event}, not Lead; Conversion Leads expects the "
            "first stage (the lead itself) to be sent too",
        )
    values = [(s.label, s.value) for s in positive if s.value is not None]
    if len(values) < len(positive):
        missing = [s.label for s in positive if s.value is None]
        report.add(
            "warn",
            f"no value for stage(s) {', '.join(missing)}: send a value with every event so Meta "
            "can bid on value (the ratio between stages matters most)",
        )
    for (a, va), (b, vb) in itertools.pairwise(values):
        if va is not None and vb is not None and vb < va:
            report.add("warn", f"stage {b} is worth less ({vb:g}) than the earlier {a} ({va:g})")


def check_meta(config: BridgeConfig, report: CheckReport, environ: Mapping[str, str]) -> None:
    meta = config.meta
    if meta.access_token(environ):
        report.add("ok", f"Meta access token found in ${meta.access_token_env}")
    else:
        report.add(
            "error",
            f"no Meta access token: set the environment variable {meta.access_token_env} "
            "(Events Manager → your dataset → Settings → Conversions API → Generate access token)",
        )
    if "graph.facebook.com" not in meta.graph_url:
        report.add("info", f"events go to {meta.graph_url}, not Meta (a local fake?)")
    problem = version_problem(meta.api_version, datetime.now(UTC))
    if problem is not None:
        level, words = problem
        report.add("error" if level == "error" else "warn", words)
    if meta.test_event_code:
        report.add(
            "warn",
            f"test_event_code {meta.test_event_code!r} is set: test events are NOT a sandbox, "
            "they count as production data; remove it when you go live",
        )
        if not _TEST_CODE.match(meta.test_event_code):
            # Meta refuses a code it did not give for the whole request: every event of the
            # pass waits until it is fixed (docs/meta-errors.md).
            report.add(
                "warn",
                f"test_event_code {meta.test_event_code!r} is not shaped like Meta's codes "
                "(TEST12345): if Meta refuses it, it refuses every request; clear [meta] "
                "test_event_code or copy the current code from Events Manager → Test events",
            )
    check_action_source(config, report)
    check_places(config, report)
    days = send_window(meta.action_source).days
    report.add("info", f"events older than {days} days are marked expired and never sent")
    server = config.server
    if not server.shared_secret_env and not server.id_token_audience:
        report.add(
            "warn",
            "[server] has neither shared_secret_env nor id_token_audience: the backend would "
            "refuse every call from the sidebar",
        )


def check_places(config: BridgeConfig, report: CheckReport) -> None:
    """Which country each lead is sent with, and its Limited Data Use place, in words
    (docs/values.md "Countries" and "Limited Data Use")."""
    meta = config.meta
    region = meta.default_country
    if meta.assume_country:
        report.add(
            "info",
            f"assume_country = true: a lead whose row names no country and whose phone has no "
            f"country code is sent as in {region} (the config says every lead is there)",
        )
    else:
        report.add(
            "info",
            f"a lead's country is its row's Country cell, else its phone's country code, else "
            f"none is sent; default_country {region} only reads phones written without a "
            f"country code (set [meta] assume_country = true if every lead is in {region})",
        )
    options = meta.data_processing_options
    if options is None:
        return
    if not options:
        report.add("info", "every event carries data_processing_options = [] (explicitly not LDU)")
        return
    report.add(
        "info",
        "Limited Data Use on every event, with each lead's own place: a US lead in California "
        "is sent as country 1, state 1000; every other lead as 0/0 (Meta geolocates) "
        "(developers.facebook.com/docs/marketing-apis/data-processing-options)",
    )
    place = meta.assumed_place()
    if place is not None:
        report.add(
            "info",
            f"a US lead whose row names no state is sent as country {place[0]}, state "
            f"{place[1]} (assume_country = true says every lead is there)",
        )
    elif meta.data_processing_options_country or meta.data_processing_options_state:
        report.add(
            "warn",
            f"data_processing_options_country = {meta.data_processing_options_country}, "
            f"_state = {meta.data_processing_options_state} are not sent for every lead: an "
            "Indian lead is not a Californian. Each lead's place comes from its row; set "
            'assume_country = true with default_country = "US" if every lead really is there, '
            "or remove the two keys",
        )


def check_countries(config: BridgeConfig, report: CheckReport, rows: Sequence[LeadRow]) -> None:
    """Where the sheet's leads get their country from, counted (docs/values.md "Countries")."""
    from sheet_bridge.meta.identity import lead_country

    meta = config.meta
    if not rows:
        return
    sources = Counter(
        lead_country(r.identity, meta.default_country, meta.assume_country)[1] for r in rows
    )
    words = {
        "row": "their Country cell",
        "phone": "their phone's country code",
        "assumed": f"assume_country ({meta.default_country})",
        "unknown": "nothing: no country is sent",
    }
    told = ", ".join(f"{n} from {words[source]}" for source, n in sources.most_common())
    report.add("info", f"leads' countries: {told}")


def check_action_source(config: BridgeConfig, report: CheckReport) -> None:
    """CRM stages are system_generated (docs/meta-events.md: Conversion Leads); another source is a
    claim about where each conversion happened, refused unless the config says why."""
    meta = config.meta
    if meta.action_source == "system_generated":
        return
    if meta.action_source_reason.strip():
        report.add(
            "info",
            f"action_source is {meta.action_source!r} by choice: {meta.action_source_reason}",
        )
        return
    why = {
        "physical_store": (
            "physical_store is for sales made in a store (Meta gives them a 62-day window), "
            "not for CRM stages"
        ),
        "website": "website events need the browser's URL and user agent, which a sheet lacks",
    }.get(meta.action_source, f"{meta.action_source} says where each conversion happened")
    report.add(
        "error",
        f"action_source is {meta.action_source!r}: {why}; Conversion Leads (CRM) events use "
        'system_generated. Set action_source = "system_generated", or say why this bridge '
        'differs in [meta] action_source_reason = "…"',
    )


def check_last_pass(report: CheckReport, last: Mapping[str, Any]) -> None:
    """A last pass Meta stopped (a request-level refusal): what it said, and that the held
    events go once it is fixed."""
    error = last.get("error")
    if not error:
        return
    if " " not in str(error):  # an exception's name: the pass failed before sending
        report.add(
            "warn",
            f"the last sync ({last.get('finished_at')}) failed ({error}); run "
            "`sheet-bridge sync` to see why",
        )
        return
    report.add(
        "error",
        f"the last sync ({last.get('finished_at')}) stopped: {error}. Nothing was marked "
        "refused: once fixed, the next sync sends every held event once",
    )


def check_sheet(config: BridgeConfig, report: CheckReport, sheets: Any = None) -> Any:
    """Open the sheet: headers, statuses in use, lead ids typed as numbers. Returns what the
    ledger check needs of it (`check_ledger_behind`), or None when the sheet could not be read."""
    from sheet_bridge.sheets.client import SheetsClient, SheetsError
    from sheet_bridge.sheets.table import TableError
    from sheet_bridge.sync.rows import column_layout, lead_rows

    if sheets is None and (down := _local_endpoint_down(config.sheets.api_endpoint)):
        report.add("error", down)
        return None
    client = sheets or SheetsClient(config.sheets, base_dir=_base_dir(config))
    try:
        table = client.read_table()
        layout = column_layout(table, config)
    except (SheetsError, TableError) as exc:
        report.add("error", str(exc))
        return None
    report.add(
        "ok",
        f"sheet {table.title!r}, tab {config.sheets.tab!r}: {len(table.rows)} rows, "
        f"time zone {table.time_zone}, all {len(layout.fields)} configured columns found",
    )
    if layout.new_headers:
        names = ", ".join(name for _, name in layout.new_headers)
        report.add("info", f"sheet-bridge will add its columns at the end: {names}")
    rows = lead_rows(table, config, layout)
    check_date_order(config, table, layout.fields, report)
    stage_map = config.stage_map
    unmapped = Counter(
        r.status.strip() for r in rows if r.status.strip() and stage_map.lookup(r.status) is None
    )
    if unmapped:
        listed = ", ".join(f"{s!r} ({n})" for s, n in unmapped.most_common(8))
        report.add(
            "warn",
            f"statuses in the sheet that no stage maps (never sent): {listed}; add them to "
            "[[stages]] or fix the cells",
        )
    lost = [r.row_number for r in rows if any(p.field == "lead_id" for p in r.field_problems)]
    if lost:
        report.add(
            "warn",
            f"{len(lost)} lead id(s) typed as numbers lost digits (rows "
            f"{', '.join(map(str, lost[:10]))}); format the column as Plain text and paste them",
        )
    check_countries(config, report, rows)
    seen = {status_key(r.status) for r in rows}
    never = [
        s.label for s in stage_map.stages if not any(status_key(x) in seen for x in s.statuses)
    ]
    if rows and never:
        report.add("info", f"no row is at stage(s) {', '.join(never)} yet")
    return table, layout, rows


def check_ledger_behind(
    config: BridgeConfig, report: CheckReport, read: Any, history: Mapping[str, Any]
) -> None:
    """The pass's own test (sync/run.py ledger_behind): rows whose CAPI columns say an event
    was sent or expired that the ledger has no record of make `sync` refuse; say so, with
    the fix. `read`: what check_sheet returned; `history`: the ledger's (empty: no ledger)."""
    from sheet_bridge.sync.rows import bridge_cells
    from sheet_bridge.sync.run import describe_behind, ledger_behind

    table, layout, rows = read
    events = {s.event for s in config.stage_map.stages}
    written = bridge_cells(table, layout)
    behind = ledger_behind(history, written, table.first_row, layout, rows, events)
    if behind:
        report.add("error", describe_behind(behind, config, "`sheet-bridge sync` refuses."))


def check_shared_pixel(config: BridgeConfig, report: CheckReport, tabs: Sequence[Any]) -> None:
    """Warn when another bridge (tab) sends to this pixel: to Meta a lead in both is one lead,
    deduplicated on (event_name, event_id) only, so the bridges share its identity."""
    sheets = config.sheets
    others = [t for t in tabs if (t.spreadsheet_id, t.tab) != (sheets.spreadsheet_id, sheets.tab)]
    if not others:
        return
    here = sheets.spreadsheet_id
    named = ", ".join(
        f"tab {t.tab!r}" + ("" if t.spreadsheet_id == here else f" of {t.spreadsheet_id}")
        for t in others[:5]
    )
    report.add(
        "warn",
        f"bridges share pixel {config.meta.pixel_id}: this tab and {named}. To Meta one lead is "
        "one identity per pixel (its Leadgen ID, else its CAPI Key, else its e-mail or phone), "
        "so a lead in both tabs is sent once, from whichever tab has it first; if the tabs are "
        "different businesses, give each its own pixel (docs/identity-and-dates.md)",
    )


def check_date_order(
    config: BridgeConfig, table: Any, fields: Mapping[str, int], report: CheckReport
) -> None:
    """Say how text dates are read, and warn when the sheet's own dates contradict it: a text
    date such as 25/11/2026 can only be day first, 11/25/2026 only month first."""
    from sheet_bridge.sheets.table import date_order_evidence
    from sheet_bridge.sync.rows import date_order

    order = date_order(config, table)
    why = (
        "[sheets] date_order"
        if config.sheets.date_order
        else f"the spreadsheet's locale {table.locale}"
    )
    words = {"day_first": "day first (01/12/2026 is 1 December)", "month_first": "month first "
             "(01/12/2026 is 12 January)"}  # fmt: skip
    report.add("info", f"text dates are read {words[order]}, from {why}")
    against: list[tuple[int, str, str]] = []
    for name in ("created_at", "status_changed_at"):
        col = fields.get(name)
        if col is None:
            continue
        for number, row in zip(table.numbers(), table.rows, strict=True):
            cell = row[col] if col < len(row) else None
            said = date_order_evidence(cell)
            if said is not None and said != order:
                against.append((number, config.columns[name], str(cell)))
    if against:
        number, header, cell = against[0]
        other = "day_first" if order == "month_first" else "month_first"
        report.add(
            "warn",
            f"{len(against)} text date(s) can only be read {other.replace('_', ' ')}, against "
            f"this reading (row {number}, {header}: {cell[:30]!r}); ambiguous dates such as "
            f'01/12/2026 are then read wrongly. Set [sheets] date_order = "{other}" or the '
            "spreadsheet's locale (File → Settings) to match how the dates are typed",
        )


def check_edits(config: BridgeConfig, report: CheckReport) -> None:
    """How edits from the add-on are sent ([sync], docs/edits.md)."""
    sync = config.sync
    if sync.settle_seconds == 0:
        report.add(
            "warn",
            "[sync] settle_seconds = 0: an edit is sent at once, so a mis-click changed back "
            "seconds later has already reached Meta (which cannot take an event back); 120 is "
            "the default",
        )
    else:
        report.add(
            "info",
            f"an edited status is sent once it has held {sync.settle_seconds:g} s; a change "
            "back before then sends nothing",
        )
    if sync.sweep_seconds == 0:
        report.add(
            "warn",
            "[sync] sweep_seconds = 0: no serving process sends edits that are due; they wait "
            "for the next sync (set it to 10, the default)",
        )


def _local_endpoint_down(endpoint: str | None) -> str | None:
    """When [sheets] api_endpoint is a loopback address that refuses connections (the local
    emulator is not running), what to say and do; else None (a remote endpoint is read, and
    its error reported, as usual)."""
    if not endpoint:
        return None
    url = urlsplit(endpoint)
    host = url.hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if not local:
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return (
            f"nothing answers at {endpoint} ([sheets] api_endpoint, a local address): start "
            f"the Sheets emulator (`sheet-bridge emulate sheets --data FILE.json --port {port}`) "
            "or the demo's playground (`sheet-bridge demo --serve`), or point api_endpoint "
            "elsewhere"
        )
    except OSError:
        return None  # another failure: the read reports it
    return None


def _base_dir(config: BridgeConfig) -> Any:
    from pathlib import Path

    return Path(config.source).parent if config.source != "<memory>" else None


def run_checks(
    config: BridgeConfig,
    *,
    connect: bool = True,
    environ: Mapping[str, str] | None = None,
    sheets: Any = None,
) -> CheckReport:
    env = environ if environ is not None else os.environ
    report = CheckReport()
    report.add("ok", f"config {config.source} is valid")
    check_stages(config, report)
    check_meta(config, report, env)
    check_edits(config, report)
    read = check_sheet(config, report, sheets) if connect else None
    location = config.ledger_location(env)
    history: Mapping[str, Any] = {}  # no ledger yet: it knows nothing
    if is_ledger_url(location) or Path(location).exists():  # never create a file to look
        from sheet_bridge.sync.ledger import LedgerError, SheetTab, open_ledger

        try:
            ledger = open_ledger(location)
            try:
                here = SheetTab(config.sheets.spreadsheet_id, config.sheets.tab)
                check_last_pass(report, ledger.last_pass(here))
                check_shared_pixel(config, report, ledger.tabs_of_pixel(config.meta.pixel_id))
                if read is not None:
                    history = ledger.history(here)
            finally:
                ledger.close()
        except LedgerError as exc:
            report.add("warn", str(exc))
            read = None  # the ledger could not be read: nothing to compare
    if read is not None:
        check_ledger_behind(config, report, read, history)
    return report
