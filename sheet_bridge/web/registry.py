"""The bridges one backend serves, by (spreadsheet id, tab), and who may use which."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sheet_bridge.sync.run import Bridge
from sheet_bridge.web.auth import Authenticator, AuthError, Caller, bearer_token


@dataclass(frozen=True)
class Access:
    """What one authenticated caller may use: the bridges its credentials open."""

    callers: Mapping[tuple[str, str], Caller]
    everything: bool  # its credentials open every bridge this backend serves


class BridgeRegistry:
    """Bridges by (spreadsheet id, tab), each with its authenticator."""

    def __init__(self, bridges: list[Bridge], authenticators: list[Authenticator]) -> None:
        self._bridges = {_key(b): b for b in bridges}
        self._auth = {_key(b): a for b, a in zip(bridges, authenticators, strict=True)}

    def find(self, spreadsheet_id: str, tab: str | None) -> Bridge | None:
        if tab is not None:
            return self._bridges.get((spreadsheet_id, tab))
        matches = [b for (sid, _), b in self._bridges.items() if sid == spreadsheet_id]
        return matches[0] if len(matches) == 1 else None

    def authenticate(self, header: str | None) -> Access:
        """The bridges the Authorization header opens, decided from the header alone (before
        any body is read). AuthError when it opens none: 503 when Google's certificates are
        out of reach, else 403 when it is a real identity that no bridge allows, else 401."""
        token = bearer_token(header)
        callers: dict[tuple[str, str], Caller] = {}
        refusals: list[AuthError] = []
        seen: dict[tuple[Any, ...], Caller | AuthError] = {}
        for key, auth in self._auth.items():
            same = (auth.server, auth.secret)  # bridges sharing settings are checked once
            if same not in seen:
                try:
                    seen[same] = auth.authenticate(token)
                except AuthError as exc:
                    seen[same] = exc
            outcome = seen[same]
            if isinstance(outcome, Caller):
                callers[key] = outcome
            else:
                refusals.append(outcome)
        if not callers:
            raise max(refusals, key=lambda e: {503: 3, 403: 2}.get(e.status, 1))
        return Access(callers, everything=len(callers) == len(self._auth))

    def all(self) -> list[Bridge]:
        return list(self._bridges.values())


def _key(bridge: Bridge) -> tuple[str, str]:
    return bridge.config.sheets.spreadsheet_id, bridge.config.sheets.tab
