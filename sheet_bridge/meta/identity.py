"""Customer information: normalize each user_data field exactly as Meta does, then hash it.

docs/normalization.md (Meta's customer-information-parameters page). One bad field is dropped and
reported; the rest of the identity still goes. Nothing here raises on any input.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

import phonenumbers

HASHED_FIELDS: tuple[str, ...] = (
    "em",
    "ph",
    "fn",
    "ln",
    "db",
    "ge",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
)
PLAIN_FIELDS: tuple[str, ...] = ("lead_id", "fbc", "fbp", "client_ip_address", "client_user_agent")
USER_DATA_FIELDS: tuple[str, ...] = HASHED_FIELDS + PLAIN_FIELDS

FIELD_NAMES: dict[str, str] = {
    "em": "email",
    "ph": "phone",
    "fn": "first name",
    "ln": "last name",
    "db": "date of birth",
    "ge": "gender",
    "ct": "city",
    "st": "state",
    "zp": "zip code",
    "country": "country",
    "external_id": "external id",
    "lead_id": "lead id",
    "fbc": "click id (fbc)",
    "fbp": "browser id (fbp)",
    "client_ip_address": "IP address",
    "client_user_agent": "user agent",
}

_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_LEAD_ID_TEXT = re.compile(r"^\d{15,17}$")
# Meta's builder keeps only these in a city (getNormalizedCity, docs/normalization.md).
_LATIN_ALNUM_ONLY = re.compile(r"[^a-zA-Z0-9]+")
_ASCII_SPACE_OR_PUNCT = re.compile(r"[\x00-\x20!-/:-@\[-`{-~\x7f]+")
_SCIENTIFIC = re.compile(r"^\s*\d(\.\d+)?[eE]\+?\d+\s*$")
# Largest integer a double (what a sheet number is) holds exactly.
_EXACT_INT = 2**53

# US states (with DC and Puerto Rico, which have ANSI codes too) and Canadian provinces and
# territories, by name written as letters only, to their 2-letter codes: Meta's parameter
# builder maps both lists the same way (docs/normalization.md).
US_STATES: dict[str, str] = {
    "alabama": "al", "alaska": "ak", "arizona": "az", "arkansas": "ar", "california": "ca",
    "colorado": "co", "connecticut": "ct", "delaware": "de", "districtofcolumbia": "dc",
    "washingtondc": "dc", "florida": "fl", "georgia": "ga", "hawaii": "hi", "idaho": "id",
    "illinois": "il", "indiana": "in", "iowa": "ia", "kansas": "ks", "kentucky": "ky",
    "louisiana": "la", "maine": "me", "maryland": "md", "massachusetts": "ma",
    "michigan": "mi", "minnesota": "mn", "mississippi": "ms", "missouri": "mo",
    "montana": "mt", "nebraska": "ne", "nevada": "nv", "newhampshire": "nh", "newjersey": "nj",
    "newmexico": "nm", "newyork": "ny", "northcarolina": "nc", "northdakota": "nd",
    "ohio": "oh", "oklahoma": "ok", "oregon": "or", "pennsylvania": "pa", "rhodeisland": "ri",
    "southcarolina": "sc", "southdakota": "sd", "tennessee": "tn", "texas": "tx", "utah": "ut",
    "vermont": "vt", "virginia": "va", "washington": "wa", "westvirginia": "wv",
    "wisconsin": "wi", "wyoming": "wy", "puertorico": "pr",
}  # fmt: skip
CANADIAN_PROVINCES: dict[str, str] = {
    "alberta": "ab", "britishcolumbia": "bc", "manitoba": "mb", "newbrunswick": "nb",
    "newfoundlandandlabrador": "nl", "newfoundland": "nl", "novascotia": "ns", "ontario": "on",
    "princeedwardisland": "pe", "quebec": "qc", "saskatchewan": "sk",
    "northwestterritories": "nt", "nunavut": "nu", "yukon": "yt",
}  # fmt: skip
_STATE_CODES: dict[str, str] = {**US_STATES, **CANADIAN_PROVINCES}
# The abbreviations US newspapers and forms write with a dot (AP style: "Calif.", "Mass.",
# "Fla."), as letters only. Meta's builder cuts them to two letters, which is right for these
# three and wrong for "Tex." (te) or "Penn." (pe); here each is looked up. Two-letter ones
# ("N.Y.", "Ga.") are codes already.
US_ABBREVIATIONS: dict[str, str] = {
    "ala": "al", "ariz": "az", "ark": "ar", "cal": "ca", "calif": "ca", "colo": "co",
    "conn": "ct", "del": "de", "fla": "fl", "ill": "il", "ind": "in", "kan": "ks",
    "kans": "ks", "mass": "ma", "mich": "mi", "minn": "mn", "miss": "ms", "mont": "mt",
    "neb": "ne", "nebr": "ne", "nev": "nv", "okla": "ok", "ore": "or", "oreg": "or",
    "penn": "pa", "penna": "pa", "tenn": "tn", "tex": "tx", "wash": "wa", "wis": "wi",
    "wisc": "wi", "wyo": "wy", "wva": "wv",
}  # fmt: skip
# Longest first, so "West Virginia State" finds westvirginia before virginia.
_STATE_NAMES_LONGEST_FIRST = sorted(_STATE_CODES, key=len, reverse=True)

# Country names people type that ISO 3166 (pycountry) does not list, to alpha-2: short forms,
# former names, names in the country's own language, and the builder's aliases
# (docs/normalization.md).
# ISO names, official and common names and alpha-3 codes come from pycountry.
COUNTRY_ALIASES: dict[str, str] = {
    "bharat": "in", "hindustan": "in", "america": "us", "unitedstatesamerica": "us",
    "uk": "gb", "greatbritain": "gb", "britain": "gb", "england": "gb", "scotland": "gb",
    "wales": "gb", "northernireland": "gb", "deutschland": "de", "holland": "nl",
    "espana": "es", "uae": "ae", "emirates": "ae", "ksa": "sa", "russia": "ru",
    "turkey": "tr", "brunei": "bn", "capeverde": "cv", "ivorycoast": "ci",
    "democraticrepublicofthecongo": "cd", "drcongo": "cd", "easttimor": "tl",
    "falklandislands": "fk", "macedonia": "mk", "micronesia": "fm", "palestine": "ps",
    "swaziland": "sz", "vatican": "va", "vaticancity": "va", "burma": "mm",
    "macedoniatheformeryugoslavrepublicof": "mk", "brasil": "br", "italia": "it",
    "nederland": "nl", "osterreich": "at", "schweiz": "ch", "suisse": "ch", "belgique": "be",
    "belgie": "be", "sverige": "se", "norge": "no", "danmark": "dk", "polska": "pl",
    "suomi": "fi", "mexique": "mx",
}  # fmt: skip
# Two-letter codes phonenumbers knows (every region with phones); the few ISO codes it lacks
# (Antarctica, Bouvet Island…) are found in pycountry's list.
_REGIONS = frozenset(r.lower() for r in phonenumbers.SUPPORTED_REGIONS)
_MONTH_FIRST_COUNTRIES = frozenset({"us", "ph", "fm", "pw", "mh"})


@dataclass(frozen=True)
class FieldProblem:
    """A field that was dropped: which, the value shown safely, why, and what to do."""

    field: str
    shown: str
    why: str
    fix: str

    def __str__(self) -> str:
        name = FIELD_NAMES.get(self.field, self.field)
        return f"{name} {self.shown} dropped: {self.why}; {self.fix}"


@dataclass(frozen=True)
class HashedIdentity:
    """The user_data to send, and the fields left out of it with the reason.

    `country` is the lead's country as sent (alpha-2, None when not known) and `state` the
    row's state as normalized (a 2-letter code for US states): where the person is, for Limited
    Data Use. Never logged: they are the lead's, not the bridge's."""

    user_data: dict[str, object]
    problems: list[FieldProblem] = field(default_factory=list)
    country: str | None = None
    state: str | None = None


class _Drop(Exception):
    def __init__(self, why: str, fix: str) -> None:
        super().__init__(why)
        self.why = why
        self.fix = fix


def sha256_hex(text: str) -> str:
    """Meta's hash: lowercase hex SHA-256 of the UTF-8 bytes of the NFC form."""
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode("utf-8")).hexdigest()


