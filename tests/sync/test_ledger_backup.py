"""`sheet-bridge backup` (issue 22, item 6; docs/operating.md "Backups"): SQLite's online backup
of the ledger, a consistent copy that opens as a ledger with every event; on PostgreSQL it
says to use pg_dump. Against the emulator and the fake Meta, on both ledgers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sheet_bridge.config import is_ledger_url
from sheet_bridge.sync.ledger import SqliteLedger
from tests.conftest import World, lead_row
from tests.test_cli import WITH_TOKEN, run, world_toml

MakeWorld = Callable[..., World]


def test_backup_copies_the_sqlite_ledger_and_points_postgresql_to_pg_dump(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    world = make_world([lead_row(i, "MQL", now=world_now) for i in range(1, 4)])
    config = world_toml(world, tmp_path / "bridge.toml")
    assert run(["sync", "--config", str(config)], WITH_TOKEN).exit_code == 0
    copy = tmp_path / "backups" / "ledger-copy.db"
    copy.parent.mkdir()

    result = run(["backup", "--config", str(config), "--out", str(copy)], WITH_TOKEN)
    again = run(["backup", "--config", str(config), "--out", str(copy)], WITH_TOKEN)

    if is_ledger_url(world.config.ledger_location({})):
        assert result.exit_code == 2
        assert "pg_dump" in result.output
        return
    assert result.exit_code == 0, result.output
    assert "6 events" in result.output
    original = SqliteLedger(tmp_path / "cli-ledger.db")
    restored = SqliteLedger(copy)
    where = world.bridge().sheet_tab
    try:
        assert restored.events(where) == original.events(where)
        assert len(restored.events(where)) == 6
    finally:
        original.close()
        restored.close()
    assert again.exit_code == 2 and "exists" in again.output  # never overwrites a backup
    assert not list(copy.parent.glob("*.partial"))
