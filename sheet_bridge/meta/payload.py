"""A planned stage change → the Conversions API event dict Meta expects (docs/meta-errors.md,
docs/meta-events.md)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

# JSON as httpx would send it (httpx/_content.py encode_json): UTF-8, no spaces, no NaN.
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
# A string as `dumps` writes it (the C encoder json uses with ensure_ascii=False).
_string = json.encoder.encode_basestring


def build_event(
    *,
    event_name: str,
    event_time: int,
    event_id: str,
    action_source: str,
    user_data: dict[str, object],
    lead_status: str,
    lead_event_source: str,
    value: float | None = None,
    currency: str | None = None,
    processing_options: Mapping[str, object] | None = None,
) -> dict[str, Any]:
    """One CAPI event. `event_time` is Unix seconds. `custom_data` carries the raw status (for
    custom conversions) and the two fields that make it a Conversion Leads event.
    `processing_options`: the Limited Data Use fields (data_processing_options and its
    _country/_state), top-level event fields as Meta's server-event parameters place them."""
    event: dict[str, Any] = {
        "event_name": event_name,
        "event_time": int(event_time),
        "event_id": event_id,
        "action_source": action_source,
        # Not copied: a lead's events share one user_data dict (a 100,000-lead first pass
        # holds ~190,000 events in memory); nothing mutates a payload once built.
        "user_data": user_data,
        "custom_data": custom_data(lead_status, lead_event_source, value, currency),
    }
    if processing_options:
        event.update(processing_options)
    return event


def custom_data(
    lead_status: str, lead_event_source: str, value: float | None, currency: str | None
) -> dict[str, Any]:
    """An event's custom_data (build_event)."""
    data: dict[str, Any] = {
        "lead_status": lead_status,
        "event_source": "crm",
        "lead_event_source": lead_event_source,
    }
    if value is not None:
        data["value"] = value
        if currency:
            data["currency"] = currency
    return data


@functools.lru_cache(maxsize=4096)
def custom_data_text(
    lead_status: str,
    lead_event_source: str,
    value: float | None,
    currency: str | None,
    value_type: str,
    as_json: bool,
) -> str:
    """custom_data's JSON (`dumps`), or its repr, worked out once for the events that share it
    (a sheet has a few statuses and amounts; a 100,000-lead first pass ~190,000 events).
    `value_type`: the value's type's name, so 100 and 100.0 (equal keys) are cached apart."""
    data = custom_data(lead_status, lead_event_source, value, currency)
    return dumps(data) if as_json else repr(data)


def event_json(
    *,
    event_name: str,
    event_time: int,
    event_id: str,
    action_source: str,
    user_data_json: str,
    custom_data_json: str,
) -> str:
    """`dumps(build_event(...))` for an event without processing options, from the JSON of
    its user_data and custom_data worked out once for the events sharing them: the same text
    (tests/sync/test_event_text.py compares them), in about half the time."""
    return (
        f'{{"event_name":{_string(event_name)},"event_time":{int(event_time)!r},'
        f'"event_id":{_string(event_id)},"action_source":{_string(action_source)},'
        f'"user_data":{user_data_json},"custom_data":{custom_data_json}}}'
    )


# Limited Data Use describes the person, so it is worked out per event from the lead's own
# place (developers.facebook.com/docs/marketing-apis/data-processing-options): country 1 is the
# United States and state 1000 California, Meta's documented example. Meta lists more LDU
# states (Colorado, Connecticut, Delaware, Florida, Montana, Nebraska, New Hampshire, New
# Jersey, Oregon, Texas) without a state number we could check, and says that when the
# location is not set it determines itself whether the event comes from one of them: those
# leads, and every lead whose US state is not known, get 0/0 (Meta geolocates).
LDU_STATE_NUMBERS: dict[str, int] = {"ca": 1000}
_GEOLOCATE = (0, 0)


def processing_options(
    options: tuple[str, ...] | None,
    country: str | None,
    state: str | None,
    assumed_place: tuple[int, int] | None = None,
) -> dict[str, object]:
    """The Limited Data Use fields of one lead's events ({} when the bridge sets none).

    `country`/`state` are the lead's (alpha-2 and normalized state, lower-case). A lead known
    to be outside the US is never labelled a US state. `assumed_place` is the bridge's own
    (country, state) numbers, used only for a US lead whose row names no state when the bridge
    says every lead is in that place."""
    if options is None:
        return {}
    if not options:
        return _options((), None)
    place = _GEOLOCATE
    if country == "us":
        number = LDU_STATE_NUMBERS.get(state or "")
        if number is not None:
            place = (1, number)
        elif state is None and assumed_place is not None:
            place = assumed_place
    return _options(tuple(options), place)


@functools.lru_cache(maxsize=64)
def _options(options: tuple[str, ...], place: tuple[int, int] | None) -> dict[str, object]:
    """One dict per distinct answer, shared by every event that carries it (nothing mutates
    a payload once built)."""
    fields: dict[str, object] = {"data_processing_options": list(options)}
    if place is not None:
        fields["data_processing_options_country"] = place[0]
        fields["data_processing_options_state"] = place[1]
    return fields