def shown_as_sheet(value: object) -> str:
    """A lead id as the sheet displays it (not personal data): big numbers as 1.23457E+15."""
    if isinstance(value, float) and math.isfinite(value) and abs(value) >= 1e15:
        mantissa, exponent = f"{value:.5E}".split("E")
        return repr(f"{mantissa.rstrip('0').rstrip('.')}E+{int(exponent)}")
    return repr(_cell_text(value)[:40])


def shown_safely(value: object) -> str:
    """A cell value as it may appear in a message: long or personal text is masked."""
    text = _cell_text(value)
    if len(text) > 40:  # only its first two characters are shown (a cell may hold megabytes)
        head = "".join(ch if ch.isprintable() else "?" for ch in text[:2])
        return repr(head + "…" + f"({len(text)} chars)")
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(text) <= 2:
        return repr("*" * len(text))
    return repr(text[0] + "*" * (len(text) - 2) + text[-1])


def _cell_text(value: object) -> str:
    """A sheet cell as text: floats holding whole numbers lose the '.0' a sheet adds."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    return str(value)


def _blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


# Longer than any identifier a person has (an e-mail is at most 254 characters, a user agent
# a few hundred): such a cell is a paste gone wrong, dropped before any per-character work.
_LONGEST_CELL = 2_000


def _text(value: object) -> str:
    """Cell text for normalizing: NFC, invisible format characters (zero-width spaces, BOM,
    direction marks pasted from web pages) removed, outer space trimmed."""
    text = _checked_length(_cell_text(value))
    if text.isascii():  # the common case: ASCII is NFC already and holds no Cf character
        return text.strip()
    text = unicodedata.normalize("NFC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip()


def _checked_length(text: str) -> str:
    if len(text) > _LONGEST_CELL:
        raise _Drop(
            f"is {len(text):,} characters long, too long to be one",
            "clear the cell or paste only the value",
        )
    return text


def _strip_punct(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PSC")


def _letters_only(text: str) -> str:
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LM")


def _no_space_or_punct(text: str) -> str:
    """Without spaces of any kind, punctuation, symbols or control characters."""
    if text.isascii():
        return _ASCII_SPACE_OR_PUNCT.sub("", text)
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PSCZ")


def _ascii_letters(letters: str) -> str:
    """Lower-case letters with accents folded, for looking names up: québec → quebec."""
    if letters.isascii():
        return letters
    folded = unicodedata.normalize("NFKD", letters)
    return "".join(ch for ch in folded if "a" <= ch <= "z")


def normalize_email(value: object) -> str:
    text = _text(value).lower()
    if text.startswith("mailto:"):
        text = text[len("mailto:") :]
    has_control = any(unicodedata.category(ch) == "Cc" for ch in text)
    if has_control or not _EMAIL.match(text) or len(text) > 254:
        raise _Drop("not an e-mail address", "fix the e-mail cell (name@example.com)")
    return text


def normalize_phone(value: object, region: str) -> str:
    return _parse_phone(value, region)[0]


def _parse_phone(value: object, region: str) -> tuple[str, bool, str | None]:
    """The phone's digits with country code, whether the cell wrote that code itself (+44…,
    0044…, 44… that is no valid national number) rather than taking `region`'s, and the
    number's own region (alpha-2, lower-case; None for +800 and the like)."""
    parsed = _parse_phone_text(_text(value), region)
    if isinstance(parsed, _Drop):
        raise _Drop(parsed.why, parsed.fix)  # a fresh one: the cached one stays clean
    return parsed


