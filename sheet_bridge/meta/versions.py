"""Graph API versions and when Meta stops serving them.

Source: https://developers.facebook.com/docs/graph-api/changelog/versions/ (the table "Graph
API: Version, Release Date, Expiration Date", read 2026-12-03). A version past its expiration
date is answered with an error for every request (docs/meta-errors.md: a request-level refusal); a
version Meta has not yet given a date is supported at least two years from its release
(developers.facebook.com/documentation/ads-commerce/conversions-api/using-the-api). Update the table
when Meta publishes a new version.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

# version → expiration date (None: not yet announced)
EXPIRES: dict[str, date | None] = {
    "v16.0": date(2025, 5, 14),
    "v17.0": date(2025, 9, 12),
    "v18.0": date(2026, 1, 26),
    "v19.0": date(2026, 5, 21),
    "v20.0": date(2026, 9, 24),
    "v21.0": date(2027, 1, 21),
    "v22.0": date(2027, 5, 20),
    "v23.0": date(2027, 10, 8),
    "v24.0": date(2028, 2, 18),
    "v25.0": date(2028, 7, 29),
    "v26.0": None,
}
LATEST_KNOWN = "v26.0"
# How long before the expiration date to start warning: time to test and deploy an upgrade.
WARN_BEFORE = timedelta(days=90)


def version_problem(version: str, now: datetime) -> tuple[str, str] | None:
    """("error" | "warning", words) when `version` is expired, expires within WARN_BEFORE, or
    is older than every version in the table; None when it is fine or newer than the table."""
    version = version.strip()
    today = now.date()
    if version in EXPIRES:
        expires = EXPIRES[version]
        if expires is None:
            return None
        if expires <= today:
            return (
                "error",
                f"Graph API {version} expired on {expires:%Y-%m-%d}: Meta refuses every "
                f'request made with it. Set [meta] api_version = "{LATEST_KNOWN}"',
            )
        if expires - today <= WARN_BEFORE:
            return (
                "warning",
                f"Graph API {version} expires on {expires:%Y-%m-%d} ({(expires - today).days} "
                f'days); set [meta] api_version = "{LATEST_KNOWN}" before then',
            )
        return None
    number = _number(version)
    oldest = min(n for n in (_number(v) for v in EXPIRES) if n is not None)
    if number is not None and number < oldest:
        return (
            "error",
            f"Graph API {version} expired long ago: Meta refuses every request made with it. "
            f'Set [meta] api_version = "{LATEST_KNOWN}"',
        )
    return None


def _number(version: str) -> float | None:
    try:
        return float(version.removeprefix("v"))
    except ValueError:
        return None
