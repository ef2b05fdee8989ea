"""Row memos change nothing but the work (sync/memo.py): two copies of one sheet and ledger, the
same random edits between passes (statuses, stamps, identity cells, CAPI cells cleared, keys
copied, rows swapped, new rows, edits reported, the config changed, the ledger restored from a
backup, time passing), one pass with memos and one without on each step: the same answer, the
same sheet and the same ledger, every time (issue 24)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sheet_bridge.config import BRIDGE_COLUMNS
from sheet_bridge.local.fake_meta import create_fake_meta
from sheet_bridge.local.server import BackgroundServer
from sheet_bridge.local.sheets_emulator import create_emulator
from sheet_bridge.sheets.client import clear_metadata_cache
from sheet_bridge.sync.run import SyncResult
from tests.conftest import (
    WORLD_HEADER,
    WORLD_PIXEL,
    WORLD_SHEET,
    WORLD_TEST_CODE,
    WORLD_TOKEN,
    WORLD_TZ,
    World,
    iso,
    lead_row,
    world_config,
)
from tests.ledger_backends import run_sql, snapshot

pytestmark = pytest.mark.sqlite_only  # two ledgers side by side, copied as files

STATUSES = ["New", "MQL", "SQL", "Opportunity", "Customer", "On hold", "Disqualified", "", "Lost?"]
_FBTRACE = re.compile(r"A[\w-]{20}")
# The ledger as a pass leaves it (not its pass records, which hold timings, nor the memos).
_TABLES = {
    "events": "spreadsheet_id, tab, lead_key, event_name",
    "transitions": "id",
    "edit_queue": "spreadsheet_id, tab, lead_key",
    "pending_edits": "id",
    "log_lines": "spreadsheet_id, tab",
    "tab_pixels": "spreadsheet_id, tab",
}


class Twins:
    """Two worlds from one sheet: `memo` passes with row memos, `plain` without."""

    def __init__(self, tmp: Path, rows: list[list[object]], now: datetime) -> None:
        self.now = now
        self.servers: list[BackgroundServer] = []
        self.memo = self._world(tmp / "memo", rows)
        self.plain = self._world(tmp / "plain", rows)
        self.backups: list[Any] = []
        self.remembered = 0

    def _world(self, tmp: Path, rows: list[list[object]]) -> World:
        tmp.mkdir()
        clear_metadata_cache()
        data_path = tmp / "sheets.json"
        data = {
            "spreadsheets": {
                WORLD_SHEET: {
                    "title": "World",
                    "timeZone": WORLD_TZ,
                    "locale": "en_US",
                    "sheets": {"Leads": [list(WORLD_HEADER), *rows]},
                }
            }
        }
        import json

        data_path.write_text(json.dumps(data))
        sheets = BackgroundServer(create_emulator(data_path=data_path)).start()
        meta = BackgroundServer(
            create_fake_meta(
                access_token=WORLD_TOKEN,
                pixel_ids=[WORLD_PIXEL],
                test_event_codes=[WORLD_TEST_CODE],
                now=lambda: self.now.timestamp(),
            )
        ).start()
        self.servers += [sheets, meta]
        config = world_config(tmp, sheets.url, meta.url)
        return World(tmp, sheets.url, meta.url, data_path, config, self.now)

    @property
    def both(self) -> tuple[World, World]:
        return self.memo, self.plain

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def tick(self, minutes: float) -> None:
        self.now += timedelta(minutes=minutes)
        for w in self.both:
            w.now = self.now

    def edit(self, cells: list[tuple[int, str, object]]) -> None:
        for w in self.both:
            w.edit_cells(cells)

    def sync(self) -> tuple[Any, Any]:
        """One pass on each; (answer or refusal, sheet, ledger) of each, comparable."""
        out = []
        for w, memos in ((self.memo, True), (self.plain, False)):
            bridge = w.bridge(row_memos=memos)
            try:
                result: SyncResult | None = bridge.sync()
                error = None
            except Exception as exc:  # a refusal must be the same refusal
                result, error = None, f"{type(exc).__name__}: {exc}"
            finally:
                bridge.ledger.close()
            if result is not None and memos:
                self.remembered += result.rows_remembered
            out.append((_answer(result), error, _same(w.rows()), _ledger(w)))
        return out[0], out[1]


def _same(value: Any) -> Any:
    """Meta's fbtrace ids are random per answer: the twins' fake Metas give different ones."""
    if isinstance(value, str):
        return _FBTRACE.sub("A…", value)
    if isinstance(value, list | tuple):
        return [_same(v) for v in value]
    if isinstance(value, dict):
        return {k: _same(v) for k, v in value.items()}
    return value


def _answer(result: SyncResult | None) -> Any:
    if result is None:
        return None
    rows = [{**r.to_json(), "cells": r.cells, "logged": r.logged} for r in result.rows]
    summary = {k: v for k, v in result.summary().items() if k != "seconds"}
    return _same([rows, summary, result.events_sent, result.cells_written])


def _ledger(world: World) -> Any:
    location = world.config.ledger_location({})
    return _same(
        {t: run_sql(location, f"SELECT * FROM {t} ORDER BY {o}") for t, o in _TABLES.items()}
    )


@pytest.fixture
def twins(tmp_path: Path, world_now: datetime) -> Iterator[Twins]:
    rng = random.Random(0)
    rows = [
        lead_row(i, rng.choice(STATUSES), now=world_now, pixel_id=f"px{i % 9}" if i % 3 else "")
        for i in range(14)
    ]
    made = Twins(tmp_path, rows, world_now)
    yield made
    made.stop()


def _step(twins: Twins, rng: random.Random, n_rows: int, tmp: Path) -> str:
    """One random change to both copies; what it was, for the failure message."""
    row = rng.randrange(2, n_rows + 2)
    other = rng.randrange(2, n_rows + 2)
    kind = rng.choice(
        [
            "status", "status", "stamp", "identity", "clear capi", "clear key", "copy key",
            "swap", "edit reported", "config", "backup", "restore", "nothing", "nothing",
        ]
    )  # fmt: skip
    at = twins.now - timedelta(minutes=rng.randrange(1, 90))
    if kind == "status":
        cells: list[tuple[int, str, object]] = [(row, "Lead Status", rng.choice(STATUSES))]
        if rng.random() < 0.7:
            cells.append((row, "Status Changed At", iso(at)))
        twins.edit(cells)
    elif kind == "stamp":
        twins.edit([(row, "Status Changed At", iso(at))])
    elif kind == "identity":
        column, value = rng.choice(
            [("Email", f"other{rng.randrange(99)}@example.com"), ("Phone", "+91 98765 43210"),
             ("Leadgen ID", str(rng.randrange(10**15, 10**16))), ("Email", "")]
        )  # fmt: skip
        twins.edit([(row, column, value)])
    elif kind == "clear capi":
        twins.edit([(row, h, "") for h in BRIDGE_COLUMNS])
    elif kind == "clear key":
        twins.edit([(row, "CAPI Key", "")])
    elif kind == "copy key":
        key = twins.memo.rows()[row - 1][len(WORLD_HEADER)]
        twins.edit([(other, h, key if h == "CAPI Key" else "") for h in BRIDGE_COLUMNS])
    elif kind == "swap":  # each copy's own rows (their Meta answers differ)
        for w in twins.both:
            header, *data = w.rows()
            a, b = data[row - 2], data[other - 2]
            w.edit_cells(
                [(row, str(h), b[c] if c < len(b) else "") for c, h in enumerate(header)]
                + [(other, str(h), a[c] if c < len(a) else "") for c, h in enumerate(header)]
            )
    elif kind == "edit reported":
        status = rng.choice(STATUSES[:5])
        twins.edit([(row, "Lead Status", status), (row, "Status Changed At", iso(twins.now))])
        for w in twins.both:
            bridge = w.bridge()
            bridge.record_edit(row, None, status, twins.now)
            bridge.ledger.close()
    elif kind == "config":
        value = rng.choice([100.0, 150.0])
        for w in twins.both:
            stages = w.config.stages
            first = stages[0].model_copy(update={"value": value})
            w.config = w.config.model_copy(update={"stages": (first, *stages[1:])})
    elif kind == "backup":
        twins.backups = [
            snapshot(w.config.ledger_location({}), tmp / f"{name}-{rng.random()}.db")
            for name, w in (("memo", twins.memo), ("plain", twins.plain))
        ]
    elif kind == "restore" and twins.backups:
        for put_back in twins.backups:
            put_back()
        twins.backups = []
    return f"{kind} row {row} (other {other})"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_pass_with_memos_answers_and_leaves_what_one_without_does(
    twins: Twins, seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    done: list[str] = []
    memo, plain = twins.sync()
    assert memo == plain
    for _ in range(3):  # at rest: the memos are stored, then used
        twins.tick(rng.randrange(1, 30))
        memo, plain = twins.sync()
        assert memo == plain
    for _ in range(14):
        done.append(_step(twins, rng, 14, tmp_path))
        twins.tick(rng.randrange(1, 180))
        memo, plain = twins.sync()
        assert memo == plain, done
        if rng.random() < 0.5:  # and once more with nothing changed
            twins.tick(rng.randrange(1, 10))
            memo, plain = twins.sync()
            assert memo == plain, [*done, "again"]
    assert twins.remembered > 0  # the memos were used, not only stored