# A row's phone is read twice when the row names no country (for its country, then to hash it):
# the second reading, a refusal included, is this cache's.
@functools.lru_cache(maxsize=64)
def _parse_phone_text(text: str, region: str) -> tuple[str, bool, str | None] | _Drop:
    digits = re.sub(r"\D", "", text)
    if len(digits) < 6 or len(digits) > 17:
        return _Drop(
            "not a phone number",
            "write the full number with its country code, e.g. +91 98765 43210",
        )
    candidates = [text]
    if not text.startswith("+"):
        if digits.startswith("00"):
            candidates.append("+" + digits[2:])
        candidates.append("+" + digits)
    for i, candidate in enumerate(candidates):
        try:
            number = phonenumbers.parse(candidate, region.upper())
        except phonenumbers.NumberParseException:
            continue
        # is_valid_number, split in its two steps to keep the region it finds on the way.
        region_of = phonenumbers.region_code_for_number(number)
        if region_of and phonenumbers.is_valid_number_for_region(number, region_of):
            digits = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            # Its own code: written with "+", found only as international digits, or another
            # country's (0044… read in India). A national number takes the region's.
            own_code = (
                i > 0
                or text.startswith("+")
                or number.country_code != phonenumbers.country_code_for_region(region.upper())
            )
            geographic = len(region_of) == 2 and region_of.isalpha()
            return digits[1:], own_code, region_of.lower() if geographic else None
    return _Drop(
        f"not a valid phone number for {region.upper()} or with a country code",
        "write the full number with its country code, e.g. +91 98765 43210",
    )


