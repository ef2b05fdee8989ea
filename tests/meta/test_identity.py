"""Customer information: Meta's documented vectors, messy sheet cells per field, problems,
match keys, and properties that hold for any input (docs/normalization.md)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sheet_bridge.meta.identity import (
    HASHED_FIELDS,
    PLAIN_FIELDS,
    USER_DATA_FIELDS,
    FieldProblem,
    _Drop,
    hash_user_data,
    match_keys,
    normalize_birth_date,
    normalize_city,
    normalize_country,
    normalize_email,
    normalize_external_id,
    normalize_gender,
    normalize_name,
    normalize_phone,
    normalize_state,
    normalize_zip,
)
from tests.conftest import WORLD_HEADER, World, lead_row

HEX64 = re.compile(r"^[0-9a-f]{64}$")
PLAIN_TEXT_FIX = "format the column as Plain text and paste the id again"


def sha(text: str) -> str:
    """Meta's hash, written out independently of the code under test."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def hashed(field: str, value: object, default_country: str = "US", **extra: object) -> object:
    """The value sent for `field` when a row holds `value` (and `extra` cells), for a lead of
    `default_country` (a bridge that says every lead is there)."""
    raw = {field: value, **extra}
    return hash_user_data(raw, default_country, assume_country=True).user_data.get(field)


# ---- Meta's documented vectors ------------------------------------------------------------


def test_metas_phone_example_hashes_the_digits_with_country_code() -> None:
    assert hashed("ph", "+1 (650) 555-1212") == sha("16505551212")


def test_metas_country_example_us_hashes_to_the_published_digest() -> None:
    expected = "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
    assert sha("us") == expected
    assert hashed("country", "US", "IN") == expected


def test_metas_accented_name_example_keeps_the_accent_in_utf8() -> None:
    assert hashed("fn", "Valéry") == sha("valéry")


def test_decomposed_accent_hashes_like_the_composed_one() -> None:
    nfd = unicodedata.normalize("NFD", "Valéry")
    assert nfd != "Valéry"
    assert hashed("fn", nfd) == sha("valéry")
    # A city keeps Latin letters only (Meta's builder): composed or not, ü is not one of them.
    assert hashed("ct", unicodedata.normalize("NFD", "Zürich"), "CH") == sha("zrich")


def test_metas_email_example_is_trimmed_and_lowercased() -> None:
    assert hashed("em", " Person@Example.com ") == sha("person@example.com")


# ---- Meta's parameter builder (docs/normalization.md) --
# facebook/capi-param-builder normalizes before hashing on Meta's other channels (its PII
# utilities in nodejs/, php/, client_js/; read 2026-12). The cells below are the builder's own
# test inputs (php/…/tests/PIIUtilsTest.php, nodejs/…/tests/PIIUtil.test.js) and the cases its
# code decides; where it and Meta's page disagree, the page wins and the test says so.


@pytest.mark.parametrize(
    ("field", "cell", "normal"),
    [
        ("fn", "  John Smith  ", "johnsmith"),  # the builder's own test vector
        ("ln", "  Mary Johnson  ", "maryjohnson"),  # the builder's own test vector
        ("fn", "Mary Ann", "maryann"),
        ("ln", "De Souza", "desouza"),
        ("ln", "van der Berg", "vanderberg"),
        ("fn", "Mary\u00a0Ann", "maryann"),  # a no-break space pasted from a web page
        ("fn", "Anne-Marie", "annemarie"),
        ("ln", "O'Brien", "obrien"),
        ("ln", "O\u2019Brien", "obrien"),  # a phone's typographic apostrophe
        ("fn", "Jean-Luc (JL)", "jeanlucjl"),
        ("ln", "Müller Lüdenscheidt", "müllerlüdenscheidt"),  # letters of any script kept
        ("fn", "Valéry", "valéry"),  # Meta's own example
    ],
)
def test_name_loses_every_space_and_punctuation_mark_as_metas_builder_does(
    field: str, cell: str, normal: str
) -> None:
    assert hashed(field, cell) == sha(normal)


@pytest.mark.parametrize(
    ("cell", "normal"),
    [
        ("  User123  ", "user123"),  # the builder's own test vector
        ("USER_123", "user_123"),  # the builder's own test vector
        (" CRM-42 ", "crm-42"),
        ("crm 42", "crm42"),  # the builder strips every whitespace character, inner ones too
        (42, "42"),
    ],
)
def test_external_id_is_lowercased_without_whitespace_as_metas_builder_does(
    cell: object, normal: str
) -> None:
    assert hashed("external_id", cell) == sha(normal)


