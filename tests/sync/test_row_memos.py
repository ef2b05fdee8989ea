"""Row memos (sync/memo.py, docs/performance.md "Row memos"), on both backends: a full pass
leaves out the rows whose memo holds and answers exactly as if it had planned them; the ledger
deletes a lead's memo whenever anything of that lead is written; what could make a memo wrong
(a changed row, a duplicated key, a changed config, an edit waiting, a restored ledger) makes the
pass plan the row again (issue 24: "the no-change pass reads, compares digests and stops")."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sheet_bridge.config import BRIDGE_COLUMNS
from sheet_bridge.meta.client import SendOutcome
from sheet_bridge.sheets.client import SheetsClient, SheetsError
from sheet_bridge.sync import memo as memo_module
from sheet_bridge.sync.ledger import (
    AdoptedEvent,
    EditChange,
    LedgerBackend,
    SheetTab,
    open_ledger,
)
from sheet_bridge.sync.ledger.contract import PendingEdit
from sheet_bridge.sync.memo import decode_report, encode_report
from sheet_bridge.sync.outcomes import RowReport
from sheet_bridge.sync.run import LOG_HEADER, LedgerBehindSheet, SyncResult
from tests.conftest import World, iso, lead_row
from tests.ledger_backends import run_sql, snapshot, table_names
from tests.sync.test_ledger import NOW, planned, queued

MakeWorld = Callable[..., World]
WHERE = SheetTab("sheet-1", "Leads")
OTHER_TAB = SheetTab("sheet-1", "Brand B")


@pytest.fixture
def ledger(ledger_location: str) -> Iterator[LedgerBackend]:
    opened = open_ledger(ledger_location)
    yield opened
    opened.close()


def memo(key: str) -> tuple[str, str, str, str]:
    return (key, f"digest-{key}", "fp", "[]")


# -- the ledger's side ---------------------------------------------------------------------


def test_memos_are_stored_per_tab_and_forgotten_on_request(ledger: LedgerBackend) -> None:
    ledger.store_row_memos(WHERE, [memo("kA"), memo("kB")], [], NOW, NOW)
    ledger.store_row_memos(OTHER_TAB, [memo("kA")], [], NOW, NOW)

    assert sorted(ledger.row_memos(WHERE)) == ["kA", "kB"]
    assert ledger.row_memos(WHERE)["kB"] == ("digest-kB", "fp", "[]")

    ledger.store_row_memos(WHERE, [memo("kC")], ["kA"], NOW, NOW)

    assert sorted(ledger.row_memos(WHERE)) == ["kB", "kC"]
    assert sorted(ledger.row_memos(OTHER_TAB)) == ["kA"]


def test_memos_read_back_share_one_fingerprint_text(ledger: LedgerBackend) -> None:
    # A tab's 100,000 memos hold one fingerprint or two: read as one string each, not one a
    # memo (the no-change pass holds them beside the whole tab's read).
    fingerprint = "f" * 32
    rows = [(f"k{i}", f"digest-{i}", "".join(fingerprint), "[]") for i in range(5)]
    ledger.store_row_memos(WHERE, [*rows, ("kOld", "digest-old", "g" * 32, "[]")], [], NOW, NOW)

    memos = ledger.row_memos(WHERE)

    assert {m.fingerprint for m in memos.values()} == {"f" * 32, "g" * 32}
    assert len({id(memos[f"k{i}"].fingerprint) for i in range(5)}) == 1
    assert [memos[f"k{i}"].digest for i in range(5)] == [f"digest-{i}" for i in range(5)]


def test_any_write_of_a_lead_deletes_its_memo_and_no_other(ledger: LedgerBackend) -> None:
    """The triggers: whoever writes an event, a transition or a queued edit of a lead (a pass,
    an edit, adopt, an older sheet-bridge) deletes that lead's memo, on that tab only."""
    keys = ["k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "kEnd"]
    ledger.store_row_memos(WHERE, [memo(k) for k in keys], [], NOW, NOW)
    ledger.store_row_memos(OTHER_TAB, [memo(k) for k in keys], [], NOW, NOW)
    ledger.mark_sending(WHERE, [planned("k2")], {}, {}, NOW)
    ledger.store_row_memos(WHERE, [memo("k2")], [], NOW, NOW)  # stored after the write
    writes: list[tuple[str, Callable[[], Any]]] = [
        ("k1", lambda: ledger.mark_sending(WHERE, [planned("k1")], {}, {}, NOW)),
        (
            "k2",
            lambda: ledger.record_outcomes(
                WHERE, [(planned("k2"), SendOutcome("sent", "ok", fbtrace_id="A1"))], NOW
            ),
        ),
        ("k3", lambda: ledger.add_transitions(WHERE, [("k3", "MQL", NOW, "seen")], NOW)),
        (
            "k4",
            lambda: ledger.record_edits(
                WHERE, [EditChange("k4", None, queued("k4", "MQL", NOW))], NOW
            ),
        ),
        (
            "k5",
            lambda: ledger.adopt(
                WHERE,
                [
                    AdoptedEvent(
                        "k5", "Lead", "sb.k5", "sent", int(NOW.timestamp()), 2, "New", 0, NOW
                    )
                ],
                NOW,
            ),
        ),
        (
            "k6",
            lambda: ledger.resolve_edits(
                WHERE,
                [
                    (
                        PendingEdit(
                            ledger.add_edit(WHERE, 7, "New", "MQL", NOW, NOW),
                            7,
                            "New",
                            "MQL",
                            NOW,
                            NOW,
                        ),
                        "k6",
                    )
                ],
            ),
        ),
    ]
    for key, write in writes:
        assert key in ledger.row_memos(WHERE)
        write()
        assert key not in ledger.row_memos(WHERE), key
    assert sorted(ledger.row_memos(WHERE)) == ["k7", "k8", "kEnd"]
    assert sorted(ledger.row_memos(OTHER_TAB)) == sorted(keys)


def test_an_edit_recorded_while_the_pass_ran_keeps_its_lead_from_a_memo(
    ledger: LedgerBackend,
) -> None:
    """An edit is recorded without the tab's lock: one recorded after the pass started may
    postdate the history the pass planned with, so that lead's memo is not stored."""
    started = NOW
    earlier = NOW - timedelta(minutes=1)  # before the pass: its history had it
    ledger.add_transitions(WHERE, [("kOld", "MQL", earlier, "edit")], earlier)
    ledger.record_edits(
        WHERE, [EditChange("kEdit", None, queued("kEdit", "MQL", NOW))], NOW + timedelta(seconds=1)
    )

    ledger.store_row_memos(WHERE, [memo("kEdit"), memo("kOld"), memo("kQuiet")], [], started, NOW)

    assert sorted(ledger.row_memos(WHERE)) == ["kOld", "kQuiet"]


def test_a_ledger_without_memos_gains_them_within_schema_5(
    ledger_location: str,
) -> None:
    """Added within schema 5 (like log_lines): a ledger made before them gains the table and
    its triggers on opening, with everything else kept."""
    first = open_ledger(ledger_location)
    first.mark_sending(WHERE, [planned("kA")], {}, {}, NOW)
    first.close()
    if ledger_location.startswith("postgresql"):
        run_sql(ledger_location, "DROP TABLE lead_memos")
        for table in ("events", "transitions", "edit_queue"):
            for when in ("insert", "update", "delete"):
                run_sql(ledger_location, f"DROP TRIGGER {table}_{when}_forgets_memo ON {table}")
    else:
        for table in ("events", "transitions", "edit_queue"):
            for when in ("insert", "update", "delete"):
                run_sql(ledger_location, f"DROP TRIGGER {table}_{when}_forgets_memo")
        run_sql(ledger_location, "DROP TABLE lead_memos")
    assert "lead_memos" not in table_names(ledger_location)

    again = open_ledger(ledger_location)
    try:
        assert "lead_memos" in table_names(ledger_location)
        assert again.counts_by_state(WHERE) == {"sending": 1}
        again.store_row_memos(WHERE, [memo("kA"), memo("kB")], [], NOW, NOW)
        again.mark_sending(WHERE, [planned("kB")], {}, {}, NOW)
        assert sorted(again.row_memos(WHERE)) == ["kA"]
    finally:
        again.close()


def test_a_report_survives_its_memo() -> None:
    report = RowReport(
        row=7,
        lead_key="Labc",
        status="MQL",
        outcome="already_sent",
        message="Sent: Lead, QualifiedLead · Warning: ü",
        event_states=(("Lead", "sb.1", "sent", 1700000000), ("QualifiedLead", "sb.2", "sent", 2)),
        strength=None,
        cells=("Labc", "sb.2", "Sent: Lead, QualifiedLead", "2026-01-01 10:00:00 +0530", "ok"),
    )

    assert decode_report(9, "Labc", encode_report(report)) == RowReport(
        **{**{f: getattr(report, f) for f in report.__slots__}, "row": 9}  # type: ignore[attr-defined]
    )


def test_a_sent_row_s_memo_holds_the_report_the_next_pass_gives_it() -> None:
    """A row whose events a pass sent is remembered with the next pass's report: "already
    sent", no strength, nothing logged (the rest as the pass wrote it)."""
    sent = RowReport(
        row=3,
        lead_key="Lsent",
        status="SQL",
        outcome="sent",
        message="Sent: Lead, QualifiedLead, Schedule",
        event_states=(("Lead", "sb.1", "sent", 1), ("Schedule", "sb.3", "sent", 3)),
        strength="strong",
        cells=("Lsent", "sb.3", "Sent: Lead, QualifiedLead, Schedule", "2026-01-01", "ok"),
        logged=(("Schedule", "sb.3", "sent", "ok"),),
    )

    remembered = decode_report(3, "Lsent", encode_report(sent, remembered=True))

    assert remembered == replace(sent, outcome="already_sent", strength=None, logged=())


# -- the pass's side -----------------------------------------------------------------------


def rows_json(result: SyncResult) -> list[dict[str, Any]]:
    return [{**r.to_json(), "cells": r.cells, "logged": r.logged} for r in result.rows]


def settled_world(make_world: MakeWorld, now: datetime, n: int = 6) -> World:
    """n leads sent (the first pass stores their memos: the report the next pass gives
    them), then a pass with no change that answers from them."""
    statuses = ["New", "MQL", "SQL", "Customer", "On hold", ""]
    world = make_world([lead_row(i, statuses[i % len(statuses)], now=now) for i in range(n)])
    bridge = world.bridge()
    bridge.sync()
    second = bridge.sync()
    assert second.rows_remembered == 4  # New, MQL, SQL and Customer, sent by the first
    bridge.ledger.close()
    return world


def test_a_pass_over_an_unchanged_sheet_answers_from_the_memos(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = settled_world(make_world, world_now)
    bridge = world.bridge()
    plain = world.bridge(row_memos=False).sync()  # changes nothing: the same state for both
    events = bridge.ledger.events(bridge.sheet_tab)
    sheet = world.rows()

    result = bridge.sync()

    # New, MQL, SQL and Customer are at rest; On hold and blank are skipped rows the sidebar
    # lists (they say why), planned on every pass.
    assert result.rows_remembered == 4
    assert rows_json(result) == rows_json(plain)
    assert result.counts == plain.counts
    assert result.summary()["attention"] == plain.summary()["attention"]
    assert result.cells_written == 0 and result.events_sent == 0
    assert bridge.ledger.events(bridge.sheet_tab) == events
    assert world.rows() == sheet
    assert bridge.sync().rows_remembered == 4  # and again


@pytest.mark.parametrize("refused", ["write_cells", "append_log"])
def test_memos_are_stored_once_the_rows_cells_are_written_whatever_the_log_does(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch, refused: str
) -> None:
    """A row stands as its memo says once its cells are written, whatever the CAPI Log's
    append does. Cells Google refused leave rows that do not match their memos: the next pass
    plans the rows and writes them."""
    statuses = ["New", "MQL", "SQL", "Customer"]
    world = make_world([lead_row(i, statuses[i], now=world_now) for i in range(4)])
    bridge = world.bridge()

    def refuse(*args: Any, **kw: Any) -> Any:
        raise SheetsError("Google said no (403) this once")

    monkeypatch.setattr(bridge.sheets, refused, refuse)
    first = bridge.sync()
    assert any("could not be updated" in n for n in first.notices)
    second = world.bridge().sync()
    assert second.events_sent == 0  # nothing twice, either way
    if refused == "append_log":
        assert second.rows_remembered == 4 and second.cells_written == 0
    else:
        assert second.rows_remembered == 0 and second.cells_written > 0


def test_a_memo_stored_while_google_refuses_its_rows_cells_is_not_trusted(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memos are stored while Google writes the rows' cells, not after: a memo holds the
    digest of its row as the write-back leaves it, bridge cells included, so a row Google did
    not write reads differently and is planned again, whatever the ledger holds."""
    statuses = ["New", "MQL", "SQL", "Customer"]
    world = make_world([lead_row(i, statuses[i], now=world_now) for i in range(4)])
    bridge = world.bridge()
    stored_before_write: list[int] = []

    def refuse(*args: Any, **kw: Any) -> Any:
        deadline = time.monotonic() + 10  # the memos' store runs beside the write-back
        while not bridge.ledger.row_memos(bridge.sheet_tab) and time.monotonic() < deadline:
            time.sleep(0.01)
        stored_before_write.append(len(bridge.ledger.row_memos(bridge.sheet_tab)))
        raise SheetsError("Google said no (403) this once")

    monkeypatch.setattr(bridge.sheets, "write_cells", refuse)
    bridge.sync()
    assert stored_before_write == [4]
    assert len(bridge.ledger.row_memos(bridge.sheet_tab)) == 4

    again = world.bridge().sync()
    assert again.rows_remembered == 0 and again.events_sent == 0
    assert again.cells_written > 0


def test_a_fault_of_ours_while_the_memos_are_made_is_the_pass_s_not_lost_on_a_thread(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memos are made and stored on helper threads beside the write-back: a bug there
    fails the pass in full (its error raised), it is not left in a future nobody reads."""
    world = make_world([lead_row(i, "MQL", now=world_now) for i in range(3)])

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("a bug in making the memos")

    monkeypatch.setattr(memo_module.Remembered, "to_store", broken)
    with pytest.raises(RuntimeError, match="a bug in making the memos"):
        world.bridge().sync()
    monkeypatch.undo()
    again = world.bridge().sync()
    assert again.events_sent == 0  # sent and recorded by the pass that failed


def test_the_answer_of_a_pass_decodes_the_memos_only_when_its_rows_are_read(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counts, the summary (the add-on's answer, the pass's record) and the metrics need no
    memo'd report: they are decoded only for whoever reads the rows, and then are the rows a
    plan would give."""
    world = settled_world(make_world, world_now)
    plain = world.bridge(row_memos=False).sync()
    decoded: list[int] = []
    real = memo_module.decode_reports

    def counting(skipped: Any, kept: Any) -> list[RowReport]:
        decoded.append(len(skipped))
        return real(skipped, kept)

    monkeypatch.setattr(memo_module, "decode_reports", counting)

    result = world.bridge().sync()

    assert result.rows_remembered == 4
    assert result.counts == plain.counts
    assert result.summary() == {**plain.summary(), "seconds": result.summary()["seconds"]}
    assert len(result.rows) == len(plain.rows)
    assert decoded == []
    assert rows_json(result) == rows_json(plain)
    assert rows_json(result) == rows_json(plain)  # read twice, decoded once
    assert decoded == [4]
    assert [r.row for r in result.rows[1:3]] == [r.row for r in plain.rows[1:3]]


def test_a_changed_row_is_planned_again_and_the_others_stay_remembered(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = settled_world(make_world, world_now)
    # A minute on: at one frozen instant the ledger would hold New and Customer seen at the
    # same time, and each pass would see the change again.
    world.now += timedelta(minutes=1)
    world.edit_cells([(2, "Lead Status", "Customer"), (2, "Status Changed At", iso(world.now))])
    bridge = world.bridge()

    result = bridge.sync()

    assert result.rows_remembered == 3
    assert result.events_sent == 4  # row 2 went from New to Customer
    assert result.rows[0].outcome == "sent"
    # The pass that sent row 2's events stored the memo of what the next pass says of it.
    assert bridge.sync().rows_remembered == 4


def test_rows_moved_by_a_sort_keep_their_memo_under_their_new_number(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = settled_world(make_world, world_now)
    rows = world.rows()
    header, data = rows[0], rows[1:]
    swapped = [data[1], data[0], *data[2:]]
    world.edit_cells(
        [
            (n + 2, str(h), row[c] if c < len(row) else "")
            for n, row in enumerate(swapped)
            for c, h in enumerate(header)
        ]
    )
    plain = world.bridge(row_memos=False).sync()

    result = world.bridge().sync()

    assert result.rows_remembered == 4
    assert rows_json(result) == rows_json(plain)
    assert [r.row for r in result.rows] == sorted(r.row for r in result.rows)


def test_a_key_on_two_rows_is_planned_on_both(make_world: MakeWorld, world_now: datetime) -> None:
    world = settled_world(make_world, world_now)
    key = world.column("CAPI Key")[1]
    before = world.bridge().sync()
    # Row 3 copied over row 4's CAPI cells with its key only: row 4 is now row 3's lead.
    world.edit_cells([(4, h, key if h == "CAPI Key" else "") for h in BRIDGE_COLUMNS])

    result = world.bridge().sync()

    assert result.rows_remembered == 2  # rows 2 and 5
    row3, row4 = (r for r in result.rows if r.row in (3, 4))
    assert rows_json(SyncResult("", "", False, "", {}, [row3])) == rows_json(
        SyncResult("", "", False, "", {}, [r for r in before.rows if r.row == 3])
    )
    assert (row4.lead_key, row4.outcome) == (key, "skipped")
    assert row4.message.startswith("Skipped: same lead as row 3")


def test_a_changed_config_plans_every_row(make_world: MakeWorld, world_now: datetime) -> None:
    world = settled_world(make_world, world_now)
    world.config = world.config.model_copy(
        update={"sync": world.config.sync.model_copy(update={"settle_seconds": 30})}
    )

    assert world.bridge().sync().rows_remembered == 0
    assert world.bridge().sync().rows_remembered == 4


def test_a_preview_and_a_pass_of_some_rows_use_no_memo(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = settled_world(make_world, world_now)
    bridge = world.bridge()

    preview = bridge.sync(dry_run=True)
    some = bridge.sync(rows=[2, 3])

    assert preview.rows_remembered == some.rows_remembered == 0
    assert bridge.sync().rows_remembered == 4  # neither stored nor deleted a memo


def test_a_status_edit_waiting_plans_its_row(make_world: MakeWorld, world_now: datetime) -> None:
    """An edit the add-on reported (kept until a pass maps its row to a lead) puts its row in
    the plan even when the row reads as the memo says."""
    world = settled_world(make_world, world_now)
    bridge = world.bridge()
    bridge.record_edit(3, "MQL", "MQL", world_now)
    plain_world_rows = world.rows()

    result = bridge.sync()

    assert result.rows_remembered == 3
    assert world.rows() == plain_world_rows


def test_a_restored_ledger_with_older_memos_refuses_as_without_them(
    make_world: MakeWorld, world_now: datetime, tmp_path: Path
) -> None:
    """A backup taken when rows were at rest carries their memos. A row unchanged since then
    matches its memo and is left out, soundly: the backup knows everything that row shows. A
    row that moved on since (sent more, wrote its cells) does not match: it is planned, and
    the ledger-behind check refuses as it would without memos."""
    world = settled_world(make_world, world_now)
    put_back = snapshot(world.config.ledger_location({}), tmp_path / "backup.db")
    world.edit_cells([(2, "Lead Status", "Customer"), (2, "Status Changed At", iso(world_now))])
    bridge = world.bridge()
    assert bridge.sync().events_sent == 4
    bridge.ledger.close()
    put_back()

    with pytest.raises(LedgerBehindSheet) as plain:
        world.bridge(row_memos=False).sync()
    with pytest.raises(LedgerBehindSheet) as remembered:
        world.bridge().sync()

    assert str(remembered.value) == str(plain.value)
    assert "rows 2)" in str(plain.value)


def test_a_capi_log_line_of_a_row_left_out_is_checked_as_before(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """A CAPI Log line past the ledger's count (another host's pass, a restored ledger) naming
    an event the ledger lacks refuses the pass, whether its row is planned or left out."""
    world = settled_world(make_world, world_now)
    key = world.column("CAPI Key")[0]  # row 2, at rest (New, its Lead sent)
    line = [iso(world_now), 2, key, "Customer", "Purchase", "sb.elsewhere", "sent", "ok", "Leads"]
    SheetsClient(world.config.sheets).append_log([line], LOG_HEADER)

    with pytest.raises(LedgerBehindSheet) as plain:
        world.bridge(row_memos=False).sync()
    with pytest.raises(LedgerBehindSheet) as remembered:
        world.bridge().sync()

    assert str(remembered.value) == str(plain.value)
    assert "rows 2)" in str(plain.value)