def normalize_name(value: object) -> str:
    """fn, ln: lower-case with every space and punctuation mark removed; letters of any script
    and their accents kept.

    Meta's page asks "lowercase, no punctuation, UTF-8" (`Valéry` → `valéry`,
    docs/normalization.md);
    its parameter builder's getNormalizedName also removes all whitespace, so "Mary Ann" is
    `maryann` and "De Souza" `desouza` (docs/normalization.md). The builder's list of punctuation is
    ASCII only; Meta's page says no punctuation at all, so a typographic apostrophe (O’Brien,
    as phones type it) goes too, and is hashed like O'Brien.
    """
    text = _no_space_or_punct(_text(value).lower())
    if not text:
        raise _Drop("has no letters", "leave it empty or write the name")
    return text


def normalize_city(value: object) -> str:
    """ct: the Latin letters and digits of the city, lower-case, starting with a letter.

    This is what Meta's parameter builder sends (getNormalizedCity keeps only a-z and 0-9 and
    refuses a value that does not start with a-z; docs/normalization.md), so an accented letter is
    dropped, not transliterated: "São Paulo" is `sopaulo` in the builder and here. Matching
    the hash Meta's own tools send for the same person matters more than a prettier spelling.
    """
    text = _LATIN_ALNUM_ONLY.sub("", _text(value)).lower()
    if not text or not text[0].isalpha():
        raise _Drop(
            "has no Latin letters to send (Meta matches cities written in Latin letters)",
            "write the city in Latin letters, e.g. Mumbai or New York",
        )
    return text


def normalize_state(value: object, country: str | None) -> str:
    """st: a US state or Canadian province as its 2-letter code; any other state in lower case
    without spaces or punctuation.

    Meta's page: "2-letter ANSI abbreviation code in lowercase … states outside the US in
    lowercase with no punctuation, no special characters, and no white space"
    (docs/normalization.md).
    The builder maps US state and Canadian province names to codes whatever the country
    (docs/normalization.md): "California" → `ca`, "Ontario" → `on`, as here. Two of its habits are
    not followed: it keeps any 2-letter text as a code (here too), but cuts every other state to its
    first two letters ("Karnataka" → `ka`), which Meta's page contradicts; and it finds a state
    name anywhere in the text, which here only US and Canadian rows do ("State of New York" →
    `ny`), so Mexico's "Baja California" stays itself.
    """
    letters = _letters_only(_text(value).lower())
    if not letters:
        raise _Drop("has no letters", "write the state, e.g. CA or Karnataka")
    if len(letters) == 2 and letters.isascii():
        return letters
    key = _ascii_letters(letters)
    code = _STATE_CODES.get(key)
    if code is None and country in ("us", None):
        code = US_ABBREVIATIONS.get(key)  # "Calif." for a US lead, or one of unknown country
    if code is None and country in ("us", "ca"):
        code = next((_STATE_CODES[n] for n in _STATE_NAMES_LONGEST_FIRST if n in key), None)
    return code or letters


def normalize_zip(value: object, country: str | None) -> str:
    text = re.sub(r"[\s\-]", "", _text(value).lower())
    text = _strip_punct(text)
    if not text:
        raise _Drop("is empty after cleaning", "write the postal code")
    if country == "us":
        digits = re.sub(r"\D", "", text)
        if not digits:
            raise _Drop("is not a US ZIP code", "write the 5-digit ZIP code")
        if isinstance(value, int | float) and len(digits) < 5:
            digits = digits.zfill(5)  # a sheet number dropped the leading zero (02134 → 2134)
        if len(digits) < 5:
            raise _Drop("is not a US ZIP code", "write the 5-digit ZIP code")
        return digits[:5]
    return text