@pytest.mark.parametrize(
    ("cell", "code"),
    [
        ("  United States  ", "us"),  # the builder's own test vector
        ("  Germany  ", "de"),  # the builder's own test vector
        ("United Kingdom", "gb"),
        ("USA", "us"),
        ("IND", "in"),  # the builder's alias
        ("DEU", "de"),
        ("AUT", "at"),  # the builder cuts it to "au" (Australia); ISO says Austria
        ("IRL", "ie"),  # the builder cuts it to "ir" (Iran)
        ("Republic of India", "in"),
        ("Côte d'Ivoire", "ci"),
        ("Ivory Coast", "ci"),
        ("Türkiye", "tr"),
        ("Korea, Republic of", "kr"),
        ("South Korea", "kr"),
        ("The Netherlands", "nl"),
        ("U.S.A.", "us"),
        ("Deutschland", "de"),
        ("España", "es"),
        ("AQ", "aq"),  # an ISO code with no phones
    ],
)
def test_country_name_or_alpha3_code_becomes_the_alpha2_code(cell: str, code: str) -> None:
    default = "IN" if code != "in" else "US"
    result = hash_user_data({"country": cell}, default)
    assert result.problems == []
    assert result.user_data["country"] == sha(code)


@pytest.mark.parametrize(
    ("cell", "row_country", "default_country", "code", "digits"),
    [
        ("98765 43210", "IND", "US", "in", "919876543210"),
        ("98765 43210", "Republic of India", "GB", "in", "919876543210"),
        ("07911 123456", "United Kingdom", "IN", "gb", "447911123456"),
        ("(650) 555-1212", "USA", "IN", "us", "16505551212"),
    ],
)
def test_a_country_named_in_the_row_is_the_region_its_local_phones_are_read_in(
    cell: str, row_country: str, default_country: str, code: str, digits: str
) -> None:
    result = hash_user_data({"ph": cell, "country": row_country}, default_country)
    assert result.problems == []
    assert result.user_data["country"] == sha(code)
    assert result.user_data["ph"] == sha(digits)


@pytest.mark.parametrize(
    ("cell", "country", "normal"),
    [
        ("  California  ", "US", "ca"),  # the builder's own test vector
        ("  New York  ", "US", "ny"),  # the builder's own test vector
        ("Ontario", "CA", "on"),
        ("Québec", "CA", "qc"),
        ("British Columbia", "IN", "bc"),  # mapped whatever the country, as the builder does
        ("State of New York", "US", "ny"),
        ("West Virginia State", "US", "wv"),  # the longest name found, not "virginia"
        ("Washington, D.C.", "US", "dc"),
        ("Baja California", "MX", "bajacalifornia"),  # Mexico's, not the US state
        ("Karnataka", "IN", "karnataka"),  # the builder cuts it to "ka"; Meta's page does not
        ("KA", "IN", "ka"),
    ],
)
def test_state_is_a_us_or_canadian_code_or_the_whole_name(
    cell: str, country: str, normal: str
) -> None:
    assert hashed("st", cell, country) == sha(normal)


@pytest.mark.parametrize(
    ("cell", "normal"),
    [
        ("  New York  ", "newyork"),  # the builder's own test vector
        ("  San Francisco  ", "sanfrancisco"),  # the builder's own test vector
        ("St. Louis", "stlouis"),
        ("Winston-Salem", "winstonsalem"),
        ("São Paulo", "sopaulo"),  # the builder keeps a-z and 0-9 only
        ("Zürich", "zrich"),
        ("Bengaluru 560001", "bengaluru560001"),
    ],
)
def test_city_keeps_latin_letters_and_digits_as_metas_builder_does(cell: str, normal: str) -> None:
    assert hashed("ct", cell, "US") == sha(normal)


@pytest.mark.parametrize("cell", ["मुंबई", "東京", "10 Downing Street", "123"])
def test_city_without_a_leading_latin_letter_is_dropped_with_the_fix(cell: str) -> None:
    result = hash_user_data({"ct": cell, "em": "a@b.co"}, "IN")
    assert "ct" not in result.user_data
    [problem] = result.problems
    assert problem.field == "ct"
    assert "Latin letters" in problem.fix


