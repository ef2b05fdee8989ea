"""Ledgers with known contents, written through the Ledger API at fixed times (for reports)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sheet_bridge.config import BridgeConfig, parse_config
from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.meta.identity import hash_user_data, match_keys
from sheet_bridge.sync.ledger import SheetTab, SqliteLedger
from sheet_bridge.sync.plan import ExpiredEvent, PlannedEvent, event_id_for

SHEET = "1ReportSheet0000000000000000000000000000000"
TAB = "Leads"  # report_config names no tab: the default
WHERE = SheetTab(SHEET, TAB)
# A Thursday in ISO week 2026-W11 (Monday 9 March); the report's 8 weeks are W04..W11.
NOW = datetime(2026, 3, 12, 12, 0, tzinfo=UTC)
W11 = datetime(2026, 3, 9, tzinfo=UTC)  # Monday 00:00 UTC of the current week

STAGES: list[dict[str, Any]] = [
    {"status": "New", "event": "Lead", "value": 100},
    {"status": "MQL", "event": "QualifiedLead", "custom": True, "value": 1000},
    {"status": "SQL", "event": "Schedule", "value": 5000},
    {"status": "Opportunity", "event": "StartTrial", "value": 20000},
    {"status": "Customer", "event": "Purchase", "value": 50000},
    {"status": "On hold", "event": "Contact", "send": False},
    {"status": "Disqualified", "event": "Disqualified", "custom": True, "negative": True},
]


def week(n: int, days: float = 2.5) -> datetime:
    """A time inside ISO week 2026-W`n` (Wednesday noon by default)."""
    return W11 - timedelta(weeks=11 - n) + timedelta(days=days)


def report_config(
    tmp: Path | None = None, stages: list[dict[str, Any]] | None = None
) -> BridgeConfig:
    data: dict[str, Any] = {
        "sheets": {
            "spreadsheet_id": SHEET,
            "credentials": "anonymous",
            "api_endpoint": "http://127.0.0.1:8085",
        },
        "meta": {"pixel_id": "1234567890", "default_country": "IN", "currency": "INR"},
        "server": {"ledger": "ledger.db"},
        "columns": {"status": "Lead Status", "email": "Email"},
        "stages": STAGES if stages is None else stages,
    }
    source = str(tmp / "bridge.toml") if tmp is not None else "<memory>"
    return parse_config(data, source=source)


class LedgerWriter:
    """Writes events into a real ledger the way a pass does: mark_sending, then the outcome."""

    def __init__(self, ledger: SqliteLedger, config: BridgeConfig) -> None:
        self.ledger = ledger
        self.config = config
        self.stages = {s.event: s for s in config.stage_map.stages}

    def event(
        self,
        lead: str,
        event_name: str,
        at: datetime,
        *,
        sent_after: timedelta = timedelta(minutes=10),
        state: str = "sent",
        identity: Mapping[str, object] | None = None,
        value: float | None = None,
    ) -> None:
        """One event of `lead` whose status changed at `at`, answered `sent_after` later.

        `state`: sent, failed or expired (expired is recorded as a pass does, never sent).
        `identity`: raw identifiers (Meta keys); by default an e-mail made from the lead key.
        """
        stage = self.stages[event_name]
        event_id = event_id_for("1234567890", f"key:{lead}", event_name)
        event_time = int(at.timestamp())
        answered = at + sent_after
        if state == "expired":
            expired = ExpiredEvent(
                2, lead, event_name, event_id, event_time, answered - at, timedelta(days=7)
            )
            self.ledger.record_expired(WHERE, [expired], answered)
            return
        raw = {"em": f"{lead}@example.com"} if identity is None else identity
        hashed = hash_user_data(raw, self.config.meta.default_country)
        amount = value if value is not None else stage.value
        planned = PlannedEvent(
            2,
            lead,
            stage,
            event_name,
            event_id,
            event_time,
            hashed.user_data,
            stage.label,
            "system_generated",
            "Google Sheets",
            amount,
            "INR" if amount is not None else None,
        )
        strength = match_keys(hashed.user_data).strength
        self.ledger.mark_sending(WHERE, [planned], {lead: strength}, {}, answered)
        outcome = (
            SendOutcome("sent", "ok", fbtrace_id="trace")
            if state == "sent"
            else SendOutcome("failed", "invalid parameter", code=100)
        )
        self.ledger.record_outcomes(WHERE, [(planned, outcome)], answered)

    def leads(self, count: int, at: datetime, *, prefix: str, event_name: str = "Lead") -> None:
        """`count` leads with one sent event each at `at`."""
        for i in range(count):
            self.event(f"{prefix}{i}", event_name, at)