def normalize_country(value: object) -> str:
    """country: ISO 3166-1 alpha-2, lower-case (docs/normalization.md), from a code, an ISO name, an
    alpha-3 code or a common alias: "United Kingdom" → `gb`, "USA" → `us`, "IND" → `in`.

    Meta's builder maps names and a few aliases the same way (docs/normalization.md) but cuts
    anything it does not know to two letters, which turns "AUT" (Austria) into Australia's `au` and
    "IRL" into Iran's `ir`; here an alpha-3 code is looked up in ISO 3166 (pycountry) and an
    unknown country is reported rather than guessed.
    """
    letters = _letters_only(_text(value).lower())
    if len(letters) == 2 and letters in _REGIONS:
        return letters
    key = _ascii_letters(letters)
    code = COUNTRY_ALIASES.get(key) or _iso_countries().get(key)
    if code is None and key.startswith("the"):
        code = _iso_countries().get(key[3:])  # "The Netherlands", "The Gambia"
    if code is None:
        raise _Drop("is not a country", "write the 2-letter ISO code, e.g. IN or US")
    return code


@functools.cache
def _iso_countries() -> dict[str, str]:
    """Every ISO 3166-1 country by alpha-2, alpha-3, name, official and common name (letters
    only, accents folded: "Côte d'Ivoire" → cotedivoire) → its alpha-2 code.

    Built on first use: pycountry's database is only read when a row names a country by
    something other than a code phonenumbers already knows.
    """
    import pycountry

    codes: dict[str, str] = {}
    for country in pycountry.countries:
        alpha_2 = str(country.alpha_2).lower()
        names = (country.alpha_2, country.alpha_3, country.name)
        others = (getattr(country, a, None) for a in ("official_name", "common_name"))
        for name in (*names, *others):
            if name:
                codes.setdefault(_ascii_letters(_letters_only(str(name).lower())), alpha_2)
    return codes


# The words Meta's parameter builder maps to a gender (getNormalizedGender, facebook/capi-param-
# builder), as letters only ("ma'am" → maam), and "w" (weiblich, woman) as before.
_FEMALE_WORDS = frozenset({
    "f", "w", "female", "woman", "girl", "lady", "miss", "ms", "mrs", "madam", "maam",
    "daughter", "mother", "mom", "mama", "mommy", "aunt", "niece", "sister", "wife",
    "girlfriend", "bride", "widow", "queen", "princess", "duchess", "countess", "empress",
    "goddess", "maiden", "lass", "gal", "chick", "dame", "belle", "she", "her", "hers",
    "herself",
})  # fmt: skip
_MALE_WORDS = frozenset({
    "m", "male", "man", "boy", "gentleman", "guy", "sir", "mister", "mr", "son", "father",
    "dad", "daddy", "papa", "uncle", "nephew", "brother", "husband", "boyfriend", "groom",
    "widower", "king", "prince", "duke", "count", "emperor", "god", "lord", "lad", "fellow",
    "chap", "bloke", "dude", "he", "him", "his", "himself",
})  # fmt: skip


def normalize_gender(value: object) -> str:
    """ge: f or m, from the letters or one of the words Meta's parameter builder maps
    ("Girl", "Lady", "He"…); anything else is dropped, never guessed."""
    text = _letters_only(_text(value).lower())
    if text in _FEMALE_WORDS:
        return "f"
    if text in _MALE_WORDS:
        return "m"
    raise _Drop("is not f or m", "write f or m, or leave it empty")


_SERIAL_EPOCH = date(1899, 12, 30)
# A date cell before 1906 holds no living lead's birthday; a small number there is a year
# (1997 is serial 1905-06-19) or an age, never a date of birth.
_FIRST_BIRTH_SERIAL = (date(1906, 1, 1) - _SERIAL_EPOCH).days
_YEAR_ALONE = re.compile(r"(19|20)\d\d")
_FULL_DATE = "write the full date, e.g. 1997-02-16 (or format the cell as a date)"


