"""`sheet-bridge report` and `sheet-bridge audience`: read the ledger only, write the files."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from sheet_bridge.cli import main
from sheet_bridge.sync.ledger import SqliteLedger
from tests.sync.ledgers import SHEET, LedgerWriter, report_config

CONFIG = f"""
[sheets]
spreadsheet_id = "{SHEET}"
credentials = "anonymous"
api_endpoint = "http://127.0.0.1:8085"

[meta]
pixel_id = "1234567890"
default_country = "IN"
currency = "INR"

[server]
ledger = "ledger.db"

[columns]
status = "Lead Status"
email = "Email"

[[stages]]
status = "New"
event = "Lead"
value = 100

[[stages]]
status = "MQL"
event = "QualifiedLead"
custom = true
value = 1000

[[stages]]
status = "Disqualified"
event = "Disqualified"
custom = true
negative = true
"""
STAGES = [
    {"status": "New", "event": "Lead", "value": 100},
    {"status": "MQL", "event": "QualifiedLead", "custom": True, "value": 1000},
    {"status": "Disqualified", "event": "Disqualified", "custom": True, "negative": True},
]


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bridge.toml whose ledger holds 3 leads (one qualified, one disqualified)."""
    monkeypatch.delenv("SHEET_BRIDGE_LEDGER", raising=False)
    monkeypatch.delenv("META_CAPI_TOKEN", raising=False)
    path = tmp_path / "bridge.toml"
    path.write_text(CONFIG)
    config = report_config(tmp_path, STAGES)
    writer = LedgerWriter(SqliteLedger(config.ledger_location({})), config)
    day = datetime.now(UTC) - timedelta(days=2)
    for key in ("a", "b", "c"):
        writer.event(key, "Lead", day, identity={"em": f"{key}.person@example.com"})
    writer.event("a", "QualifiedLead", day + timedelta(hours=5))
    writer.event("c", "Disqualified", day + timedelta(hours=6))
    return path


def test_report_prints_the_table_and_advice_and_writes_a_valid_svg(
    config_file: Path, tmp_path: Path
) -> None:
    chart = tmp_path / "funnel.svg"
    result = CliRunner().invoke(
        main, ["report", "--config", str(config_file), "--chart", str(chart)]
    )
    assert result.exit_code == 0, result.output
    assert "Funnel report" in result.stdout
    assert "QualifiedLead" in result.stdout
    assert "too low even for Lead" in result.stdout
    root = ET.parse(chart).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert len(root.findall(".//s:polyline", ns)) == 2  # one series per positive stage
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"Lead", "QualifiedLead"} <= texts


def test_report_json_is_one_object(config_file: Path) -> None:
    result = CliRunner().invoke(main, ["report", "--config", str(config_file), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [s["event"] for s in data["stages"]] == ["Lead", "QualifiedLead"]
    assert sum(data["stages"][0]["weekly"]) == 3
    assert data["stages"][0]["conversion_to_next"] == round(1 / 3, 4)
    assert data["other_sent"] == {"Disqualified": 1}


def test_report_refuses_a_chart_that_is_not_svg(config_file: Path) -> None:
    result = CliRunner().invoke(
        main, ["report", "--config", str(config_file), "--chart", "funnel.png"]
    )
    assert result.exit_code == 2
    assert "only SVG" in result.output


def test_report_without_a_ledger_says_so_and_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHEET_BRIDGE_LEDGER", raising=False)
    path = tmp_path / "bridge.toml"
    path.write_text(CONFIG)
    result = CliRunner().invoke(main, ["report", "--config", str(path)])
    assert result.exit_code == 2
    assert "no ledger at" in result.output
    assert not (tmp_path / "ledger.db").exists()


def test_audience_writes_the_hashed_customer_list_and_prints_the_steps(
    config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "junk.csv"
    result = CliRunner().invoke(
        main, ["audience", "--config", str(config_file), "--out", str(out), "--days", "30"]
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["email"]  # its row names no country, nor does a phone
    assert len(rows) == 2  # the one disqualified lead
    assert "person@example.com" not in text and "@" not in text
    assert "1 lead(s) found (Disqualified 1); 1 written to" in result.stdout
    assert "Lookalike audience" in result.stdout
