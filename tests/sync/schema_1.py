"""A ledger as sheet-bridge wrote it before tabs were part of a lead's key (schema 1), built
with raw SQL: the tables exactly as that version created them, filled from a schema-2 ledger."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS ledger_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    spreadsheet_id TEXT NOT NULL,
    lead_key TEXT NOT NULL,
    event_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('sending', 'sent', 'failed', 'expired')),
    event_time INTEGER NOT NULL,
    row_number INTEGER,
    lead_status TEXT,
    stage_index INTEGER,
    fingerprint TEXT,
    retry INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_planned REAL NOT NULL,
    sent_at REAL,
    updated_at REAL NOT NULL,
    fbtrace_id TEXT,
    error TEXT,
    value REAL,
    currency TEXT,
    match_strength TEXT,
    user_data TEXT,
    notes TEXT,
    PRIMARY KEY (spreadsheet_id, lead_key, event_name)
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY,
    spreadsheet_id TEXT NOT NULL,
    lead_key TEXT NOT NULL,
    status TEXT NOT NULL,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_lead ON transitions (spreadsheet_id, lead_key);
CREATE TABLE IF NOT EXISTS pending_edits (
    id INTEGER PRIMARY KEY,
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    row_number INTEGER NOT NULL,
    old_value TEXT,
    new_value TEXT NOT NULL,
    at REAL NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS passes (
    id INTEGER PRIMARY KEY,
    spreadsheet_id TEXT NOT NULL,
    tab TEXT NOT NULL,
    trigger TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    counts TEXT,
    error TEXT
);
CREATE TABLE IF NOT EXISTS locks (
    scope TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL
);
"""


def downgrade_to_schema_1(source: Path, target: Path) -> None:
    """Write `target` as schema 1 holding what `source` (schema 2) holds, minus the tabs: what
    the same passes would have left in a ledger of the previous version."""
    db = sqlite3.connect(target)
    db.executescript(SCHEMA_1)
    db.execute("INSERT INTO ledger_info VALUES ('schema_version', '1')")
    db.execute("ATTACH DATABASE ? AS new", (str(source),))
    columns = [r[1] for r in db.execute("PRAGMA main.table_info(events)")]
    names = ", ".join(columns)
    # Baselines came after schema 1: the previous version never wrote one.
    db.execute(
        f"INSERT INTO main.events ({names}) SELECT {names} FROM new.events "
        "WHERE state != 'baseline'"
    )
    t_columns = ", ".join(r[1] for r in db.execute("PRAGMA main.table_info(transitions)"))
    db.execute(
        f"INSERT INTO main.transitions ({t_columns}) SELECT {t_columns} FROM new.transitions"
    )
    p_columns = ", ".join(r[1] for r in db.execute("PRAGMA main.table_info(passes)"))
    db.execute(f"INSERT INTO main.passes ({p_columns}) SELECT {p_columns} FROM new.passes")
    db.execute("INSERT INTO main.pending_edits SELECT * FROM new.pending_edits")
    db.commit()
    db.execute("DETACH DATABASE new")
    db.close()
