"""A planned stage change → the Conversions API event dict Meta expects (docs/meta-errors.md,
docs/meta-events.md)."""

from __future__ import annotations

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
