"""Text dates are read in the spreadsheet's locale, as Sheets reads them (issue 21, item 3): in an
en_US sheet 12/01/2026 is 1 December (spreadsheets.get `properties.locale`,
https://developers.google.com/sheets/api/reference/rest/v4/spreadsheets#SpreadsheetProperties);
[sheets] date_order overrides it; `check` warns when the sheet's dates contradict the reading. A
date-only Created At is "some time that day", read as a date-only Status Changed At is."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sheet_bridge.checks import run_checks
from sheet_bridge.meta.identity import sha256_hex
from tests.conftest import WORLD_TZ, World, iso

MakeWorld = Callable[..., World]
SHEET_ZONE = ZoneInfo(WORLD_TZ)
# A fixed day, so 12/01/2026 is three days ago: both the bridge and the fake Meta keep this clock.
NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


@pytest.fixture
def world_now() -> datetime:
    return NOW


def row(i: int, status: str, created: object, changed: object = "") -> list[object]:
    return [created, f"Lead{i}", f"lead{i}@example.com", "", "", "", status, changed, ""]


def at_sheet_time(*args: int) -> int:
    return int(datetime(*args, tzinfo=SHEET_ZONE).timestamp())  # type: ignore[misc]


def lead_times(world: World) -> dict[str, int]:
    """Each lead's Lead event_time, by lead number, as the fake Meta received it."""
    out = {}
    for e in world.meta_events():
        for i in range(1, 10):
            if e["user_data"].get("em") == sha256_hex(f"lead{i}@example.com"):
                out[f"lead{i}"] = e["event_time"]
    return out


def test_en_us_sheet_reads_text_dates_month_first_as_sheets_does(make_world: MakeWorld) -> None:
    world = make_world(
        [
            row(1, "New", "12/01/2026 09:00"),
            row(2, "New", "12/1/2026 9:00:00"),  # Sheets' own display form in en_US
        ],
        locale="en_US",
        meta_now=NOW.timestamp,
    )

    world.bridge().sync()

    december_1 = at_sheet_time(2026, 12, 1, 9, 0)
    assert lead_times(world) == {"lead1": december_1, "lead2": december_1}


def test_day_first_locale_reads_the_same_text_as_12_january(make_world: MakeWorld) -> None:
    world = make_world(
        [row(1, "New", "04/12/2026 09:00"), row(2, "MQL", "01/12/2026 09:00", "04/12/2026 08:00")],
        locale="en_GB",
        meta_now=NOW.timestamp,
    )

    world.bridge().sync()

    assert lead_times(world)["lead1"] == at_sheet_time(2026, 12, 4, 9, 0)
    assert world.column("CAPI Status")[1].startswith("Sent")  # 1 December, 4 December


def test_date_order_in_the_config_overrides_the_locale(make_world: MakeWorld) -> None:
    world = make_world(
        [row(1, "New", "01/12/2026 09:00")],
        locale="en_US",
        meta_now=NOW.timestamp,
        sheets={"date_order": "day_first"},
    )

    world.bridge().sync()

    assert lead_times(world) == {"lead1": at_sheet_time(2026, 12, 1, 9, 0)}


def test_check_warns_when_the_sheets_dates_contradict_its_locale(make_world: MakeWorld) -> None:
    world = make_world(
        [row(1, "New", "25/11/2026 09:00"), row(2, "New", "01/12/2026 09:00")],
        locale="en_US",
        meta_now=NOW.timestamp,
    )

    report = run_checks(world.config, environ={})

    texts = [f.text for f in report.findings]
    assert (
        "text dates are read month first (01/12/2026 is 12 January), from the spreadsheet's "
        "locale en_US" in texts
    )
    warning = next(f.text for f in report.findings if "can only be read day first" in f.text)
    assert "row 2, Created At: '25/11/2026 09:00'" in warning
    assert 'Set [sheets] date_order = "day_first"' in warning

    agreeing = make_world([row(1, "New", "25/11/2026 09:00")], locale="en_IN")
    assert not any("can only be read" in t for t in run_checks(agreeing.config, environ={})
                   .warnings())  # fmt: skip


def test_date_only_created_at_is_some_time_that_day_not_midnight(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """A lead new since the 08:00 pass, Created At "today" with no time: it was created after
    that pass saw the sheet without it, so its Lead is not sent as of midnight."""
    today = world_now.astimezone(SHEET_ZONE).date()
    world = make_world(
        [row(1, "New", iso(world_now - timedelta(hours=30)))], meta_now=NOW.timestamp
    )
    earlier = world_now - timedelta(hours=2)
    world.bridge(clock=lambda: earlier).sync()
    world.edit_cells([(3, h, v) for h, v in zip(
        ["Created At", "First Name", "Email", "Lead Status"],
        [today.isoformat(), "Lead2", "lead2@example.com", "New"],
        strict=True,
    )])  # fmt: skip

    world.bridge().sync()

    midnight = at_sheet_time(today.year, today.month, today.day)
    assert lead_times(world)["lead2"] == int(earlier.timestamp())
    assert lead_times(world)["lead2"] != midnight
