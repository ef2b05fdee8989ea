"""Money, places and Limited Data Use as the sheet means them (issue 21, docs/values.md): each
finding through the emulator, a pass and the fake Meta."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import WORLD_HEADER, World, lead_row

MakeWorld = Callable[..., World]
EXTRA = ["Country", "Currency", "Zip", "State", "Gender"]
HEADER = [*WORLD_HEADER, *EXTRA]
COLUMNS = {
    "country": "Country",
    "currency": "Currency",
    "zip": "Zip",
    "state": "State",
    "gender": "Gender",
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def row(
    i: int,
    status: str,
    *,
    now: datetime,
    value: object = "",
    phone: str = "",
    country: str = "",
    currency: str = "",
    zip_code: str = "",
    state: str = "",
    gender: str = "",
    created_hours: float = 30.0,
) -> list[object]:
    """A lead row for HEADER: WORLD_HEADER's cells, then Country, Currency, Zip, State, Gender."""
    cells = lead_row(i, status, now=now, phone=phone, value=value, created_hours=created_hours)
    return [*cells, country, currency, zip_code, state, gender]


def world_of(make_world: MakeWorld, rows: list[list[object]], **kw: Any) -> World:
    columns = {**COLUMNS, **kw.pop("columns", {})}
    return make_world(rows, header=HEADER, columns=columns, **kw)


def events_of(world: World, i: int) -> dict[str, dict[str, Any]]:
    """The events Meta received for lead i (by its e-mail), by event name."""
    em = sha(f"lead{i}@example.com")
    return {e["event_name"]: e for e in world.meta_events() if e["user_data"].get("em") == em}


def status_of(world: World, i: int) -> str:
    return str(world.column("CAPI Status")[i - 1])


def money(event: dict[str, Any]) -> tuple[Any, Any]:
    custom = event["custom_data"]
    return custom.get("value"), custom.get("currency")


# ---- money ----------------------------------------------------------------------------------


def test_the_currency_written_in_the_value_cell_is_the_one_sent(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world,
        [
            row(1, "Customer", now=world_now, value="USD 5000"),
            row(2, "Customer", now=world_now, value="5000 eur"),
            row(3, "Customer", now=world_now, value="€5,000.50"),
            row(4, "Customer", now=world_now, value="₹5,00,000"),
        ],
    )

    world.bridge().sync()

    assert money(events_of(world, 1)["Purchase"]) == (5000, "USD")
    assert money(events_of(world, 2)["Purchase"]) == (5000, "EUR")
    assert money(events_of(world, 3)["Purchase"]) == (5000.5, "EUR")
    assert money(events_of(world, 4)["Purchase"]) == (500000, "INR")


def test_a_value_cell_is_read_with_the_sheets_locale_and_its_currency(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world, [row(1, "Customer", now=world_now, value="5.000 €")], locale="de_DE"
    )

    world.bridge().sync()

    assert money(events_of(world, 1)["Purchase"]) == (5000, "EUR")


def test_a_dollar_sign_takes_the_bridges_currency_only_when_it_is_a_dollar(
    make_world: MakeWorld, world_now: datetime
) -> None:
    in_inr = world_of(make_world, [row(1, "Customer", now=world_now, value="$5,000")])

    in_inr.bridge().sync()

    # An INR bridge cannot say which dollar: the deal value is not sent, the stage's is.
    assert money(events_of(in_inr, 1)["Purchase"]) == (50000, "INR")
    assert "several currencies write" in status_of(in_inr, 1)
    assert "USD 5000" in status_of(in_inr, 1)  # the fix, with an example


def test_a_dollar_sign_in_a_usd_bridge_is_usd(make_world: MakeWorld, world_now: datetime) -> None:
    world = world_of(
        make_world, [row(1, "Customer", now=world_now, value="$5,000")], meta={"currency": "USD"}
    )

    world.bridge().sync()

    assert money(events_of(world, 1)["Purchase"]) == (5000, "USD")


