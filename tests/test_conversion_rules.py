"""The custom-conversion advice selects exactly the events sent for its stage (docs/meta-events.md):
checked against what the fake Meta received, not against our own reading of the config."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sheet_bridge.checks import check_stages, conversion_rule
from sheet_bridge.config import status_key
from tests.conftest import World, lead_row

MakeWorld = Callable[..., World]


def test_each_stage_rule_selects_exactly_that_stages_events_at_meta(
    make_world: MakeWorld, world_now: datetime
) -> None:
    statuses = ["New", "MQL", "SQL", "Opportunity", "Customer", "Won", "Disqualified"]
    world = make_world([lead_row(i, s, now=world_now) for i, s in enumerate(statuses, 1)])
    world.bridge().sync()
    stages = [s for s in world.config.stage_map.stages if s.send]
    events = world.meta_events()
    assert len(events) == 1 + 2 + 3 + 4 + 5 + 5 + 1
    for event in events:
        rule = f"event = {event['event_name']}"
        [stage] = [s for s in stages if conversion_rule(s) == rule]
        # The event's lead_status is one of its own stage's statuses, so a report or a rule
        # on lead_status agrees with the event name.
        status = event["custom_data"]["lead_status"]
        assert status_key(status) in {status_key(x) for x in stage.statuses}, (event, stage)
    # The advice sheet-bridge used to give, "Lead where lead_status = MQL", selects nothing.
    assert not [
        e
        for e in events
        if e["event_name"] == "Lead" and status_key(e["custom_data"]["lead_status"]) == "mql"
    ]


def test_check_advises_the_stage_event_rule_for_a_custom_stage(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([])
    from sheet_bridge.checks import CheckReport

    report = CheckReport()
    check_stages(world.config, report)
    texts = [f.text for f in report.findings]
    assert any(
        'create "MQL" in Events Manager with the rule event = QualifiedLead' in t for t in texts
    )
    assert not any("lead_status =" in t for t in texts)
