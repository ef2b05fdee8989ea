"""The ledger: what was sent, what each lead did and when, and which pass holds which tab.

One contract (contract.py), two backends: sqlite.py, the embedded default (one file), and
postgres.py, for several processes or hosts sharing one ledger. `open_ledger` picks one from
the `ledger` setting: a path, or a postgresql:// URL.
"""

from __future__ import annotations

import os

from sheet_bridge.config import is_ledger_url
from sheet_bridge.sync.ledger.contract import (
    KEEP_PASSES,
    LOCK_LEASE,
    PASS_HEARTBEAT,
    PASS_LOST,
    PASS_LOST_AFTER,
    RECORD_DAYS,
    SCHEMA_VERSION,
    SUMMARY_DAYS,
    AdoptedEvent,
    EditChange,
    LedgerBackend,
    LedgerError,
    LedgerEvent,
    LockLease,
    LockLost,
    PassRecord,
    PendingEdit,
    QueuedEdit,
    RowMemo,
    SheetTab,
    SyncBusy,
    UnreadableRecord,
)
from sheet_bridge.sync.ledger.sqlite import SqliteLedger

__all__ = [
    "KEEP_PASSES",
    "LOCK_LEASE",
    "PASS_HEARTBEAT",
    "PASS_LOST",
    "PASS_LOST_AFTER",
    "RECORD_DAYS",
    "SCHEMA_VERSION",
    "SUMMARY_DAYS",
    "AdoptedEvent",
    "EditChange",
    "LedgerBackend",
    "LedgerError",
    "LedgerEvent",
    "LockLease",
    "LockLost",
    "PassRecord",
    "PendingEdit",
    "QueuedEdit",
    "RowMemo",
    "SheetTab",
    "SqliteLedger",
    "SyncBusy",
    "UnreadableRecord",
    "open_ledger",
]


def open_ledger(location: str | os.PathLike[str]) -> LedgerBackend:
    """The ledger at `location`: a postgresql:// URL, else an SQLite file path."""
    text = os.fspath(location)
    if is_ledger_url(text):
        try:
            # Imported here: psycopg is the `postgres` extra, not needed for a file ledger.
            from sheet_bridge.sync.ledger.postgres import PostgresLedger
        except ImportError as exc:
            raise LedgerError(
                f"A PostgreSQL ledger needs psycopg ({exc.name} is not installed): "
                "pip install 'sheet-bridge[postgres]'"
            ) from None
        return PostgresLedger(text)
    return SqliteLedger(text)
