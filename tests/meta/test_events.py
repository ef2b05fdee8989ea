"""Meta's event vocabulary: the 17 standard names, name classification, and the time windows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sheet_bridge.meta.events import (
    ACTION_SOURCES,
    SAFETY_MARGIN,
    STANDARD_EVENTS,
    classify_event_name,
    nearest_standard_event,
    planning_window,
    send_window,
)

# https://developers.facebook.com/docs/meta-pixel/reference (docs/meta-events.md), typed out here
# rather than imported so that a name added to or dropped from the module is caught.
META_STANDARD_EVENTS = {
    "AddPaymentInfo",
    "AddToCart",
    "AddToWishlist",
    "CompleteRegistration",
    "Contact",
    "CustomizeProduct",
    "Donate",
    "FindLocation",
    "InitiateCheckout",
    "Lead",
    "Purchase",
    "Schedule",
    "Search",
    "StartTrial",
    "SubmitApplication",
    "Subscribe",
    "ViewContent",
}


def test_standard_events_are_exactly_metas_17_names() -> None:
    assert len(STANDARD_EVENTS) == 17
    assert set(STANDARD_EVENTS) == META_STANDARD_EVENTS


def test_qualified_lead_is_not_a_standard_event() -> None:
    # docs/meta-events.md: the seed is wrong; Meta documents it only for Business Messaging.
    assert "QualifiedLead" not in STANDARD_EVENTS
    assert classify_event_name("QualifiedLead").verdict == "refused"


def test_action_sources_are_metas_nine() -> None:
    assert set(ACTION_SOURCES) == {
        "email",
        "website",
        "app",
        "phone_call",
        "chat",
        "physical_store",
        "system_generated",
        "business_messaging",
        "other",
    }


@pytest.mark.parametrize("name", sorted(META_STANDARD_EVENTS))
def test_every_standard_name_is_classified_standard_and_optimisable(name: str) -> None:
    check = classify_event_name(name)
    assert check.verdict == "standard"
    assert check.optimisable
    assert check.suggestion is None
    assert check.name == name


@pytest.mark.parametrize("custom", [False, True])
def test_standard_name_stays_standard_when_also_marked_custom(custom: bool) -> None:
    assert classify_event_name("Purchase", custom=custom).verdict == "standard"


def test_free_form_crm_stage_marked_custom_is_a_deliberate_custom_event() -> None:
    check = classify_event_name("QualifiedLead", custom=True)
    assert check.verdict == "custom"
    assert not check.optimisable
    assert "custom" in check.message
    assert "custom conversion" in check.message


def test_custom_name_without_any_near_standard_name_has_no_suggestion() -> None:
    check = classify_event_name("Converted", custom=True)
    assert check.verdict == "custom"
    assert check.suggestion is None


def test_unknown_name_without_custom_flag_is_refused_and_says_how_to_opt_in() -> None:
    check = classify_event_name("Converted")
    assert check.verdict == "refused"
    assert not check.optimisable
    assert "custom = true" in check.message
    assert "17 standard events" in check.message


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("INITIAL_LEAD", "Lead"),
        ("schedule", "Schedule"),
        ("Start_Trial", "StartTrial"),
        ("start trial", "StartTrial"),
        ("PURCHASE", "Purchase"),
        ("add-to-cart", "AddToCart"),
        ("QUALIFIED_LEAD", "Lead"),  # containment: the longest standard name inside it
        ("Subscribed", "Subscribe"),
    ],
)
def test_refused_name_suggests_the_nearest_standard_name(name: str, suggestion: str) -> None:
    check = classify_event_name(name)
    assert check.verdict == "refused"
    assert check.suggestion == suggestion
    assert repr(suggestion) in check.message
    assert nearest_standard_event(name) == suggestion


def test_containment_suggests_the_standard_name_found_inside_a_vendor_label() -> None:
    assert nearest_standard_event("MyAddToCartClick") == "AddToCart"
    # "SubmitApplicationLead" holds both Lead and SubmitApplication: the longer one wins.
    assert nearest_standard_event("SubmitApplicationLead") == "SubmitApplication"


@pytest.mark.parametrize("name", ["lead", "LEAD", "Start_Trial", "schedule", "view content"])
def test_case_or_separator_variant_is_refused_even_when_marked_custom(name: str) -> None:
    # Meta's names are case-sensitive: `lead` would silently be a custom event.
    check = classify_event_name(name, custom=True)
    assert check.verdict == "refused"
    assert check.suggestion is not None
    assert "case-sensitive" in check.message
    assert repr(check.suggestion) in check.message


@pytest.mark.parametrize("name", ["", "___", "   "])
def test_empty_or_separator_only_name_is_refused_without_suggestion(name: str) -> None:
    check = classify_event_name(name)
    assert check.verdict == "refused"
    assert check.suggestion is None


def test_send_and_planning_windows_are_seven_days_less_ten_minutes() -> None:
    assert timedelta(minutes=10) == SAFETY_MARGIN
    for source in ACTION_SOURCES - {"physical_store"}:
        assert send_window(source) == timedelta(days=7), source
        assert planning_window(source) == timedelta(days=7) - timedelta(minutes=10), source


def test_physical_store_window_is_62_days_less_ten_minutes() -> None:
    assert send_window("physical_store") == timedelta(days=62)
    assert planning_window("physical_store") == timedelta(days=62, minutes=-10)


def test_unknown_action_source_gets_the_strict_seven_day_window() -> None:
    assert send_window("crm") == timedelta(days=7)
