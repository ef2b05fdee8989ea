"""The bridge's TOML config, validated: sheet, Meta pixel, server auth, columns and stage map."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Logical fields a [columns] table may map to a header. Values are the header text in the sheet.
IDENTITY_COLUMNS: dict[str, str] = {
    # logical field -> Meta user_data key (docs/normalization.md)
    "email": "em",
    "phone": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "date_of_birth": "db",
    "gender": "ge",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "country": "country",
    "external_id": "external_id",
    "lead_id": "lead_id",
    "fbc": "fbc",
    "fbp": "fbp",
    "client_ip": "client_ip_address",
    "user_agent": "client_user_agent",
}
OTHER_COLUMNS = ("status", "status_changed_at", "created_at", "pixel_event_id", "value", "currency")
KNOWN_COLUMNS = frozenset(IDENTITY_COLUMNS) | frozenset(OTHER_COLUMNS)

# Columns sheet-bridge owns and writes; created at the end of the header row when missing.
BRIDGE_COLUMNS: tuple[str, ...] = (
    "CAPI Key",
    "CAPI Event ID",
    "CAPI Status",
    "CAPI Sent At",
    "CAPI Response",
)
LOG_TAB = "CAPI Log"


def is_ledger_url(value: str) -> bool:
    """A PostgreSQL ledger (a URL) rather than an SQLite file."""
    return value.startswith(("postgresql://", "postgres://"))


class ConfigError(Exception):
    """A config problem a person can fix: where it is, what is wrong, what to do."""


def currency_code(value: str) -> str:
    """An ISO 4217 code (pycountry's list), upper-cased; ValueError with the fix otherwise."""
    from sheet_bridge.meta.money import CurrencyError, iso_currency

    try:
        return iso_currency(value)
    except CurrencyError as exc:
        raise ValueError(
            f"currency {value!r} {exc.why}; use a 3-letter ISO 4217 code such as 'INR' or 'USD'"
        ) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SheetsConfig(_Strict):
    spreadsheet_id: str = Field(min_length=1)
    tab: str = "Leads"
    api_endpoint: str | None = None
    credentials: Literal["service_account", "anonymous"] = "service_account"
    service_account_file: str | None = None
    # How to read ambiguous dates such as 03/04/2026 typed as text: day first (03 April) or
    # month first (March 4). Unset: the spreadsheet's locale decides, as it does in Sheets
    # (en_US month first; docs/identity-and-dates.md). Serial-number and ISO 8601 cells are
    # never ambiguous.
    date_order: Literal["day_first", "month_first"] | None = None

    @field_validator("credentials", mode="before")
    @classmethod
    def _no_user_token(cls, v: Any) -> Any:
        # The add-on holds only spreadsheets.currentonly, a scope Apps Script's own services
        # honour and the Sheets REST API does not: a user's token could never read the sheet.
        if v == "user_token":
            raise ValueError(
                "credentials = 'user_token' is not supported (the add-on's token only opens "
                "the sheet inside Apps Script, not through the Sheets API); use "
                "credentials = 'service_account' with service_account_file = 'key.json' and "
                "share the sheet with that service account"
            )
        return v

    @model_validator(mode="after")
    def _credentials_fit(self) -> SheetsConfig:
        if self.credentials == "service_account" and not self.service_account_file:
            raise ValueError(
                "credentials = 'service_account' needs service_account_file = 'key.json' "
                "(the JSON key of the service account the sheet is shared with)"
            )
        if self.credentials == "anonymous" and not _is_loopback(self.api_endpoint):
            raise ValueError(
                "credentials = 'anonymous' only works with a local emulator; set api_endpoint "
                "to http://127.0.0.1:PORT or use service_account"
            )
        return self


class MetaConfig(_Strict):
    pixel_id: str = Field(min_length=1)
    access_token_env: str = "META_CAPI_TOKEN"
    graph_url: str = "https://graph.facebook.com"
    api_version: str = "v25.0"
    test_event_code: str = ""
    action_source: str = "system_generated"
    # Why a bridge sends another action_source than system_generated (Conversion Leads' own,
    # docs/meta-events.md); `check` refuses the choice without a reason.
    action_source_reason: str = ""
    lead_event_source: str = "Google Sheets"
    # The region national phone numbers (without a country code) are read in. It is sent as a
    # lead's country only with assume_country = true: the bridge says every lead is there
    # (docs/values.md "Countries"); otherwise a lead's country is its row's or its phone's.
    default_country: str = "US"
    assume_country: bool = False
    currency: str = "USD"
    batch_size: int = Field(default=500, ge=1, le=1000)
    timeout_seconds: float = Field(default=20.0, gt=0)
    # Requests to Meta in flight at once during a pass. Meta answers in hundreds of milliseconds,
    # so one at a time leaves the pass waiting; more than a few only meets Meta's rate limits
    # sooner (a throttling answer halves it for the rest of the pass).
    max_in_flight: int = Field(default=4, ge=1, le=16)
    # Limited Data Use, sent on every event as Meta documents it (developers.facebook.com/docs/
    # marketing-apis/data-processing-options; facebook-python-business-sdk serverside Event):
    # None sends nothing; [] says "not LDU" explicitly; ["LDU"] with country/state 0/0 lets
    # Meta geolocate, or 1 (US) and a state code (1000 = California) names the place.
    data_processing_options: tuple[Literal["LDU"], ...] | None = None
    data_processing_options_country: int | None = None
    data_processing_options_state: int | None = None

    @field_validator("pixel_id")
    @classmethod
    def _pixel_digits(cls, v: str) -> str:
        if not v.strip().isascii() or not v.strip().isdigit():
            raise ValueError(
                f"pixel_id {v!r} is not a number; copy the Pixel (dataset) ID from Events Manager"
            )
        return v.strip()

    @field_validator("default_country")
    @classmethod
    def _country(cls, v: str) -> str:
        if len(v) != 2 or not v.isalpha():
            raise ValueError(f"default_country {v!r} must be a 2-letter ISO code such as 'IN'")
        return v.upper()

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str) -> str:
        return currency_code(v)

    @field_validator("action_source")
    @classmethod
    def _action_source(cls, v: str) -> str:
        from sheet_bridge.meta.events import ACTION_SOURCES

        if v not in ACTION_SOURCES:
            raise ValueError(
                f"action_source {v!r} is not one of Meta's: {', '.join(sorted(ACTION_SOURCES))}"
            )
        return v

    @field_validator("api_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.fullmatch(r"v\d+\.\d+", v.strip()):
            raise ValueError(f"api_version {v!r} should look like 'v25.0'")
        return v.strip()

    @field_validator("data_processing_options", mode="before")
    @classmethod
    def _options_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError(
                f'data_processing_options must be a list: ["LDU"] (Limited Data Use) or [] '
                f"(explicitly not LDU); got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _processing_options_fit(self) -> MetaConfig:
        ldu = bool(self.data_processing_options)
        country, state = self.data_processing_options_country, self.data_processing_options_state
        if not ldu and (country is not None or state is not None):
            raise ValueError(
                "data_processing_options_country/_state only mean something with "
                'data_processing_options = ["LDU"]; remove them or add "LDU"'
            )
        if country not in (None, 0, 1):
            raise ValueError(
                f"data_processing_options_country = {country}: Meta takes 1 (United States) "
                "or 0 (let Meta geolocate)"
            )
        if state is not None and state != 0 and not 1000 <= state <= 1999:
            raise ValueError(
                f"data_processing_options_state = {state}: Meta takes a US state code such as "
                "1000 (California), or 0 (let Meta geolocate)"
            )
        if state and country != 1:
            raise ValueError(
                f"data_processing_options_state = {state} names a US state; set "
                "data_processing_options_country = 1 with it"
            )
        return self

    def assumed_place(self) -> tuple[int, int] | None:
        """The configured LDU place (country, state numbers) when it may stand for a lead's:
        only when the bridge says every lead is in the US (assume_country with default_country
        US) and names a place. Each lead's own place comes first (meta/payload.py)."""
        country = self.data_processing_options_country
        if not (self.assume_country and self.default_country == "US" and country == 1):
            return None
        return (1, self.data_processing_options_state or 0)

    def access_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The token from the environment variable this config names (never from the file)."""
        value = (environ if environ is not None else os.environ).get(self.access_token_env, "")
        return value.strip() or None


class ServerConfig(_Strict):
    shared_secret_env: str | None = None
    id_token_audience: str | None = None
    allowed_emails: tuple[str, ...] = ()
    allowed_domain: str | None = None
    # Where Google's ID-token signing certificates are fetched; tests point it at a local server.
    id_token_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    ledger: str | None = None
    max_body_bytes: int = 1_000_000

    @field_validator("allowed_domain")
    @classmethod
    def _bare_domain(cls, v: str | None) -> str | None:
        if v is None:
            return None
        domain = address_key(v).removeprefix("@")
        if not domain or "@" in domain or "." not in domain:
            raise ValueError(
                f"allowed_domain {v!r} is not a domain; give the Workspace domain, "
                "e.g. allowed_domain = 'example.com'"
            )
        return domain

    def shared_secret(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The secret from the variable this config names, stripped: a secret file's trailing
        newline must not lock every caller out."""
        if not self.shared_secret_env:
            return None
        value = (environ if environ is not None else os.environ).get(self.shared_secret_env, "")
        return value.strip() or None


class SyncConfig(_Strict):
    """How edits from the add-on are sent (docs/edits.md)."""

    # An edited status is sent once it has held this long (a mis-click changed back within it
    # sends nothing); 0 sends at once. Meta's 7-day window for website events leaves room.
    settle_seconds: float = Field(default=120.0, ge=0, le=3600)
    # How often each serving process looks for edits that are due (0: never, for tests and
    # one-shot commands); due edits reach Meta within settle_seconds + this + one send.
    sweep_seconds: float = Field(default=10.0, ge=0, le=300)


class StageConfig(_Strict):
    status: tuple[str, ...]
    event: str = Field(min_length=1)
    value: float | None = None
    currency: str | None = None
    custom: bool = False
    send: bool = True
    negative: bool = False

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if isinstance(v, str):
            return (v,)
        return v

    @field_validator("status")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(s.strip() for s in v if s.strip())
        if not cleaned:
            raise ValueError("a stage needs at least one status value, e.g. status = ['SQL']")
        return cleaned

    @field_validator("currency")
    @classmethod
    def _currency(cls, v: str | None) -> str | None:
        return None if v is None else currency_code(v)

    @field_validator("value")
    @classmethod
    def _value(cls, v: float | None) -> float | None:
        from sheet_bridge.meta.money import value_problem

        problem = None if v is None else value_problem(v)
        if problem is not None:
            raise ValueError(f"value {v:g} {problem[0]}; leave value out to send none")
        return v


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def address_key(address: str) -> str:
    """How an e-mail address or domain is compared: trimmed, A-Z lowered, nothing else.
    casefold() would make "opſ@" (long s) equal "ops@" and "straße" equal "strasse": other
    addresses. Domains are case-insensitive in ASCII (https://www.rfc-editor.org/rfc/rfc4343);
    a non-ASCII letter is compared exactly."""
    return address.strip().translate(_ASCII_LOWER)


def status_key(value: object) -> str:
    """How a status cell is compared with the stage map: trimmed, case-folded, spaces folded."""
    return " ".join(str(value).split()).casefold()


@dataclass(frozen=True)
class Stage:
    """One funnel stage: which statuses mean it, which event it sends, and where it stands."""

    index: int  # position in the file: funnel order
    statuses: tuple[str, ...]
    event: str
    value: float | None
    currency: str | None
    custom: bool
    send: bool
    negative: bool

    @property
    def label(self) -> str:
        return self.statuses[0]


class StageMap:
    """The ordered stage map: status text → stage, in funnel order."""

    def __init__(self, stages: Iterable[StageConfig]) -> None:
        self.stages: tuple[Stage, ...] = tuple(
            Stage(i, s.status, s.event, s.value, s.currency, s.custom, s.send, s.negative)
            for i, s in enumerate(stages)
        )
        self._by_status: dict[str, Stage] = {}
        for stage in self.stages:
            for status in stage.statuses:
                self._by_status[status_key(status)] = stage
        self.positive: tuple[Stage, ...] = tuple(s for s in self.stages if not s.negative)
        # Per-row lookups on a 100,000-lead sheet: memoised, and rank by index, not by
        # comparing whole Stage objects.
        self._rank = {s.index: i for i, s in enumerate(self.positive)}
        self._seen: dict[str, Stage | None] = {}

    def lookup(self, status: object) -> Stage | None:
        if isinstance(status, str) and len(self._seen) < 10_000:
            if status not in self._seen:
                self._seen[status] = self._by_status.get(status_key(status))
            return self._seen[status]
        return self._by_status.get(status_key(status))

    def rank(self, stage: Stage) -> int:
        """Position among positive stages (funnel progress); -1 for a negative stage."""
        return -1 if stage.negative else self._rank[stage.index]

    def configured_statuses(self) -> list[str]:
        return [status for stage in self.stages for status in stage.statuses]


class BridgeConfig(_Strict):
    sheets: SheetsConfig
    meta: MetaConfig
    server: ServerConfig = ServerConfig()
    sync: SyncConfig = SyncConfig()
    columns: dict[str, str]
    stages: tuple[StageConfig, ...] = Field(min_length=1)
    # Set by load_config: where this config came from (for messages and relative paths).
    source: str = "<memory>"

    @field_validator("columns")
    @classmethod
    def _columns_known(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - KNOWN_COLUMNS)
        if unknown:
            raise ValueError(
                f"unknown column field(s) {', '.join(unknown)}; known fields are "
                f"{', '.join(sorted(KNOWN_COLUMNS))}"
            )
        if "status" not in v:
            raise ValueError("columns.status is required: the header of the lead status column")
        for field, header in v.items():
            if not header.strip():
                raise ValueError(f"columns.{field} is empty; give the header text in the sheet")
        owned = {h.casefold() for h in BRIDGE_COLUMNS}
        for field, header in v.items():
            if header.strip().casefold() in owned:
                raise ValueError(
                    f"columns.{field} = {header!r} is a column sheet-bridge writes; "
                    "map it to one of your own columns"
                )
        return v

    @model_validator(mode="after")
    def _stages_distinct(self) -> BridgeConfig:
        seen: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            for status in stage.status:
                key = status_key(status)
                if key in seen:
                    raise ValueError(
                        f"status {status!r} is listed in stage {seen[key] + 1} and stage {i + 1}; "
                        "a status can mean only one stage"
                    )
                seen[key] = i
        events: dict[str, int] = {}
        for i, stage in enumerate(self.stages):
            if stage.send and stage.event in events:
                raise ValueError(
                    f"event {stage.event!r} is sent by stage {events[stage.event] + 1} and stage "
                    f"{i + 1}; each stage needs its own event name (one event per lead and name)"
                )
            events[stage.event] = i
        if not any(not s.negative for s in self.stages):
            raise ValueError("at least one stage must be positive (not negative = true)")
        return self

    @property
    def stage_map(self) -> StageMap:
        return StageMap(self.stages)

    def ledger_location(self, environ: Mapping[str, str] | None = None) -> str:
        """The ledger: SHEET_BRIDGE_LEDGER, else [server] ledger, else a file in the data dir.
        A postgresql:// URL as given; a file path made absolute (relative to the config)."""
        env = environ if environ is not None else os.environ
        value = env.get("SHEET_BRIDGE_LEDGER") or self.server.ledger
        if value and is_ledger_url(value):
            return value
        if env.get("SHEET_BRIDGE_LEDGER"):
            return str(Path(env["SHEET_BRIDGE_LEDGER"]))
        if self.server.ledger:
            path = Path(self.server.ledger)
            if not path.is_absolute() and self.source not in ("<memory>", ""):
                path = Path(self.source).parent / path
            return str(path)
        base = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        return str(base / "sheet-bridge" / "ledger.db")

    def resolve_path(self, value: str) -> Path:
        """A path from the file, relative to the file's folder."""
        path = Path(value)
        if not path.is_absolute() and self.source not in ("<memory>", ""):
            path = Path(self.source).parent / path
        return path


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_FIXES = {
    "missing": "add it",
    "extra_forbidden": "remove it or check its spelling against examples/bridge.toml",
}


def _describe(err: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()))
    # Stages are an array of tables: say "stages[2]" (1-based, as a person counts them).
    parts = loc.split(".")
    if len(parts) >= 2 and parts[0] == "stages" and parts[1].isdigit():
        parts = [f"[[stages]] #{int(parts[1]) + 1}", *parts[2:]]
        loc = ".".join(parts)
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    fix = _FIXES.get(kind)
    where = f"key {loc}" if loc else "the file"
    return f"{where}: {msg}" + (f"; {fix}" if fix else "")


def parse_config(data: Mapping[str, Any], source: str = "<memory>") -> BridgeConfig:
    """Validate a config mapping (as TOML gives it); errors name the source, key and fix."""
    try:
        return BridgeConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(f"{source}: " + "\n  ".join(lines)) from None


def load_config(path: str | os.PathLike[str]) -> BridgeConfig:
    """Read and validate one bridge config file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such config file; copy examples/bridge.toml and edit it"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(p))


def load_configs(path: str | os.PathLike[str]) -> list[BridgeConfig]:
    """One file = one bridge; a folder = every *.toml in it. Two claiming one tab is an error."""
    p = Path(path)
    files = sorted(p.glob("*.toml")) if p.is_dir() else [p]
    if not files:
        raise ConfigError(f"{p}: the folder holds no *.toml bridge configs")
    configs = [load_config(f) for f in files]
    claimed: dict[tuple[str, str], str] = {}
    for cfg in configs:
        key = (cfg.sheets.spreadsheet_id, cfg.sheets.tab)
        if key in claimed:
            raise ConfigError(
                f"{cfg.source} and {claimed[key]} both claim spreadsheet {key[0]} tab "
                f"{key[1]!r}; one tab can feed one bridge only"
            )
        claimed[key] = cfg.source
    return configs