# ---- phones -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "default_country", "digits"),
    [
        # US
        ("+1 (650) 555-1212", "US", "16505551212"),
        ("(650) 555-1212", "US", "16505551212"),
        ("650.555.1212", "US", "16505551212"),
        ("1-650-555-1212", "US", "16505551212"),
        ("16505551212", "IN", "16505551212"),
        (16505551212.0, "IN", "16505551212"),
        # India
        ("9876543210", "IN", "919876543210"),
        ("98765 43210", "IN", "919876543210"),
        (9876543210, "IN", "919876543210"),
        (9876543210.0, "IN", "919876543210"),
        ("09876543210", "IN", "919876543210"),
        ("919876543210", "IN", "919876543210"),
        ("919876543210", "US", "919876543210"),
        ("+91 98765 43210", "US", "919876543210"),
        ("+91-98765-43210", "GB", "919876543210"),
        ("0091 98765 43210", "US", "919876543210"),
        ("+91.98765.43210", "US", "919876543210"),
        # United Kingdom
        ("07911 123456", "GB", "447911123456"),
        ("07911.123.456", "GB", "447911123456"),
        ("+44 7911 123456", "IN", "447911123456"),
        ("447911123456", "US", "447911123456"),
        (447911123456, "US", "447911123456"),
        ("00447911123456", "IN", "447911123456"),
        ("+44 (0)20 7946 0958", "US", "442079460958"),
        ("44 (0)20 7946 0958", "IN", "442079460958"),
        ("020 7946 0958", "GB", "442079460958"),
    ],
)
def test_phone_is_hashed_as_e164_digits_without_plus(
    cell: object, default_country: str, digits: str
) -> None:
    result = hash_user_data({"ph": cell}, default_country)
    assert result.problems == []
    assert result.user_data["ph"] == sha(digits)


@pytest.mark.parametrize(
    ("cell", "row_country", "default_country", "digits"),
    [
        ("07911 123456", "GB", "IN", "447911123456"),
        ("9876543210", "India", "US", "919876543210"),
        ("(650) 555-1212", "us", "IN", "16505551212"),
    ],
)
def test_row_country_overrides_default_country_as_phone_region(
    cell: str, row_country: str, default_country: str, digits: str
) -> None:
    assert hashed("ph", cell, default_country, country=row_country) == sha(digits)


@pytest.mark.parametrize("cell", ["abc", "12345", "555-1212", "+1 (650) 555-121", "0000000000"])
def test_unusable_phone_is_dropped_with_a_masked_problem(cell: str) -> None:
    result = hash_user_data({"ph": cell, "em": "a@example.com"}, "US")
    assert "ph" not in result.user_data
    assert "em" in result.user_data  # the rest of the identity still goes
    [problem] = result.problems
    assert problem.field == "ph"
    assert problem.why
    assert "country code" in problem.fix
    assert cell not in str(problem)
    assert cell not in problem.shown


# ---- e-mails ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "normal"),
    [
        (" John.Doe@Example.COM ", "john.doe@example.com"),
        ("\tops@example.in\n", "ops@example.in"),
        ("JANE@EXAMPLE.CO.UK", "jane@example.co.uk"),
        ("mailto:Sales@Example.com", "sales@example.com"),
        ("MAILTO:x@y.io", "x@y.io"),
        ("first.last+tag@sub.example.org", "first.last+tag@sub.example.org"),
    ],
)
def test_email_is_trimmed_lowercased_and_loses_mailto(cell: str, normal: str) -> None:
    assert hashed("em", cell) == sha(normal)


@pytest.mark.parametrize(
    "cell",
    [
        "not-an-email",
        "john@example",
        "two@@example.com",
        "john doe@example.com",
        "@example.com",
        "john@",
        "john@example.",
        12345,
    ],
)
def test_invalid_email_is_dropped_with_a_problem_and_the_rest_goes(cell: object) -> None:
    result = hash_user_data({"em": cell, "ph": "+1 650 555 1212"}, "US")
    assert "em" not in result.user_data
    assert result.user_data["ph"] == sha("16505551212")
    [problem] = result.problems
    assert problem.field == "em"
    assert problem.why and problem.fix


