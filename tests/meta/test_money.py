"""Currencies as Meta takes them (docs/values.md "Money"): ISO 4217 codes only, and a symbol
names a currency only when nothing else could be meant."""

from __future__ import annotations

import pytest

from sheet_bridge.meta.money import CurrencyError, currency_of_mark, iso_currency, value_problem


@pytest.mark.parametrize("code", ["INR", "usd", " eur ", "XOF", "XCD"])
def test_iso_4217_codes_are_taken_upper_cased(code: str) -> None:
    assert iso_currency(code) == code.strip().upper()


@pytest.mark.parametrize("code", ["XYZ", "RUPEES", "US", "XAU", "XXX", "XTS", "₹"])
def test_anything_else_is_refused_with_an_iso_example(code: str) -> None:
    with pytest.raises(CurrencyError) as caught:
        iso_currency(code)
    assert "ISO 4217" in str(caught.value) and "INR or USD" in caught.value.fix


@pytest.mark.parametrize(
    ("mark", "known", "code"),
    [
        ("€", (None, "INR"), "EUR"),
        ("US$", (None, "INR"), "USD"),
        ("$", (None, "USD"), "USD"),
        ("$", (None, "MXN"), "MXN"),  # Mexico writes its peso with "$"
        ("$", ("CAD", "INR"), "CAD"),  # the row's Currency cell first
        ("£", (None, "EGP"), "EGP"),
        ("Rs.", (None, "INR"), "INR"),
        ("eur", (None, "INR"), "EUR"),
    ],
)
def test_a_mark_names_its_currency(mark: str, known: tuple[str | None, str], code: str) -> None:
    assert currency_of_mark(mark, *known) == code


@pytest.mark.parametrize(("mark", "known"), [("$", (None, "INR")), ("¥", ("EUR", "INR"))])
def test_a_symbol_several_currencies_write_is_refused_outside_them(
    mark: str, known: tuple[str | None, str]
) -> None:
    with pytest.raises(CurrencyError) as caught:
        currency_of_mark(mark, *known)
    assert "several currencies write" in caught.value.why
    assert "5000" in caught.value.fix


def test_a_currency_sign_of_no_known_currency_is_refused() -> None:
    with pytest.raises(CurrencyError, match="no ISO 4217 currency"):
        currency_of_mark("₿", None, "USD")


@pytest.mark.parametrize(
    ("amount", "refused"),
    [(0.0, True), (1e12, False), (1e12 + 1, True), (float("inf"), True), (float("nan"), True)],
)
def test_values_worth_sending(amount: float, refused: bool) -> None:
    assert (value_problem(amount) is not None) is refused
