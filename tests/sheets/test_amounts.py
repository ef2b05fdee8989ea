"""Amounts typed as text are read with the spreadsheet's locale, or refused in words; negative
amounts are refused with the reason (issue 16, "Also"). Numbers in number cells need no locale."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sheet_bridge.sheets.table import AmountError, decimal_mark, parse_amount, parse_money
from tests.conftest import World, lead_row


@pytest.mark.parametrize(
    ("text", "locale", "amount"),
    [
        ("1.234,56", "de_DE", 1234.56),
        ("1,234.56", "en_US", 1234.56),
        ("1,234.56", "de_DE", 1234.56),  # only one reading is a number: it is the one
        ("1.234,56", "en_US", 1234.56),
        ("1.234", "de_DE", 1234.0),  # both readings are numbers: the locale decides
        ("1,234", "de_DE", 1.234),
        ("1,234", "en_US", 1234.0),
        ("1.234", "en_US", 1.234),
        ("1.234.567,89", "de_DE", 1234567.89),
        ("1 234,56", "fr_FR", 1234.56),
        ("1\u202f234,56", "fr_FR", 1234.56),  # the narrow no-break space Sheets writes in fr_FR
        ("1'234.56", "de_CH", 1234.56),
        ("1.234", "de_CH", 1.234),  # Swiss German writes a decimal point
        ("1.234", "es_MX", 1.234),
        ("1.234", "es_ES", 1234.0),
        ("12,34,567", "en_IN", 1234567.0),  # lakh grouping
        ("₹5,00,000", "en_IN", 500000.0),
        ("Rs. 5,000", "en_IN", 5000.0),
        ("5.000 EUR", "de_DE", 5000.0),
        ("€ 1.234,50", "de_DE", 1234.5),
        ("USD 1,000.50", "en_US", 1000.5),
        ("5000", "xx_XX", 5000.0),  # no separator: no locale needed
        ("1234,56", "en_US", 1234.56),
        ("0,5", "pt_BR", 0.5),
        (".5", "en_US", 0.5),
        ("-1,000", "en_US", -1000.0),  # the sign is kept; the row reader refuses it
        ("(1,000)", "en_US", -1000.0),
        ("\u22121.000", "de_DE", -1000.0),
    ],
)
def test_text_amount_is_read_with_the_sheets_locale(text: str, locale: str, amount: float) -> None:
    assert parse_amount(text, locale) == pytest.approx(amount)


@pytest.mark.parametrize(
    ("text", "locale", "amount", "marks"),
    [
        ("$5,000", "en_US", 5000.0, ("$",)),
        ("US$5,000", "en_US", 5000.0, ("US$",)),
        ("5.000 €", "de_DE", 5000.0, ("€",)),
        ("USD 5000", "en_US", 5000.0, ("USD",)),
        ("5000 usd", "en_US", 5000.0, ("usd",)),
        ("Rs. 5,00,000", "en_IN", 500000.0, ("Rs.",)),
        ("5 000 kr", "sv_SE", 5000.0, ("kr",)),
        ("-$1,000", "en_US", -1000.0, ("$",)),
        ("5000", "en_US", 5000.0, ()),
        (5000, "en_US", 5000.0, ()),
    ],
)
def test_the_currency_written_around_an_amount_is_kept_as_written(
    text: object, locale: str, amount: float, marks: tuple[str, ...]
) -> None:
    assert parse_money(text, locale) == (amount, marks)


@pytest.mark.parametrize("number", [1234.56, 5000, 0, 0.5])
@pytest.mark.parametrize("locale", ["de_DE", "en_US", "xx_XX"])
def test_a_number_cell_needs_no_locale(number: float, locale: str) -> None:
    assert parse_amount(number, locale) == number


@pytest.mark.parametrize(
    ("text", "locale", "why"),
    [
        ("1.234", "xx_XX", "reads as 1.234 or as 1234"),  # a locale that decides nothing
        ("1,234", "en_ZA", "reads as 1234 or as 1.234"),
        ("5k", "en_US", "is not a number"),
        ("1e5", "en_US", "is not a number"),  # once read as 15: digits kept, letters dropped
        ("10%", "en_US", "is not a number"),
        ("about 500", "en_US", "is not a number"),
        ("1,2,3", "en_US", "check the separators"),
        ("1.23.4", "de_DE", "check the separators"),
        ("12,34.5", "en_US", "check the separators"),
        ("1 234.567,8", "de_DE", "check the separators"),
        ("", "en_US", "is not a number"),
    ],
)
def test_ambiguous_or_unreadable_text_is_refused_in_words(text: str, locale: str, why: str) -> None:
    with pytest.raises(AmountError) as refused:
        parse_amount(text, locale)
    assert why in refused.value.why
    assert refused.value.fix.startswith("write")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, True, None, [1]])
def test_what_is_not_an_amount_at_all_is_refused(value: object) -> None:
    with pytest.raises(AmountError):
        parse_amount(value, "en_US")


@pytest.mark.parametrize(
    ("locale", "mark"),
    [("de_DE", ","), ("en_US", "."), ("en_IN", "."), ("pt_BR", ","), ("de_CH", "."), ("xx", None)],
)
def test_decimal_mark_of_a_locale(locale: str, mark: str | None) -> None:
    assert decimal_mark(locale) == mark


@given(
    amount=st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False),
    locale=st.sampled_from(["de_DE", "en_US", "fr_FR", "en_IN", "de_CH", "pt_BR"]),
)
def test_an_amount_written_the_way_its_locale_writes_it_reads_back(
    amount: object, locale: str
) -> None:
    whole, fraction = f"{amount:.2f}".split(".")
    groups = [whole[max(0, i - 3) : i] for i in range(len(whole), 0, -3)][::-1]
    grouping = {"de_DE": ".", "en_US": ",", "fr_FR": "\u202f", "de_CH": "'", "pt_BR": "."}
    mark = decimal_mark(locale)
    assert mark is not None
    text = grouping.get(locale, ",").join(groups) + mark + fraction
    assert parse_amount(text, locale) == pytest.approx(float(f"{amount:.2f}"))


# -- through the emulator, a sync and the fake Meta ----------------------------------------


def _value_sent(world: World) -> object:
    (event,) = world.meta_events()
    return event["custom_data"].get("value")


def _status(world: World) -> str:
    rows = world.rows()
    return str(dict(zip(rows[0], rows[1], strict=False)).get("CAPI Status", ""))


def test_a_de_de_sheets_text_value_reaches_meta_as_the_amount_it_says(
    make_world: Callable[..., World], world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now, value="1.234,56")], locale="de_DE")

    world.bridge().sync()

    assert _value_sent(world) == 1234.56
    assert "Deal Value" not in _status(world)


def test_an_en_us_sheets_text_value_reaches_meta_as_the_amount_it_says(
    make_world: Callable[..., World], world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now, value="1,234.56")], locale="en_US")

    world.bridge().sync()

    assert _value_sent(world) == 1234.56


@pytest.mark.parametrize(
    ("cell", "said"),
    [("-5000", "is negative"), ("5k", "is not a number"), ("1e5", "is not a number")],
)
def test_a_value_that_is_not_an_amount_is_refused_on_the_row_and_never_sent(
    make_world: Callable[..., World], world_now: datetime, cell: str, said: str
) -> None:
    world = make_world([lead_row(1, "New", now=world_now, value=cell)])

    world.bridge().sync()

    assert _value_sent(world) in (None, 100)  # the stage's own value, never a misread one
    status = _status(world)
    assert f"Deal Value '{cell}' dropped: {said}" in status
    assert "write" in status


def test_a_negative_number_cell_is_refused_with_the_reason_not_silently_dropped(
    make_world: Callable[..., World], world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now, value=-5000)])

    world.bridge().sync()

    assert _value_sent(world) in (None, 100)
    assert "Deal Value '-5000' dropped: is negative" in _status(world)