@pytest.mark.parametrize("junk", ["\x00", "\x07", "\u200b"])
def test_email_with_invisible_or_control_character_is_never_hashed_with_it(junk: str) -> None:
    # Cells pasted from a web page or CRM export carry such characters; hashing them in gives
    # a hash Meta can never match. Clean it, or drop it and say so.
    result = hash_user_data({"em": f"john{junk}@example.com"}, "US")
    sent = result.user_data.get("em")
    assert sent in (None, sha("john@example.com"))
    if sent is None:
        assert [p.field for p in result.problems] == ["em"]


def test_problem_text_never_contains_the_raw_email_or_phone() -> None:
    email = "private.person@example"  # invalid: no dot in the domain
    phone = "+1 (650) 555-12"  # too short to be a number
    result = hash_user_data({"em": email, "ph": phone}, "US")
    assert {p.field for p in result.problems} == {"em", "ph"}
    for problem in result.problems:
        assert isinstance(problem, FieldProblem)
        assert problem.field and problem.shown and problem.why and problem.fix
        assert email not in str(problem)
        assert phone not in str(problem)
        assert "private.person" not in str(problem)
        assert "555" not in str(problem)


def test_long_invalid_value_is_shown_shortened_with_its_length() -> None:
    cell = "x" * 100 + "@nowhere"
    [problem] = hash_user_data({"em": cell}, "US").problems
    assert "108 chars" in problem.shown
    assert "x" * 10 not in str(problem)


# ---- names, dates, gender, place ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "cell", "default_country", "normal"),
    [
        ("fn", " JOHN ", "US", "john"),
        ("fn", "O'Brien", "US", "obrien"),
        ("ln", "Smith-Jones", "US", "smithjones"),
        ("ln", "Müller", "DE", "müller"),
        ("db", "2/16/1997", "US", "19970216"),
        ("db", "16/02/1997", "IN", "19970216"),
        ("db", "16-02-1997", "GB", "19970216"),
        ("db", "1997-02-16", "IN", "19970216"),
        ("db", "1997-02-16T00:00:00", "US", "19970216"),
        ("db", "19970216", "US", "19970216"),
        ("db", 35477, "IN", "19970216"),  # a date cell read as its serial number
        ("db", 35477.0, "US", "19970216"),
        ("db", "03/04/1997", "IN", "19970403"),  # day first outside the US
        ("db", "03/04/1997", "US", "19970304"),  # month first in the US
        ("ge", "Female", "US", "f"),
        ("ge", " F ", "US", "f"),
        ("ge", "male", "US", "m"),
        ("ge", "M", "US", "m"),
        ("ct", "New York", "US", "newyork"),
        ("ct", "St. Louis", "US", "stlouis"),
        ("ct", "São Paulo", "BR", "sopaulo"),  # the builder drops non-Latin letters
        ("st", "California", "US", "ca"),
        ("st", "CA", "US", "ca"),
        ("st", " new york ", "US", "ny"),
        ("st", "Karnataka", "IN", "karnataka"),
        ("st", "Tamil Nadu", "IN", "tamilnadu"),
        ("st", "California", "IN", "ca"),  # the builder maps the name whatever the country
        ("zp", "94025-1234", "US", "94025"),
        ("zp", "940251234", "US", "94025"),
        ("zp", " 94025 ", "US", "94025"),
        ("zp", 2134, "US", "02134"),  # a number cell dropped the leading zero
        ("zp", 2134.0, "US", "02134"),
        ("zp", "560 001", "IN", "560001"),
        ("zp", 560001, "IN", "560001"),
        ("external_id", " CRM-42 ", "US", "crm-42"),
        ("external_id", 42, "US", "42"),
    ],
)
def test_field_is_normalized_as_meta_documents(
    field: str, cell: object, default_country: str, normal: str
) -> None:
    result = hash_user_data({field: cell}, default_country, assume_country=True)
    assert result.problems == []
    assert result.user_data[field] == sha(normal)


def test_uk_postcode_matches_metas_documented_example_m11ae() -> None:
    # Meta's customer-information page: "Use the area, district, and sector format for the
    # UK. … UK zip code: m11ae" (docs/normalization.md quotes the same example).
    assert hashed("zp", "M1 1AE", "GB") == sha("m11ae")