def normalize_birth_date(value: object, month_first: bool) -> str:
    """db: YYYYMMDD (docs/normalization.md: `2/16/1997` → `19970216`), from a date cell's serial
    number or from text; a year alone is refused, never read as a serial (Meta's builder refuses it
    too: its getNormalizedDOB needs three numbers or eight digits)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        serial = float(value)
        if serial.is_integer() and _YEAR_ALONE.fullmatch(str(int(serial))):
            raise _Drop("is a year alone, not a date of birth", _FULL_DATE)
        if 1 <= serial < _FIRST_BIRTH_SERIAL:
            raise _Drop("is a number, not a date of birth", _FULL_DATE)
        if _FIRST_BIRTH_SERIAL <= serial < 80000:
            day = _SERIAL_EPOCH + timedelta(days=int(serial))
            if day.year <= 2100:
                return day.strftime("%Y%m%d")
        text = _cell_text(value)
    else:
        text = _text(value)
        if _YEAR_ALONE.fullmatch(text):
            raise _Drop("is a year alone, not a date of birth", _FULL_DATE)
    parsed = _parse_birth_date(text, month_first)
    if parsed is None or not (1900 <= parsed.year <= 2100):
        raise _Drop("is not a date", _FULL_DATE)
    return parsed.strftime("%Y%m%d")


def _parse_birth_date(text: str, month_first: bool) -> date | None:
    text = text.strip()
    if re.fullmatch(r"\d{8}", text):
        return _date(int(text[:4]), int(text[4:6]), int(text[6:]))
    iso = re.fullmatch(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ].*)?", text)
    if iso:
        return _date(int(iso[1]), int(iso[2]), int(iso[3]))
    local = re.fullmatch(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})", text)
    if local:
        a, b, y = int(local[1]), int(local[2]), int(local[3])
        if a > 12:
            return _date(y, b, a)
        if b > 12:
            return _date(y, a, b)
        return _date(y, a, b) if month_first else _date(y, b, a)
    return None


def _date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def normalize_external_id(value: object) -> str:
    """external_id: without any whitespace, lower-case, as Meta's builder sends it
    (getNormalizedExternalID, docs/normalization.md), so the pixel's and this hash agree: " CRM-42 "
    and "crm-42" are one person. Punctuation is kept: it is part of many ids."""
    text = "".join(_text(value).split()).lower()
    if not text:
        raise _Drop("is empty", "leave it empty or write the id")
    return text


def normalize_lead_id(value: object) -> int:
    """The Instant Form leadgen_id: 15–17 digits, exact (docs/normalization.md)."""
    fix = "format the column as Plain text and paste the id again"
    if isinstance(value, bool):
        raise _Drop("is not a lead id", "paste the 15–17 digit leadgen id")
    if isinstance(value, int):
        # Only an integer a double holds exactly: a larger one may come from a sheet's number
        # cell (a double) and may already have lost digits (docs/normalization.md).
        if abs(value) >= _EXACT_INT:
            raise _Drop("is a number too long for a sheet to keep exactly", fix)
        digits = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer() or abs(value) >= _EXACT_INT:
            raise _Drop("lost digits because the cell is a number", fix)
        digits = str(int(value))
        if len(digits) > 15:
            # A sheet keeps 15 significant digits: anything longer typed as a number is suspect.
            raise _Drop("lost digits because the cell is a number", fix)
    else:
        text = _text(value).lstrip("'")
        if _SCIENTIFIC.match(text):
            raise _Drop("lost digits because the cell is a number", fix)
        digits = text
    if not _LEAD_ID_TEXT.match(digits) or digits.startswith("0"):
        # A leading zero would vanish in the int Meta needs: a different id, never the same.
        raise _Drop(
            "is not 15–17 digits",
            "copy the leadgen id exactly from the Instant Form export",
        )
    return int(digits)


def _plain(value: object) -> str:
    text = _checked_length(_cell_text(value)).strip()
    if not text:
        raise _Drop("is empty", "leave it empty")
    return text


def _first_value(value: object) -> object:
    if isinstance(value, list | tuple):
        for item in value:
            if not _blank(item):
                return item
        return None
    return value


def contact_hashes(raw: Mapping[str, object], default_country: str) -> set[str]:
    """The hashed e-mails and phones of a row's raw cells, as they are sent: how a row that lost
    its CAPI Key is recognised as a lead already known (sync/run.py)."""
    hashed = hash_user_data(
        {k: v for k, v in raw.items() if k in ("em", "ph")}, default_country
    ).user_data
    out: set[str] = set()
    for key in ("em", "ph"):
        value = hashed.get(key)
        out.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
    return out


def phone_country(value: object, region: str) -> str | None:
    """The country a phone number names by its own country code (alpha-2, lower-case), or None
    when it has none (a national number read in `region` says nothing of where the lead is),
    is not a valid number, or belongs to no country (+800, +882…)."""
    try:
        _, own_code, country = _parse_phone(value, region)
    except _Drop:
        return None
    return country if own_code else None


def lead_country(
    raw: Mapping[str, object], default_country: str, assume_country: bool
) -> tuple[str | None, str]:
    """The lead's country and where it came from ("row", "phone", "assumed" or "unknown"): the
    row's Country cell, else the country of its phone number's own code, else
    `default_country` only when the bridge says every lead is there (`assume_country`), else
    None. (docs/values.md "Countries")"""
    raw_country = _first_value(raw.get("country"))
    if not _blank(raw_country):
        try:
            return normalize_country(raw_country), "row"
        except Exception:
            pass  # reported by hash_user_data; the phone may still tell
    return _country_beyond_the_row(raw, _default_country(default_country), assume_country)


def _country_beyond_the_row(
    raw: Mapping[str, object], region: str, assume_country: bool
) -> tuple[str | None, str]:
    phones = raw.get("ph")
    for phone in phones if isinstance(phones, list | tuple) else [phones]:
        if not _blank(phone):
            country = phone_country(phone, region)
            if country is not None:
                return country, "phone"
    if assume_country:
        return region, "assumed"
    return None, "unknown"


def hash_user_data(
    raw: Mapping[str, object], default_country: str, *, assume_country: bool = False
) -> HashedIdentity:
    """Normalize and hash every field of `raw` (Meta's keys) on its own.

    `default_country` is the region national phone numbers are read in; it is the lead's
    country only with `assume_country` (see lead_country). ZIP codes, states and dates of birth
    follow the lead's country. Whether the resulting set is strong enough is the planner's call.
    """
    user_data: dict[str, object] = {}
    problems: list[FieldProblem] = []
    region = _default_country(default_country)
    country: str | None = None
    raw_country = _first_value(raw.get("country"))
    if not _blank(raw_country) and _SHA256_HEX.match(_cell_text(raw_country).strip()):
        # Already hashed upstream: sent as is (the row's region for phones is then unknown).
        user_data["country"] = _cell_text(raw_country).strip().lower()
        raw_country = None
    if not _blank(raw_country):
        try:
            country = normalize_country(raw_country)
        except _Drop as exc:
            problems.append(FieldProblem("country", shown_safely(raw_country), exc.why, exc.fix))
        except Exception:
            problems.append(
                FieldProblem("country", "(unreadable)", "could not be read", "retype the cell")
            )
    # National numbers are read in the row's own country, else the bridge's region (a country
    # found from a phone's own code changes no phone's reading).
    phone_region = country or region
    if "country" not in user_data:
        # Meta asks for the country always, but a country we cannot defend is a claim about
        # the person: none is sent rather than the bridge's own (issue 21; lead_country).
        if country is None:
            country = _country_beyond_the_row(raw, region, assume_country)[0]
        if country is not None:
            user_data["country"] = _country_hash(country)
    state: str | None = None

    for key in USER_DATA_FIELDS:
        if key == "country" or key not in raw:
            continue
        cell = raw[key]
        values: Sequence[object] = cell if isinstance(cell, list | tuple) else [cell]
        out: list[object] = []
        for value in values:
            if _blank(value):
                continue
            try:
                out.append(_normalize_one(key, value, country, phone_region))
                if key == "st" and state is None and out[-1] != value:
                    state = normalize_state(value, country)  # plain, for Limited Data Use
            except _Drop as exc:
                shown = shown_as_sheet(value) if key == "lead_id" else shown_safely(value)
                problems.append(FieldProblem(key, shown, exc.why, exc.fix))
            except Exception:  # never raise on a cell, whatever it holds
                problems.append(
                    FieldProblem(key, "(unreadable)", "could not be read", "retype the cell")
                )
        if out:
            unique = list(dict.fromkeys(out))
            # Only hashed fields may be lists (docs/normalization.md); lead_id, fbc, fbp, IP and
            # user agent take the first usable value.
            many = len(unique) > 1 and key in HASHED_FIELDS
            user_data[key] = unique if many else unique[0]
    return HashedIdentity(user_data, problems, country, state)


def hash_identities(
    identities: Sequence[Mapping[str, object]], default_country: str, *, assume_country: bool
) -> list[HashedIdentity | None]:
    """`hash_user_data` for each row's raw identity cells; None for one it could not hash (the
    caller hashes that one itself, and reports it as its own planning would). What a hashing
    worker process runs (sync/hashing.py): this module imports little, so neither does it."""
    out: list[HashedIdentity | None] = []
    for raw in identities:
        try:
            out.append(hash_user_data(raw, default_country, assume_country=assume_country))
        except Exception:
            out.append(None)
    return out


@functools.lru_cache(maxsize=32)
def _default_country(code: str) -> str:
    """The config's default country, normalized once (not once per row)."""
    try:
        return normalize_country(code)
    except _Drop:
        return "us"