def test_a_dollar_sign_with_a_dollar_currency_cell_is_that_dollar(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world, [row(1, "Customer", now=world_now, value="$5,000", currency="CAD")]
    )

    world.bridge().sync()

    assert money(events_of(world, 1)["Purchase"]) == (5000, "CAD")


def test_a_value_whose_currency_contradicts_the_currency_cell_refuses_the_row(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world,
        [
            row(1, "Customer", now=world_now, value="USD 5000", currency="EUR"),
            row(2, "Customer", now=world_now, value="5000", currency="EUR"),
        ],
    )

    result = world.bridge().sync()

    assert events_of(world, 1) == {}
    status = status_of(world, 1)
    assert status.startswith("Invalid:")
    assert "'USD 5000' is in USD but Currency 'EUR' says EUR" in status
    assert money(events_of(world, 2)["Purchase"]) == (5000, "EUR")  # the other row goes
    assert result.counts["invalid"] == 1 and result.counts["sent"] == 1


def test_configured_stage_values_are_never_relabelled_by_the_rows_currency(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(make_world, [row(1, "SQL", now=world_now, currency="USD")])

    world.bridge().sync()

    sent = {name: money(e) for name, e in events_of(world, 1).items()}
    assert sent == {
        "Lead": (100, "INR"),
        "QualifiedLead": (1000, "INR"),
        "Schedule": (5000, "INR"),
    }


@pytest.mark.parametrize(
    ("cell", "why"),
    [
        ("5000 XYZ", "is not an ISO 4217 currency"),
        ("0", "is 0"),
        (0, "is 0"),
        (1e308, "more than 10^12"),
        ("2000000000000", "more than 10^12"),
        ("1" + "0" * 400, "characters long, not an amount"),
    ],
)
def test_a_value_not_worth_sending_leaves_the_stages_value_and_says_why(
    cell: object, why: str, make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world,
        [row(1, "Customer", now=world_now, value=cell), row(2, "Customer", now=world_now)],
    )

    result = world.bridge().sync()

    # The status change is true: Purchase still goes, with its configured value.
    assert money(events_of(world, 1)["Purchase"]) == (50000, "INR")
    assert why in status_of(world, 1)
    assert result.counts["sent"] == 2


def test_a_currency_cell_that_is_no_iso_currency_is_refused_and_its_value_with_it(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(make_world, [row(1, "Customer", now=world_now, value="5000", currency="XYZ")])

    world.bridge().sync()

    assert money(events_of(world, 1)["Purchase"]) == (50000, "INR")
    assert "Currency 'XYZ' dropped: is not an ISO 4217 currency" in status_of(world, 1)


# ---- places ---------------------------------------------------------------------------------


def test_a_lead_without_a_country_is_placed_by_its_phone_and_its_zip_follows(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world,
        [
            row(1, "New", now=world_now, phone="+1 415 555 2671", zip_code="94105-1234"),
            row(2, "New", now=world_now, phone="98765 43210"),  # national: says nothing
            row(3, "New", now=world_now, country="Untied States", phone="+44 20 7946 0958"),
        ],
    )

    world.bridge().sync()

    us = events_of(world, 1)["Lead"]["user_data"]
    assert us["country"] == sha("us") and us["zp"] == sha("94105")
    assert us["ph"] == sha("14155552671")
    national = events_of(world, 2)["Lead"]["user_data"]
    assert "country" not in national  # default_country IN is not claimed for the lead
    assert national["ph"] == sha("919876543210")  # but still reads the national number
    unreadable = events_of(world, 3)["Lead"]["user_data"]
    assert unreadable["country"] == sha("gb")
    assert "Country 'U***********s' dropped: is not a country" in status_of(world, 3)


def test_assume_country_sends_the_default_for_leads_with_no_country_of_their_own(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world,
        [row(1, "New", now=world_now), row(2, "New", now=world_now, phone="+1 415 555 2671")],
        meta={"assume_country": True},
    )

    world.bridge().sync()

    assert events_of(world, 1)["Lead"]["user_data"]["country"] == sha("in")
    assert events_of(world, 2)["Lead"]["user_data"]["country"] == sha("us")  # its phone's


LDU = (
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
)


def ldu_of(event: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(event.get(k) for k in LDU)


@pytest.mark.parametrize(
    "meta",
    [
        {"data_processing_options": ["LDU"]},
        {
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 1,
            "data_processing_options_state": 1000,
        },
    ],
    ids=["geolocate", "configured-california"],
)
def test_limited_data_use_follows_each_leads_own_place(
    meta: dict[str, Any], make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world,
        [
            row(1, "New", now=world_now, country="US", state="California"),
            row(2, "New", now=world_now, phone="+1 415 555 2671", state="Calif."),
            row(3, "New", now=world_now, country="India", state="CA"),  # not the US state
            row(4, "New", now=world_now, phone="98765 43210"),
            row(5, "New", now=world_now, country="US", state="Texas"),
        ],
        meta=meta,
    )

    world.bridge().sync()

    ldu = [ldu_of(events_of(world, i)["Lead"]) for i in range(1, 6)]
    assert ldu == [
        (["LDU"], 1, 1000),
        (["LDU"], 1, 1000),
        (["LDU"], 0, 0),  # an Indian lead is never told to Meta as a Californian
        (["LDU"], 0, 0),
        (["LDU"], 0, 0),  # Meta geolocates the states it gives no number for here
    ]


def test_a_configured_ldu_place_stands_for_us_leads_only_when_every_lead_is_there(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(
        make_world,
        [row(1, "New", now=world_now), row(2, "New", now=world_now, phone="+91 98765 43210")],
        meta={
            "default_country": "US",
            "assume_country": True,
            "data_processing_options": ["LDU"],
            "data_processing_options_country": 1,
            "data_processing_options_state": 1000,
        },
    )

    world.bridge().sync()

    assert ldu_of(events_of(world, 1)["Lead"]) == (["LDU"], 1, 1000)
    assert ldu_of(events_of(world, 2)["Lead"]) == (["LDU"], 0, 0)


# ---- Meta's parameter builder parity --------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "code"),
    [("Calif.", "ca"), ("Mass.", "ma"), ("Fla.", "fl"), ("N.Y.", "ny"), ("Tex.", "tx")],
)
def test_dotted_state_abbreviations_are_sent_as_state_codes(
    cell: str, code: str, make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(make_world, [row(1, "New", now=world_now, country="US", state=cell)])

    world.bridge().sync()

    assert events_of(world, 1)["Lead"]["user_data"]["st"] == sha(code)


@pytest.mark.parametrize(
    ("cell", "code"), [("Girl", "f"), ("Lady", "f"), ("She", "f"), ("He", "m"), ("Mr", "m")]
)
def test_the_parameter_builders_gender_words_are_sent(
    cell: str, code: str, make_world: MakeWorld, world_now: datetime
) -> None:
    world = world_of(make_world, [row(1, "New", now=world_now, gender=cell)])

    world.bridge().sync()

    assert events_of(world, 1)["Lead"]["user_data"]["ge"] == sha(code)
    assert "dropped" not in status_of(world, 1)


def test_check_counts_where_the_sheets_leads_get_their_country(
    make_world: MakeWorld, world_now: datetime
) -> None:
    from sheet_bridge.checks import run_checks

    world = world_of(
        make_world,
        [
            row(1, "New", now=world_now, country="India"),
            row(2, "New", now=world_now, phone="+1 415 555 2671"),
            row(3, "New", now=world_now, phone="+44 20 7946 0958"),
            row(4, "New", now=world_now, phone="98765 43210"),
        ],
    )

    text = run_checks(world.config, environ={"META_CAPI_TOKEN": "t"}).text()

    assert (
        "leads' countries: 2 from their phone's country code, 1 from their Country cell, "
        "1 from nothing: no country is sent"
    ) in text