@pytest.mark.parametrize(
    ("field", "cell"),
    [("ge", "other"), ("db", "31/31/1997"), ("db", "yesterday"), ("zp", "ZIP"), ("fn", "!!!")],
)
def test_unusable_field_is_dropped_with_a_problem(field: str, cell: str) -> None:
    result = hash_user_data({field: cell}, "US", assume_country=True)
    assert field not in result.user_data
    [problem] = result.problems
    assert problem.field == field
    assert problem.why and problem.fix


@pytest.mark.parametrize("cell", [1997, 1997.0, "1997", " 1997 ", 2004])
def test_birth_year_alone_is_refused_in_words_never_read_as_a_date_serial(cell: object) -> None:
    # 1997 in a date cell is serial 1905-06-19: sending 19050619 would be a wrong birthday.
    result = hash_user_data({"db": cell, "em": "a@b.co"}, "IN")
    assert "db" not in result.user_data
    assert "em" in result.user_data
    [problem] = result.problems
    assert problem.field == "db"
    assert "year alone" in problem.why
    assert "full date" in problem.fix


@pytest.mark.parametrize("cell", [35, 35.0, 1, 900, 2192])
def test_small_number_in_the_birth_date_column_is_refused_not_read_as_1900(cell: object) -> None:
    # An age (35) typed in the column is serial 1900-02-03.
    result = hash_user_data({"db": cell}, "IN")
    assert "db" not in result.user_data
    [problem] = result.problems
    assert problem.field == "db" and "full date" in problem.fix


@pytest.mark.parametrize(
    ("cell", "normal"),
    [(2193, "19060101"), (35477, "19970216"), ("12-31-1990", "19901231"), (19970216, "19970216")],
)
def test_birth_date_cells_that_are_dates_are_still_read(cell: object, normal: str) -> None:
    assert hashed("db", cell, "US") == sha(normal)


# ---- country ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "code"),
    [
        ("US", "us"),
        ("us", "us"),
        (" in ", "in"),
        ("India", "in"),
        ("United States", "us"),
        ("USA", "us"),
        ("UK", "gb"),
        ("United Kingdom", "gb"),
        ("GB", "gb"),
        ("Deutschland", "de"),
    ],
)
def test_country_names_and_codes_become_the_iso_code(cell: str, code: str) -> None:
    assert hashed("country", cell, "IN" if code != "in" else "US") == sha(code)


@pytest.mark.parametrize("raw", [{}, {"country": None}, {"country": "  "}, {"em": "a@b.co"}])
def test_no_country_is_sent_when_neither_the_row_nor_the_phone_says_one(
    raw: dict[str, object],
) -> None:
    assert "country" not in hash_user_data(raw, "IN").user_data
    assumed = hash_user_data(raw, "IN", assume_country=True)
    assert assumed.user_data["country"] == sha("in") and assumed.country == "in"


@pytest.mark.parametrize(
    ("phone", "default_country", "country"),
    [
        ("+1 415 555 2671", "IN", "us"),
        ("0044 20 7946 0958", "IN", "gb"),
        ("14155552671", "IN", "us"),  # the country code written without "+"
        ("+1 613 555 0123", "US", "ca"),  # Canada shares +1: the area code tells
        ("98765 43210", "IN", None),  # a national number says nothing of the lead's country
    ],
)
def test_without_a_country_cell_the_phones_own_country_code_is_the_leads_country(
    phone: str, default_country: str, country: str | None
) -> None:
    result = hash_user_data({"ph": phone}, default_country)
    assert result.country == country
    assert result.user_data.get("country") == (sha(country) if country else None)


def test_unknown_country_is_reported_and_the_phone_or_nothing_stands_for_it() -> None:
    result = hash_user_data({"country": "Narnia"}, "GB")
    assert "country" not in result.user_data
    assert [p.field for p in result.problems] == ["country"]
    result = hash_user_data({"country": "Untied States", "ph": "+1 415 555 2671"}, "IN")
    assert result.user_data["country"] == sha("us")
    assert [p.field for p in result.problems] == ["country"]


def test_zip_follows_the_country_of_the_phone_not_the_bridges_region() -> None:
    result = hash_user_data({"ph": "+1 415 555 2671", "zp": "94105-1234"}, "IN")
    assert result.user_data["zp"] == sha("94105")


# ---- absent, never sha256("") -------------------------------------------------------------