@functools.lru_cache(maxsize=256)
def _country_hash(country: str) -> str:
    # One string shared by every row of a country, not one copy per row.
    return sha256_hex(country)


def _normalize_one(key: str, value: object, country: str | None, region: str) -> object:
    if key in PLAIN_FIELDS:
        return normalize_lead_id(value) if key == "lead_id" else _plain(value)
    text = _checked_length(_cell_text(value)).strip()
    if _SHA256_HEX.match(text):
        return text.lower()  # already hashed upstream: never hash twice
    if key == "ph":
        return sha256_hex(normalize_phone(value, region))
    if key == "db":
        # How the sheet writes dates: the lead's country, else the bridge's region.
        month_first = (country or region) in _MONTH_FIRST_COUNTRIES
        return sha256_hex(normalize_birth_date(value, month_first=month_first))
    if key in _REPEATING and isinstance(value, str | int | float):
        return _repeating_hash(key, value, type(value).__name__, country)
    return sha256_hex(_normalize_hashed(key, value, country))


# Fields whose values repeat across a sheet (first and last names, cities, states, postcodes,
# gender): each distinct cell is normalized and hashed once, and its hash is one string shared
# by every row with that cell (a 100,000-lead sheet held ~300,000 copies). The type is part of
# the key: 1 and 1.0 and True are equal as cache keys, not as cells.
_REPEATING = frozenset({"fn", "ln", "ct", "st", "zp", "ge"})


