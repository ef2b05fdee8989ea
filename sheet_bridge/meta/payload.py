"""A planned stage change → the Conversions API event dict Meta expects (docs/meta-errors.md,
docs/meta-events.md)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any


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
    custom_data: dict[str, Any] = {
        "lead_status": lead_status,
        "event_source": "crm",
        "lead_event_source": lead_event_source,
    }
    if value is not None:
        custom_data["value"] = value
        if currency:
            custom_data["currency"] = currency
    event: dict[str, Any] = {
        "event_name": event_name,
        "event_time": int(event_time),
        "event_id": event_id,
        "action_source": action_source,
        # Not copied: a lead's events share one user_data dict (a 100,000-lead first pass
        # holds ~190,000 events in memory); nothing mutates a payload once built.
        "user_data": user_data,
        "custom_data": custom_data,
    }
    if processing_options:
        event.update(processing_options)
    return event


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
