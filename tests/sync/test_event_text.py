"""A planned event's fingerprint and its request text, worked out without its payload dict: the
same as the payload gives, whatever the event holds (bench/RESULTS.md, "Eighth round").

The fingerprint is kept in ledgers and compared with later passes' (a failed event is retried
once its row changes), so it may never change; the text is what Meta receives."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sheet_bridge.meta.client import encode_events, join_encoded
from sheet_bridge.meta.payload import dumps, processing_options
from sheet_bridge.sync.plan import PlannedEvent, payload_fingerprint
from sheet_bridge.sync.send import Payloads
from tests.sync.test_plan import CONFIG

STAGES = CONFIG.stage_map.stages
# Text as a sheet may hold it: quotes, backslashes, control characters, accents, emoji.
text = st.text(st.characters(codec="utf-8"), max_size=12)
user_data = st.dictionaries(
    st.sampled_from(["em", "ph", "fn", "ct", "country", "external_id", "lead_id"]),
    st.one_of(text, st.lists(text, max_size=2), st.integers(0, 10**18)),
    max_size=5,
)
values = st.one_of(
    st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**6), 10**6)
)
# Limited Data Use as configured (none, "not LDU", LDU) and the lead's place.
options = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from([(), ("LDU",)]),
        st.sampled_from([("us", "ca"), ("us", None), ("de", None), (None, None)]),
    ),
)


def planned(
    ud: dict[str, object],
    *,
    name: str = "Lead",
    event_id: str = "sb.0",
    status: str = "New",
    source: str = "Google Sheets",
    value: float | None = None,
    currency: str | None = None,
    option: tuple[tuple[str, ...], tuple[str | None, str | None]] | None = None,
    when: int = 1_795_934_077,
) -> PlannedEvent:
    ldu = None if option is None else processing_options(option[0], *option[1])
    return PlannedEvent(
        2,
        "k",
        STAGES[0],
        name,
        event_id,
        when,
        ud,
        status,
        "system_generated",
        source,
        value,
        currency,
        processing_options=ldu or {},
    )


@given(
    ud=user_data,
    name=text,
    event_id=text,
    status=text,
    source=text,
    value=values,
    currency=st.one_of(st.none(), st.just(""), text),
    option=options,
    when=st.integers(0, 2**40),
)
@example(ud={"em": "x"}, name="L", event_id="1", status="New", source="s", value=100,
         currency="USD", option=None, when=1)  # fmt: skip
@example(ud={"em": "x"}, name="L", event_id="1", status="New", source="s", value=100.0,
         currency="USD", option=None, when=1)  # fmt: skip
def test_an_events_fingerprint_and_text_are_its_payloads(**kw: Any) -> None:
    event = planned(kw.pop("ud"), **kw)
    payload = event.payload
    assert event.fingerprint == payload_fingerprint(payload)
    text = repr(sorted(payload.items()))  # the formula ledgers hold (test_plan.py too)
    assert event.fingerprint == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert event.json == dumps(payload)
    assert json_of([event, event]) == encode_events([payload, payload])


def json_of(events: list[PlannedEvent]) -> bytes:
    return join_encoded(e.json for e in events)


def test_equal_amounts_of_other_types_keep_their_own_text() -> None:
    """100 and 100.0 are equal (one key for a cache) but not the same text."""
    whole = planned({"em": "x"}, value=100, currency="USD")
    decimal = planned({"em": "x"}, value=100.0, currency="USD")
    assert '"value":100,' in whole.json and '"value":100.0,' in decimal.json
    assert whole.fingerprint != decimal.fingerprint


def test_a_lead_whose_events_share_user_data_has_each_events_own_text() -> None:
    """The user_data text is shared by the events planned one after another for one lead;
    another lead's dict, even an equal one, and the same dict again later, read as they are."""
    first = {"em": "a"}
    events = [
        planned(first, name="Lead"),
        planned(first, name="MQL"),
        planned({"em": "b"}, name="Lead"),
        planned(dict(first), name="SQL"),
        planned(first, name="Customer"),
    ]
    assert [e.json for e in events] == [dumps(e.payload) for e in events]
    assert json_of(events) == encode_events([e.payload for e in events])


def test_a_value_json_refuses_is_refused_by_the_text_too() -> None:
    """JSON has no NaN: httpx would refuse to encode it, and so does the text."""
    for bad in (math.nan, math.inf):
        event = planned({"em": "x"}, value=bad)
        with pytest.raises(ValueError):
            dumps(event.payload)
        with pytest.raises(ValueError):
            event.json  # noqa: B018


def test_payloads_are_built_only_when_read() -> None:
    built: list[str] = []

    class Counted(PlannedEvent):
        __slots__ = ()

        @property
        def payload(self) -> dict[str, object]:
            built.append(self.event_id)
            return PlannedEvent.payload.fget(self)  # type: ignore[attr-defined,no-any-return]

    events = [Counted(2, "k", STAGES[0], "Lead", f"id{i}", 1, {}, "New", "s", "g")
              for i in range(4)]  # fmt: skip
    built.clear()  # a fingerprint with processing options builds one; none here
    payloads = Payloads(events)
    assert len(payloads) == 4 and built == []
    assert payloads[1]["event_id"] == "id1" and built == ["id1"]
    assert [p["event_id"] for p in payloads[2:]] == ["id2", "id3"]
    assert built == ["id1", "id2", "id3"]
