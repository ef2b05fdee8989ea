"""The junk audience (docs/insights.md): the last 90 days' disqualified leads as a hashed
Meta customer list, with the counts behind it."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

import pytest

from sheet_bridge.insights.audience import JunkAudience, junk_audience
from sheet_bridge.meta.identity import sha256_hex
from sheet_bridge.sync.ledger import SqliteLedger
from tests.sync.ledgers import NOW, WHERE, LedgerWriter, report_config


@pytest.fixture
def writer(tmp_path: Path) -> LedgerWriter:
    config = report_config(tmp_path)
    return LedgerWriter(SqliteLedger(config.ledger_location({})), config)


def audience(writer: LedgerWriter, days: int = 90) -> JunkAudience:
    return junk_audience(writer.ledger.events(WHERE), writer.config, NOW, days=days)


def test_disqualified_leads_of_the_last_90_days_become_hashed_rows(writer: LedgerWriter) -> None:
    writer.event(
        "a",
        "Disqualified",
        NOW - timedelta(days=10),
        identity={"em": "Asha@Example.com", "ph": "+91 98201 12345", "fn": "Asha", "zp": "400001"},
    )
    writer.event("b", "Disqualified", NOW - timedelta(days=89), identity={"em": "b@example.com"})
    writer.event("old", "Disqualified", NOW - timedelta(days=91))  # outside the 90 days
    writer.event("failed", "Disqualified", NOW - timedelta(days=3), state="failed")  # not sent
    writer.event("good", "Purchase", NOW - timedelta(days=3))  # a positive stage: not junk
    result = audience(writer)
    assert result.columns == ("email", "phone", "fn", "zip", "country")
    assert result.leads == 2
    assert result.by_stage == {"Disqualified": 2}
    india = sha256_hex("in")  # Asha's phone says India; b's row names no country
    assert result.rows == (
        (
            sha256_hex("asha@example.com"),
            sha256_hex("919820112345"),
            sha256_hex("asha"),
            sha256_hex("400001"),
            india,
        ),
        (sha256_hex("b@example.com"), "", "", "", ""),
    )


def test_csv_has_metas_header_one_row_a_lead_and_no_raw_email(
    writer: LedgerWriter, tmp_path: Path
) -> None:
    for i in range(3):
        writer.event(f"k{i}", "Disqualified", NOW - timedelta(days=i + 1))
    path = audience(writer).write(tmp_path / "junk.csv")
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == ["email"]  # no lead here has a country of its own (docs/values.md)
    assert len(rows) == 4
    assert "@" not in path.read_text()
    assert all(len(cell) == 64 for row in rows[1:] for cell in row)


def test_lead_without_email_phone_or_external_id_is_left_out_and_counted(
    writer: LedgerWriter,
) -> None:
    writer.event("a", "Disqualified", NOW - timedelta(days=1), identity={"em": "a@example.com"})
    writer.event(
        "b",
        "Disqualified",
        NOW - timedelta(days=1),
        identity={"lead_id": "120214563987456", "fn": "Bo"},  # lead_id is no list identifier
    )
    result = audience(writer)
    assert result.leads == 2
    assert result.without_identifier == 1
    assert len(result.rows) == 1
    assert "1 left out: no e-mail, phone or external id" in result.text()


def test_lead_that_moved_on_to_a_positive_stage_afterwards_is_not_junk(
    writer: LedgerWriter,
) -> None:
    writer.event("a", "Lead", NOW - timedelta(days=20))
    writer.event("a", "Disqualified", NOW - timedelta(days=15))
    writer.event("a", "QualifiedLead", NOW - timedelta(days=2))
    writer.event("b", "Disqualified", NOW - timedelta(days=15))
    result = audience(writer)
    assert result.leads == 2
    assert result.moved_on == 1
    assert len(result.rows) == 1


def test_external_id_goes_in_the_extern_id_column(writer: LedgerWriter) -> None:
    writer.event("a", "Disqualified", NOW - timedelta(days=1), identity={"external_id": "C-42"})
    result = audience(writer)
    assert result.columns == ("extern_id",)
    assert result.rows[0][0] == sha256_hex("c-42")  # the same form as CAPI sent it (lower-case)


def test_days_narrows_the_period(writer: LedgerWriter) -> None:
    writer.event("a", "Disqualified", NOW - timedelta(days=10))
    writer.event("b", "Disqualified", NOW - timedelta(days=40))
    assert len(audience(writer, days=30).rows) == 1
    assert len(audience(writer, days=90).rows) == 2


def test_text_gives_the_counts_and_the_lookalike_steps(writer: LedgerWriter) -> None:
    writer.event("a", "Disqualified", NOW - timedelta(days=1))
    text = audience(writer).text("junk.csv")
    assert "1 lead(s) found (Disqualified 1); 1 written to junk.csv" in text
    assert "below the 100 people Meta asks for" in text
    assert "Custom audience → Customer list" in text
    assert "size 1–5 %" in text
    assert "Exclude → the lookalike" in text