@pytest.mark.parametrize("blank", [None, "", " ", "   \t\n", float("nan")])
@pytest.mark.parametrize("field", [f for f in USER_DATA_FIELDS if f != "country"])
def test_blank_cell_is_absent_and_never_the_hash_of_empty(field: str, blank: object) -> None:
    result = hash_user_data({field: blank}, "US")
    assert field not in result.user_data
    assert sha("") not in result.user_data.values()
    assert result.problems == []


def test_list_of_values_drops_blanks_and_duplicates() -> None:
    result = hash_user_data({"em": ["a@b.co", " A@B.CO ", "x@y.org", "", None]}, "US")
    assert result.user_data["em"] == [sha("a@b.co"), sha("x@y.org")]
    assert not hash_user_data({"em": ["", None, "  "]}, "US").user_data


# ---- already hashed -----------------------------------------------------------------------


@pytest.mark.parametrize("field", [f for f in HASHED_FIELDS if f != "country"])
def test_already_hashed_value_is_sent_once_lowercased_never_hashed_twice(field: str) -> None:
    digest = sha("someone@example.com")
    assert hashed(field, digest.upper()) == digest
    assert hashed(field, f"  {digest} ") == digest


def test_already_hashed_country_is_sent_as_is_not_replaced_by_the_default() -> None:
    result = hash_user_data({"country": sha("gb")}, "US")
    assert result.user_data["country"] == sha("gb")
    assert result.problems == []


# ---- lead_id (docs/normalization.md) --


@pytest.mark.parametrize(
    ("cell", "lead_id"),
    [
        ("123456789012345", 123456789012345),
        ("1234567890123456", 1234567890123456),
        ("12345678901234567", 12345678901234567),
        (" 1234567890123456 ", 1234567890123456),
        ("'1234567890123456", 1234567890123456),  # the sheet's text prefix
        (1234567890123456, 1234567890123456),  # an int that is exact
        (123456789012345, 123456789012345),
        (123456789012345.0, 123456789012345),  # 15 digits fit a sheet number exactly
    ],
)
def test_lead_id_is_sent_as_an_int(cell: object, lead_id: int) -> None:
    result = hash_user_data({"lead_id": cell}, "US")
    assert result.problems == []
    sent = result.user_data["lead_id"]
    assert type(sent) is int
    assert sent == lead_id


@pytest.mark.parametrize(
    "cell", [1.23457e15, 1234567890123456.0, "1.23457E+15", "1.23457e15", 12345678901234567]
)
def test_lead_id_that_lost_digits_in_a_number_cell_is_refused_with_the_plain_text_fix(
    cell: object,
) -> None:
    result = hash_user_data({"lead_id": cell, "em": "a@b.co"}, "US")
    assert "lead_id" not in result.user_data
    assert "em" in result.user_data
    [problem] = result.problems
    assert problem.field == "lead_id"
    assert problem.fix == PLAIN_TEXT_FIX
    assert PLAIN_TEXT_FIX in str(problem)


@pytest.mark.parametrize("cell", ["012345678901234", "0012345678901234", "000000000000000"])
def test_lead_id_with_leading_zeros_is_refused_not_sent_with_fewer_digits(cell: str) -> None:
    # int("012345678901234") is a 14-digit number: a different lead id, or none at all.
    result = hash_user_data({"lead_id": cell}, "US")
    sent = result.user_data.get("lead_id")
    assert sent is None, f"sent {sent!r} for the cell {cell!r}"
    assert [p.field for p in result.problems] == ["lead_id"]


def test_lead_id_shown_as_the_sheet_shows_it() -> None:
    [problem] = hash_user_data({"lead_id": 1.23457e15}, "US").problems
    assert "1.23457E+15" in problem.shown


@pytest.mark.parametrize(
    "cell", ["12345678901234", "123456789012345678", "12345678901234a", "-123456789012345", True]
)
def test_lead_id_not_15_to_17_digits_is_refused(cell: object) -> None:
    result = hash_user_data({"lead_id": cell}, "US")
    assert "lead_id" not in result.user_data
    assert [p.field for p in result.problems] == ["lead_id"]


# ---- plain fields -------------------------------------------------------------------------


def test_click_browser_ip_and_user_agent_are_sent_unchanged() -> None:
    raw = {
        "fbc": "fb.1.1554763741205.AbCdEfGhIjKlMnOpQrSt",
        "fbp": "fb.1.1558571054389.1098115397",
        "client_ip_address": "2001:db8::1",
        "client_user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
    }
    result = hash_user_data(raw, "US")
    assert {k: result.user_data[k] for k in raw} == raw
    assert result.problems == []


