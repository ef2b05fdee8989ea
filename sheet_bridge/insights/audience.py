"""The junk audience: recently disqualified leads as a hashed Meta customer-list CSV."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sheet_bridge.config import BridgeConfig
from sheet_bridge.sync.ledger import LedgerEvent

DEFAULT_DAYS = 90  # docs/insights.md: the last 90 days' disqualified leads
# Meta's customer-list help ("How to format a customer list", business/help/2082575038703844):
# fewer than 100 people is too few to match, and a lookalike needs a source of 100 or more.
MIN_AUDIENCE = 100

# CAPI user_data key → Meta's customer-list column header. Meta normalizes customer lists
# exactly as CAPI (docs/normalization.md), so the ledger's hashes are uploaded as they are. Headers
# from the help page above; extern_id is the Marketing API's EXTERN_ID (facebook-python-business-sdk
# CustomAudienceMixin.MultiKeySchema), matched against the hashed external_id CAPI sent.
# Left out: db (the list wants the birth date split into doby/dobm/dobd, which a YYYYMMDD hash
# cannot give), lead_id, fbc, fbp, IP and user agent (not customer-list identifiers).
CUSTOMER_LIST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("em", "email"),
    ("ph", "phone"),
    ("fn", "fn"),
    ("ln", "ln"),
    ("ct", "ct"),
    ("st", "st"),
    ("zp", "zip"),
    ("country", "country"),
    ("ge", "gen"),
    ("external_id", "extern_id"),
)
# Keys that identify a person on their own; country, city and the like only refine a match.
_PERSON_COLUMNS = frozenset({"email", "phone", "extern_id"})


@dataclass(frozen=True)
class JunkAudience:
    """The leads to exclude look-alikes of, hashed, with the counts behind the file."""

    days: int
    since: datetime
    stages: tuple[str, ...]  # the negative stages' event names
    columns: tuple[str, ...]  # the CSV header: Meta's customer-list column names
    rows: tuple[tuple[str, ...], ...]
    by_stage: dict[str, int] = field(default_factory=dict)
    leads: int = 0  # leads at a negative stage in the period
    without_identifier: int = 0  # … left out: no e-mail, phone or external id to match on
    moved_on: int = 0  # … left out: a positive stage came after the negative one

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buffer.getvalue()

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write the CSV readable by its owner only: unsalted hashes of phones and e-mails can
        be brute-forced, so the file is as private as the ledger."""
        target = Path(path)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)  # also when the file existed with wider rights
            out.write(self.csv_text())
        return target

    def text(self, path: str | os.PathLike[str] | None = None) -> str:
        """Counts and the look-alike steps, for the CLI."""
        stages = ", ".join(self.stages) or "(no negative stage is configured)"
        stage_counts = ", ".join(f"{k} {v}" for k, v in self.by_stage.items()) or "none"
        where = f" to {path}" if path is not None else ""
        lines = [
            f"Junk audience: leads that reached {stages} in the last {self.days} days "
            f"(since {self.since:%Y-%m-%d}, event sent to Meta).",
            f"  {self.leads} lead(s) found ({stage_counts}); {len(self.rows)} written{where}.",
        ]
        if self.without_identifier:
            lines.append(
                f"  {self.without_identifier} left out: no e-mail, phone or external id to "
                "match on."
            )
        if self.moved_on:
            lines.append(
                f"  {self.moved_on} left out: they moved on to a positive stage afterwards."
            )
        lines.append(
            f"  Columns: {', '.join(self.columns) or '(none)'}; every value is already "
            "normalized and SHA-256 hashed the way Meta hashes customer lists."
        )
        if len(self.rows) < MIN_AUDIENCE:
            lines.append(
                f"  Note: {len(self.rows)} is below the {MIN_AUDIENCE} people Meta asks for; "
                "the upload may match too few to build a lookalike. Export again later or "
                "use a longer --days."
            )
        lines += [
            "",
            "Exclude look-alikes of these leads (docs/insights.md):",
            "  1. Ads Manager → Audiences → Create audience → Custom audience → Customer list; "
            "upload this file (the column names are already Meta's; confirm the mapping).",
            "  2. Create audience → Lookalike audience: source = that custom audience, location = "
            "the countries you advertise in, size 1–5 %.",
            "  3. In each ad set: Audience → Exclude → the lookalike (and the custom audience "
            "itself).",
            f"  4. Export again every few weeks so the list stays the last {self.days} days.",
        ]
        return "\n".join(lines)


def junk_audience(
    events: Sequence[LedgerEvent],
    config: BridgeConfig,
    now: datetime,
    *,
    days: int = DEFAULT_DAYS,
) -> JunkAudience:
    """Leads whose negative-stage event (e.g. Disqualified) was sent, with a status change in
    the last `days` days, as customer-list rows of hashed identifiers (one row per lead)."""
    if now.tzinfo is None:
        raise ValueError("junk_audience() needs an aware `now`")
    if days < 1:
        raise ValueError("days must be at least 1")
    stage_map = config.stage_map
    negative = tuple(s.event for s in stage_map.stages if s.negative and s.send)
    positive = {s.event for s in stage_map.positive}
    since = now.astimezone(UTC) - timedelta(days=days)

    junk: dict[str, LedgerEvent] = {}
    for e in events:
        if e.event_name in negative and e.state == "sent" and e.event_time >= since.timestamp():
            prior = junk.get(e.lead_key)
            if prior is None or e.event_time > prior.event_time:
                junk[e.lead_key] = e
    # A lead that went on to a positive stage after being disqualified is not junk any more.
    revived = {
        e.lead_key
        for e in events
        if e.lead_key in junk
        and e.event_name in positive
        and e.state in ("sent", "expired")
        and e.event_time > junk[e.lead_key].event_time
    }

    by_stage = dict.fromkeys(negative, 0)
    records: list[dict[str, str]] = []
    without = 0
    for key in sorted(junk):
        e = junk[key]
        by_stage[e.event_name] += 1
        if key in revived:
            continue
        user_data = e.user_data or {}
        record = {
            header: value
            for capi, header in CUSTOMER_LIST_COLUMNS
            if (value := _first_hash(user_data.get(capi)))
        }
        if not _PERSON_COLUMNS & record.keys():
            without += 1
            continue
        records.append(record)
    # Only the columns some row fills: Meta maps every column of the file.
    columns = tuple(h for _, h in CUSTOMER_LIST_COLUMNS if any(h in r for r in records))
    rows = tuple(tuple(r.get(h, "") for h in columns) for r in records)
    return JunkAudience(
        days=days,
        since=since,
        stages=negative,
        columns=columns,
        rows=rows,
        by_stage=by_stage,
        leads=len(junk),
        without_identifier=without,
        moved_on=len(revived),
    )


def _first_hash(value: object) -> str:
    """One value per column: CAPI may carry a list (several e-mails); the first is kept."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    return value if isinstance(value, str) else ""
