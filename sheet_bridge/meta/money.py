"""Money as Meta takes it: ISO 4217 currencies, the symbols a value cell may carry, and the
values worth sending.

Meta: `currency` is an ISO 4217 code, and values are compared across events, so a value in the
wrong currency is a wrong value (developers.facebook.com/docs/marketing-api/conversions-api/
parameters/custom-data). The rules in words: docs/values.md.
"""

from __future__ import annotations

import functools
import math

# A value above this is a typo or a formula gone wrong, not a deal (a trillion in any currency).
MAX_VALUE = 1e12

# ISO 4217 lists these X-codes, which are no one's money (precious metals, bond units, special
# drawing rights, the test and "no currency" codes): a conversion is never worth them.
_NOT_MONEY = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)

# Symbols only one currency writes.
SYMBOLS: dict[str, str] = {
    "€": "EUR", "₹": "INR", "₩": "KRW", "₽": "RUB", "₺": "TRY", "₫": "VND", "₱": "PHP",
    "₪": "ILS", "฿": "THB", "₦": "NGN", "₴": "UAH", "₸": "KZT", "₾": "GEL", "₼": "AZN",
    "₵": "GHS", "৳": "BDT", "zł": "PLN", "us$": "USD", "r$": "BRL", "c$": "CAD", "ca$": "CAD",
    "a$": "AUD", "au$": "AUD", "nz$": "NZD", "s$": "SGD", "hk$": "HKD", "mx$": "MXN",
}  # fmt: skip
# Symbols several currencies write: they name the currency only together with the row's
# Currency cell or the bridge's currency, when that is one of them.
_DOLLARS = frozenset({
    "USD", "CAD", "AUD", "NZD", "SGD", "HKD", "TWD", "JMD", "BSD", "BBD", "BZD", "BMD", "KYD",
    "XCD", "FJD", "GYD", "LRD", "NAD", "SBD", "SRD", "TTD", "BND", "ZWG", "KID", "TVD",
    # Pesos and others written with "$" at home.
    "MXN", "ARS", "CLP", "COP", "CUP", "DOP", "UYU",
})  # fmt: skip
SHARED_SYMBOLS: dict[str, frozenset[str]] = {
    "$": _DOLLARS,
    "£": frozenset({"GBP", "EGP", "GIP", "FKP", "SHP", "LBP", "SYP", "SSP", "SDG"}),
    "¥": frozenset({"JPY", "CNY"}),
    "kr": frozenset({"SEK", "NOK", "DKK", "ISK"}),
    "rs": frozenset({"INR", "PKR", "LKR", "NPR", "MUR", "SCR"}),
    "rs.": frozenset({"INR", "PKR", "LKR", "NPR", "MUR", "SCR"}),
}


class CurrencyError(ValueError):
    """A currency that cannot be sent: why, and what to write instead."""

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(f"{why}; {fix}")
        self.why = why
        self.fix = fix


@functools.cache
def _iso_codes() -> frozenset[str]:
    import pycountry

    return frozenset(str(c.alpha_3) for c in pycountry.currencies) - _NOT_MONEY


def iso_currency(text: str) -> str:
    """An ISO 4217 currency code (pycountry's list), upper-cased; CurrencyError otherwise."""
    code = text.strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise CurrencyError(
            "is not a 3-letter currency code", "write an ISO 4217 code such as INR or USD"
        )
    if code not in _iso_codes():
        raise CurrencyError(
            "is not an ISO 4217 currency", "write an ISO 4217 code such as INR or USD"
        )
    return code


def currency_of_mark(mark: str, *known: str | None) -> str:
    """The ISO code a value cell's currency mark names ("€", "USD", "$", "Rs"…).

    A symbol several currencies write ("$") is one of `known` (the row's Currency cell, then
    the bridge's currency) only when that currency writes it; otherwise CurrencyError with the
    fix: a "$" in an INR bridge is refused, never guessed."""
    key = mark.strip().lower()
    if key in SYMBOLS:
        return SYMBOLS[key]
    family = SHARED_SYMBOLS.get(key)
    if family is None:
        if len(key) == 1:  # a currency sign of no listed currency: ₿, ¤, ₠…
            raise CurrencyError(
                f"carries {mark.strip()!r}, which is no ISO 4217 currency this bridge knows",
                "write the amount with its ISO code instead, e.g. USD 5000",
            )
        return iso_currency(key)
    for code in known:
        if code in family:
            return code
    example = _EXAMPLES.get(key, "USD")
    raise CurrencyError(
        f"carries {mark.strip()!r}, which several currencies write",
        f"write the ISO code with the amount, e.g. {example} 5000, or fill the Currency column",
    )


_EXAMPLES = {"$": "USD", "£": "GBP", "¥": "JPY", "kr": "SEK", "rs": "INR", "rs.": "INR"}


def value_problem(amount: float) -> tuple[str, str] | None:
    """Why an amount is not sent as a conversion's value (why, fix), or None when it may be.

    A value of 0 tells Meta the conversion was worth nothing; a value that is not finite or
    above MAX_VALUE is a typo, and Meta would learn from it as from a real deal."""
    if not math.isfinite(amount):
        return "is not a finite number", "write the deal's amount, e.g. 5000"
    if amount == 0:
        return (
            "is 0, and Meta would learn the conversion was worth nothing",
            "write the deal's amount, or clear the cell",
        )
    if amount > MAX_VALUE:
        return (
            "is more than 10^12, too large to be a deal's amount",
            "fix the amount (a formula or a pasted id?)",
        )
    return None