# ---- never raises -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell",
    [True, False, float("inf"), -0.0, 10**400, "\x00", "😀" * 3, "\u202e", "a" * 1_000_000],
)
def test_odd_cells_never_raise(cell: object) -> None:
    result = hash_user_data({k: cell for k in USER_DATA_FIELDS}, "US", assume_country=True)
    assert "country" in result.user_data


def test_unknown_keys_are_ignored() -> None:
    result = hash_user_data({"email": "a@b.co", "phone": "1"}, "US")
    assert set(result.user_data) == set()


# ---- match keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "strength"),
    [
        ((), "none"),
        (("fn", "ge"), "none"),
        (("ln", "ge"), "none"),
        (("ct", "country", "st", "zp"), "none"),
        (("ct", "country", "st", "zp", "ge", "client_user_agent"), "none"),
        (("db", "client_user_agent"), "none"),
        (("country",), "none"),
        (("em",), "good"),
        (("em", "country"), "good"),
        (("ph", "country"), "good"),
        (("external_id",), "good"),
        (("lead_id",), "strong"),
        (("lead_id", "country"), "strong"),
        (("fbc",), "strong"),
        (("em", "ph"), "strong"),
        (("fn", "ln", "country"), "none"),  # names and places alone match nobody
        (("fn", "ln", "ct", "st", "zp", "country"), "none"),
        (("fbp", "country"), "weak"),
        (("client_ip_address",), "weak"),
        (("db", "fn", "ln"), "weak"),
        (("fn", "ge", "db"), "weak"),
    ],
)
def test_match_keys_strength(keys: tuple[str, ...], strength: str) -> None:
    match = match_keys(dict.fromkeys(keys, "x"))
    assert match.strength == strength
    assert match.sendable == (strength != "none")
    assert set(match.keys) == set(keys)


def test_match_keys_of_a_hashed_row_lists_its_identifiers_in_meta_order() -> None:
    result = hash_user_data({"ph": "+91 98765 43210", "em": "a@b.co", "fn": "A"}, "US")
    match = match_keys(result.user_data)
    assert match.keys == ("em", "ph", "fn", "country")
    assert match.strength == "strong"


def test_match_keys_of_name_and_gender_only_row_is_none() -> None:
    result = hash_user_data({"fn": "Asha", "ge": "F"}, "IN")
    assert match_keys(result.user_data).strength == "none"


# ---- properties ---------------------------------------------------------------------------

_odd_text = st.text(
    st.characters(codec="utf-8", include_characters="\x00\x07\x1b\u200b\u202e😀@.+-()"),
    max_size=60,
)
_huge_text = st.builds(lambda s, n: s * n, st.text(max_size=4), st.integers(0, 50_000))
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    _odd_text,
    _huge_text,
    st.emails(),
    st.from_regex(r"\+?[0-9 ().-]{4,20}", fullmatch=True),
    st.from_regex(r"[0-9]{14,18}", fullmatch=True),
    st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True),
)
_cell = st.one_of(_scalar, st.lists(_scalar, max_size=4))
_raw = st.dictionaries(st.sampled_from(USER_DATA_FIELDS), _cell)
_country = st.one_of(st.sampled_from(["US", "IN", "GB", "DE", "us", "ZZ", ""]), _odd_text)
_props = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _is_hex64_or_list(value: object) -> bool:
    if isinstance(value, list):
        return len(value) >= 2 and all(isinstance(v, str) and HEX64.match(v) for v in value)
    return isinstance(value, str) and HEX64.match(value) is not None


