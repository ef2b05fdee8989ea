"""[meta] data_processing_options (Limited Data Use) reach Meta on every event, exactly as Meta
documents them (developers.facebook.com/docs/marketing-apis/data-processing-options). Each
lead's own place: tests/meta/test_values.py."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import World, lead_row

MakeWorld = Callable[..., World]
KEYS = (
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
)


@pytest.mark.parametrize(
    ("meta", "sent"),
    [
        ({}, {}),  # not configured: nothing sent, Meta's default
        ({"data_processing_options": []}, {"data_processing_options": []}),  # explicitly not LDU
        (
            {"data_processing_options": ["LDU"]},  # LDU, Meta geolocates
            {
                "data_processing_options": ["LDU"],
                "data_processing_options_country": 0,
                "data_processing_options_state": 0,
            },
        ),
        (
            {  # every lead is in the US, in California: the config says so
                "data_processing_options": ["LDU"],
                "data_processing_options_country": 1,
                "data_processing_options_state": 1000,
                "default_country": "US",
                "assume_country": True,
            },
            {
                "data_processing_options": ["LDU"],
                "data_processing_options_country": 1,
                "data_processing_options_state": 1000,
            },
        ),
    ],
    ids=["unset", "not-ldu", "ldu-geolocated", "ldu-california"],
)
def test_every_event_meta_receives_carries_the_configured_processing_options(
    meta: dict[str, Any], sent: dict[str, Any], make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world(
        [lead_row(1, "SQL", now=world_now), lead_row(2, "New", now=world_now)], meta=meta
    )

    result = world.bridge().sync()

    events = world.meta_events()
    assert result.counts["sent"] == 2 and len(events) == 4  # the fake checked every field
    for event in events:
        assert {k: event[k] for k in KEYS if k in event} == sent
