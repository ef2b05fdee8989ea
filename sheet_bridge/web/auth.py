"""Who may call /api: a Google ID token from Apps Script, or the shared secret (Bearer)."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sheet_bridge.config import ServerConfig

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")


class AuthError(Exception):
    """401 (no or bad credentials) or 403 (a valid identity that is not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Caller:
    how: str  # "secret" | "id_token"
    email: str | None = None


class _CachingRequest:
    """google-auth's transport Request, with Google's signing certificates cached an hour
    (verify_token fetches them on every call otherwise)."""

    def __init__(self, ttl: float = 3600.0) -> None:
        from google.auth.transport.requests import Request

        self._inner = Request()
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str, method: str = "GET", **kw: Any) -> Any:
        if method != "GET":
            return self._inner(url, method=method, **kw)
        with self._lock:
            hit = self._cache.get(url)
            if hit and hit[0] > time.monotonic():
                return hit[1]
        response = self._inner(url, method=method, **kw)
        if response.status == 200:
            with self._lock:
                self._cache[url] = (time.monotonic() + self._ttl, response)
        return response


TokenVerifier = Callable[[str, str, str], Mapping[str, Any]]


def google_verifier() -> TokenVerifier:
    """verify(token, audience, certs_url) with google.oauth2.id_token.verify_token."""
    from google.oauth2 import id_token

    request = _CachingRequest()

    def verify(token: str, audience: str, certs_url: str) -> Mapping[str, Any]:
        claims: Mapping[str, Any] = id_token.verify_token(
            token,
            request,  # type: ignore[arg-type]  # duck-typed transport.Request
            audience=audience,
            certs_url=certs_url,
            clock_skew_in_seconds=10,
        )
        return claims

    return verify


class Authenticator:
    """Checks the Authorization header against one bridge's [server] settings."""

    def __init__(
        self,
        server: ServerConfig,
        environ: Mapping[str, str],
        verifier: TokenVerifier | None = None,
    ) -> None:
        self.server = server
        self.secret = server.shared_secret(environ)
        self.verifier = verifier
        if server.id_token_audience and self.verifier is None:
            self.verifier = google_verifier()

    @property
    def configured(self) -> bool:
        return bool(self.secret or self.server.id_token_audience)

    def authenticate(self, header: str | None) -> Caller:
        if not header or not header.startswith("Bearer ") or not header[7:].strip():
            raise AuthError(401, "missing credentials: send Authorization: Bearer <token>")
        token = header[7:].strip()
        if self.secret is not None and hmac.compare_digest(
            token.encode("utf-8", "replace"), self.secret.encode("utf-8")
        ):
            return Caller("secret")
        if self.server.id_token_audience and self.verifier is not None and token.count(".") == 2:
            return self._id_token(token)
        raise AuthError(401, "invalid credentials")

    def _id_token(self, token: str) -> Caller:
        assert self.verifier is not None and self.server.id_token_audience
        try:
            claims = self.verifier(
                token, self.server.id_token_audience, self.server.id_token_certs_url
            )
        except Exception:  # expired, forged, wrong audience: all the same to the caller
            raise AuthError(401, "invalid or expired ID token") from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise AuthError(401, "ID token not issued by Google")
        email = str(claims.get("email") or "")
        if not email or claims.get("email_verified") in (False, "false"):
            raise AuthError(
                403,
                "the ID token carries no verified e-mail (add the openid and "
                "userinfo.email scopes to the add-on)",
            )
        allowed = {e.casefold() for e in self.server.allowed_emails}
        domain = (self.server.allowed_domain or "").casefold()
        if not allowed and not domain:
            return Caller("id_token", email)
        if email.casefold() in allowed or (domain and email.casefold().endswith("@" + domain)):
            return Caller("id_token", email)
        raise AuthError(403, "this Google account is not allowed to use this bridge")
