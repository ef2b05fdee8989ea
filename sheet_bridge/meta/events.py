"""Meta's event vocabulary: the 17 standard names, action sources, and the time windows."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

# https://developers.facebook.com/docs/meta-pixel/reference (docs/meta-events.md). Case-sensitive.
# QualifiedLead is deliberately absent: Meta documents it only for Business Messaging.
STANDARD_EVENTS: frozenset[str] = frozenset(
    {
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
)

# docs/meta-errors.md.
ACTION_SOURCES: frozenset[str] = frozenset(
    {
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
)

# docs/event-times.md: 7 days for everything but physical_store (62 days).
STANDARD_WINDOW = timedelta(days=7)
PHYSICAL_STORE_WINDOW = timedelta(days=62)
# We refuse a little before Meta does, so an event planned now is still inside when it lands.
SAFETY_MARGIN = timedelta(minutes=10)


def send_window(action_source: str) -> timedelta:
    """How old an event may be when Meta receives it."""
    return PHYSICAL_STORE_WINDOW if action_source == "physical_store" else STANDARD_WINDOW


def planning_window(action_source: str) -> timedelta:
    """How old an event may be when we plan it: Meta's window less our safety margin."""
    return send_window(action_source) - SAFETY_MARGIN


Verdict = Literal["standard", "custom", "refused"]


@dataclass(frozen=True)
class EventNameCheck:
    """What Meta will make of a configured event name."""

    name: str
    verdict: Verdict
    suggestion: str | None
    message: str

    @property
    def optimisable(self) -> bool:
        return self.verdict == "standard"


def _fold(name: str) -> str:
    return re.sub(r"[\s_\-.]+", "", name).casefold()


_FOLDED = {_fold(n): n for n in STANDARD_EVENTS}


def nearest_standard_event(name: str) -> str | None:
    """The standard name a person most likely meant: same letters ignoring case and separators,
    else the longest standard name the text contains (INITIAL_LEAD → Lead), else the closest."""
    folded = _fold(name)
    if not folded:
        return None
    if folded in _FOLDED:
        return _FOLDED[folded]
    contained = [std for key, std in _FOLDED.items() if key in folded]
    if contained:
        return max(contained, key=len)
    close = difflib.get_close_matches(folded, list(_FOLDED), n=1, cutoff=0.6)
    return _FOLDED[close[0]] if close else None


def classify_event_name(name: str, custom: bool = False) -> EventNameCheck:
    """Standard, custom by deliberate choice (`custom = true`), or refused with a suggestion.

    A name that differs from a standard one only in case or separators is refused even when
    marked custom: Meta's names are case-sensitive and `lead` would silently be a custom event.
    """
    if name in STANDARD_EVENTS:
        return EventNameCheck(name, "standard", None, f"{name} is a Meta standard event")
    suggestion = nearest_standard_event(name)
    if suggestion is not None and _fold(suggestion) == _fold(name):
        return EventNameCheck(
            name,
            "refused",
            suggestion,
            f"{name!r} is not a Meta event name (names are case-sensitive); write {suggestion!r}",
        )
    if custom:
        return EventNameCheck(
            name,
            "custom",
            suggestion,
            f"{name} is a custom event (custom = true): Meta records it but cannot optimise on it "
            "as a standard event; build a custom conversion on it to use it in ad sets",
        )
    hint = f" Did you mean {suggestion!r}?" if suggestion else ""
    return EventNameCheck(
        name,
        "refused",
        suggestion,
        f"{name!r} is not one of Meta's 17 standard events: Meta would accept it and learn "
        f"nothing from it for a standard-event campaign.{hint} If a free-form CRM stage name is "
        "what you want, set custom = true on the stage.",
    )