@functools.lru_cache(maxsize=16_384)
def _repeating_hash(key: str, value: object, kind: str, country: str | None) -> str:
    return sha256_hex(_normalize_hashed(key, value, country))


def _normalize_hashed(key: str, value: object, country: str | None) -> str:
    if key == "em":
        return normalize_email(value)
    if key in ("fn", "ln"):
        return normalize_name(value)
    if key == "ge":
        return normalize_gender(value)
    if key == "ct":
        return normalize_city(value)
    if key == "st":
        return normalize_state(value, country)
    if key == "zp":
        return normalize_zip(value, country)
    return normalize_external_id(value)


# ---- match keys: which identifiers a row carries, and our own strength label -------------

Strength = Literal["strong", "good", "weak", "none"]

# docs/normalization.md, Meta v13+: an event whose identifiers are only a subset of one of these
# sets is rejected.
INVALID_ALONE: tuple[frozenset[str], ...] = (
    frozenset({"ct", "country", "st", "zp", "ge", "client_user_agent"}),
    frozenset({"db", "client_user_agent"}),
    frozenset({"fn", "ge"}),
    frozenset({"ln", "ge"}),
)


_NAMES_AND_PLACES = frozenset({"fn", "ln", "ge", "ct", "st", "zp", "country"})


@dataclass(frozen=True)
class MatchKeys:
    """The identifiers an event carries and sheet-bridge's strength label for them.

    The label is ours, not Meta's Event Match Quality (which CRM events do not get): `strong`
    has a lead id or a click id, or both e-mail and phone; `good` has e-mail, phone or an
    external id; `weak` has only weaker keys Meta still accepts (browser id, IP, birth date);
    `none` is what Meta rejects (docs/normalization.md) and, our own rule, names and places alone:
    they match nobody, and the country is always sent so it does not count.
    """

    keys: tuple[str, ...]
    strength: Strength

    @property
    def sendable(self) -> bool:
        return self.strength != "none"


def match_keys(user_data: Mapping[str, object]) -> MatchKeys:
    return _match_keys(tuple(k for k in USER_DATA_FIELDS if k in user_data))


@functools.lru_cache(maxsize=1024)
def _match_keys(ordered: tuple[str, ...]) -> MatchKeys:
    """One shared MatchKeys per set of keys (a sheet has a handful of shapes, many rows)."""
    keys = frozenset(ordered)
    if not keys or keys <= _NAMES_AND_PLACES or any(keys <= bad for bad in INVALID_ALONE):
        return MatchKeys(ordered, "none")
    if "lead_id" in keys or "fbc" in keys or {"em", "ph"} <= keys:
        return MatchKeys(ordered, "strong")
    if keys & {"em", "ph", "external_id"}:
        return MatchKeys(ordered, "good")
    return MatchKeys(ordered, "weak")