@_props
@given(raw=_raw, default_country=_country)
def test_hash_user_data_never_raises_and_hashes_every_hashed_field(
    raw: dict[str, object], default_country: str
) -> None:
    result = hash_user_data(raw, default_country, assume_country=True)
    assert HEX64.match(str(result.user_data["country"]))
    for key, value in result.user_data.items():
        assert key in USER_DATA_FIELDS
        if key in HASHED_FIELDS:
            assert _is_hex64_or_list(value), (key, value)
            assert value != sha("") and sha("") not in (value if isinstance(value, list) else [])
    if "lead_id" in result.user_data:
        lead_ids = result.user_data["lead_id"]
        for lead_id in lead_ids if isinstance(lead_ids, list) else [lead_ids]:
            assert type(lead_id) is int
            assert 15 <= len(str(lead_id)) <= 17
    for key in PLAIN_FIELDS:
        if key != "lead_id" and key in result.user_data:
            values = result.user_data[key]
            assert all(
                isinstance(v, str) and v for v in (values if isinstance(values, list) else [values])
            )
    for problem in result.problems:
        assert problem.field in USER_DATA_FIELDS
        assert problem.why and problem.fix
        str(problem)


@_props
@given(raw=_raw, default_country=st.sampled_from(["US", "IN", "GB"]))
def test_hashing_the_sent_user_data_again_changes_nothing(
    raw: dict[str, object], default_country: str
) -> None:
    first = hash_user_data(raw, default_country).user_data
    # A lead id goes back in as the text a sheet holds: a 17-digit int is past what a
    # sheet's number cell keeps exactly, and is refused as such on purpose.
    resent = {k: (str(v) if k == "lead_id" else v) for k, v in first.items()}
    again = hash_user_data(resent, default_country)
    assert again.user_data == first
    assert again.problems == []


def _normalized(normalize: Callable[..., object], value: object, *args: object) -> object:
    try:
        return normalize(value, *args)
    except _Drop:
        return None


_REGION = st.sampled_from(["us", "in", "gb", "de", "au", None])


@_props
@given(
    value=st.one_of(_odd_text, st.emails().map(lambda e: f"  MAILTO:{e.upper()} ")),
)
def test_normalize_email_twice_changes_nothing(value: str) -> None:
    once = _normalized(normalize_email, value)
    if once is not None:
        assert normalize_email(once) == once


@_props
@given(value=st.one_of(_odd_text, st.integers()), country=_REGION)
def test_normalize_text_fields_twice_changes_nothing(value: object, country: str | None) -> None:
    for normalize, args in [
        (normalize_name, ()),
        (normalize_city, ()),
        (normalize_state, (country,)),
        (normalize_zip, (country,)),
        (normalize_country, ()),
        (normalize_gender, ()),
        (normalize_external_id, ()),
    ]:
        once = _normalized(normalize, value, *args)
        if once is not None:
            assert normalize(once, *args) == once, normalize.__name__


@_props
@given(
    value=st.one_of(st.from_regex(r"\+?[0-9 ().-]{6,20}", fullmatch=True), st.integers(0, 10**15)),
    region=st.sampled_from(["US", "IN", "GB", "DE", "AU", "BR", "AE", "SG"]),
)
def test_normalize_phone_output_read_back_as_e164_changes_nothing(
    value: object, region: str
) -> None:
    # The output is E.164 without '+'; read back with its '+' it is the same number.
    once = _normalized(normalize_phone, value, region)
    if once is not None:
        assert isinstance(once, str) and once.isdigit() and not once.startswith("0")
        assert normalize_phone("+" + once, region) == once


@_props
@given(
    value=st.one_of(
        st.integers(-10, 200_000),
        st.dates().map(lambda d: d.isoformat()),
        st.from_regex(r"[0-9]{1,2}/[0-9]{1,2}/[0-9]{4}", fullmatch=True),
    ),
    month_first=st.booleans(),
)
@example(value=1, month_first=False)  # serial 1 = 1899-12-31
@example(value=80_000 - 1, month_first=True)  # serial 79999 = 2119
def test_normalize_birth_date_twice_changes_nothing(value: object, month_first: bool) -> None:
    # A date accepted from a serial-number cell must also be accepted as its own YYYYMMDD text.
    once = _normalized(normalize_birth_date, value, month_first)
    if once is not None:
        assert normalize_birth_date(once, month_first) == once


# ---- through the emulator, a sync and the fake Meta ----------------------------------------


def test_a_sheet_name_with_a_space_reaches_meta_hashed_as_metas_builder_hashes_it(
    make_world: Callable[..., World], world_now: datetime
) -> None:
    row = lead_row(1, "New", now=world_now)
    row[WORLD_HEADER.index("First Name")] = " Mary Ann "
    world = make_world([row])

    world.bridge().sync()

    (event,) = world.meta_events()
    assert event["user_data"]["fn"] == sha("maryann")  # was sha("mary ann")
