"""The CAPI Log of a large pass is appended while it sends (sync/capi_log.py): each event's line
once, the rows it could not append while sending appended at the end, the ledger's count of
the Log's lines right whatever was appended when."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import httpx
import pytest

from sheet_bridge.sheets.client import SheetsError
from sheet_bridge.sync import capi_log
from sheet_bridge.sync.capi_log import LogStream
from sheet_bridge.sync.outcomes import RowReport
from tests.conftest import WORLD_SHEET, World, lead_row
from tests.sync.test_send import set_speed

MakeWorld = Callable[..., World]


def emulator_methods(world: World) -> list[str]:
    log = httpx.get(world.sheets_url + "/_emulator/requests", timeout=10).json()["requests"]
    return [r["method"] for r in log]


def capi_log_lines(world: World) -> list[list[Any]]:
    data = httpx.get(world.sheets_url + "/_emulator/data", timeout=10).json()
    lines: list[list[Any]] = data["spreadsheets"][WORLD_SHEET]["sheets"]["CAPI Log"][1:]
    return lines


def test_a_log_longer_than_one_call_is_appended_while_the_pass_sends(
    make_world: MakeWorld, world_now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capi_log, "CALL_BYTES", 1_500)  # a few leads' lines a call
    statuses = ["MQL", "SQL", "New", "Opportunity"] * 8
    world = make_world(
        [lead_row(i, s, now=world_now) for i, s in enumerate(statuses)],
        meta={"batch_size": 4, "max_in_flight": 2},
    )
    set_speed(world, latency_ms=40)  # Meta's answers take long enough for appends between

    result = world.bridge().sync()

    methods = emulator_methods(world)
    cells_at = methods.index("values.batchUpdate")  # the rows' cells: once Meta answered all
    assert methods[:cells_at].count("values.append") >= 2  # appended while sending
    lines = capi_log_lines(world)
    logged = Counter((row, event) for _, row, _, _, event, _, _, _, _ in lines)
    decided = Counter((r.row, e[0]) for r in result.rows for e in r.logged)
    assert logged == decided and set(logged.values()) == {1}  # each event's line once
    assert sum(decided.values()) == result.events_sent > 40

    world.bridge().sync()  # the ledger counted every line: nothing behind, nothing appended
    assert len(capi_log_lines(world)) == len(lines)


def test_a_pass_smaller_than_one_call_appends_its_log_once_at_the_end(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(
        [lead_row(i, "SQL", now=world_now) for i in range(6)], meta={"batch_size": 2}
    )

    world.bridge().sync()

    methods = emulator_methods(world)
    assert methods.count("values.append") == 1
    assert methods.index("values.append") > methods.index("values.batchUpdate")
    assert [line[1] for line in capi_log_lines(world)] == sorted(
        line[1] for line in capi_log_lines(world)
    )  # row by row


class FlakySheets:
    """A Sheets client whose first append fails (Google's 500s outlasted the retries)."""

    def __init__(self) -> None:
        self.appended: list[list[object]] = []
        self.calls = 0

    def append_log(self, rows: Iterable[Sequence[object]], header: Sequence[str]) -> int:
        self.calls += 1
        lines = [list(r) for r in rows]
        if self.calls == 1:
            raise SheetsError("Google answered 500 five times")
        self.appended += lines
        return 1 + len(self.appended)


def report(row: int) -> RowReport:
    return RowReport(
        row=row,
        lead_key=f"key{row}",
        status="MQL",
        outcome="sent",
        message="",
        logged=(("Lead", f"sb.{row}.Lead", "sent", "ok"), ("QualifiedLead", "x", "sent", "ok")),
    )


def test_an_append_that_fails_while_sending_leaves_its_rows_to_the_end() -> None:
    sheets = FlakySheets()
    stream = LogStream(sheets, "Leads", lambda: "stamp", call_bytes=300)  # type: ignore[arg-type]
    reports = [report(n) for n in range(2, 12)]

    for r in reports:
        stream.add(r)
    stream.close()

    assert sheets.calls == 1  # after a failure, no more appends while sending
    assert stream.appended == set() and stream.last is None  # every row left to the pass


def test_appended_rows_are_known_and_the_lines_carry_the_stamp_in_front() -> None:
    sheets = FlakySheets()
    sheets.calls = 1  # no failure
    stream = LogStream(sheets, "Leads", lambda: "stamp", call_bytes=300)  # type: ignore[arg-type]
    reports = [report(n) for n in range(2, 12)]

    for r in reports:
        stream.add(r)
    stream.close()

    taken = [r for r in reports if id(r) in stream.appended]
    # Oldest first; the rows added while an append was in flight wait for the pass's own.
    assert taken == reports[: len(taken)] and len(taken) >= 2
    assert sheets.appended[0] == [
        "stamp",
        2,
        "key2",
        "MQL",
        "Lead",
        "sb.2.Lead",
        "sent",
        "ok",
        "Leads",
    ]
    assert len(sheets.appended) == 2 * len(taken)
    assert stream.last == 1 + len(sheets.appended)
