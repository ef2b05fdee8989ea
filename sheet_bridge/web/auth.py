"""Who may call /api: a Google ID token from Apps Script, or the shared secret (Bearer)."""

from __future__ import annotations

import base64
import binascii
import hmac
import http.client
import json
import logging
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sheet_bridge.config import ServerConfig, address_key

log = logging.getLogger(__name__)

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
# A shared secret shorter than this can be guessed; token_urlsafe(32) gives 43 characters.
MIN_SECRET_CHARS = 32
MAKE_A_SECRET = 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"'
# Google's ID tokens are about 1 KB; anything far longer is not one and is not decoded.
MAX_TOKEN_CHARS = 8192
CLOCK_SKEW_SECONDS = 10
OTHER_AUDIENCE = "for another audience"
# An audience is shown back to its caller only when it looks like one (an OAuth client ID or
# a URL), never as arbitrary text.
_SHOWN_AUDIENCE = re.compile(r"[\w.:/@-]{1,200}")


class AuthError(Exception):
    """401 (no or bad credentials), 403 (a valid identity that is not allowed), or 503
    (Google's certificates cannot be had, so no ID token can be checked right now)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Caller:
    how: str  # "secret" | "id_token"
    email: str | None = None


class CertificatesUnavailable(Exception):
    """Google's signing certificates could not be fetched (or failed moments ago)."""


# Google's certificate documents are a few KB; a reply far longer is not one.
MAX_CERTIFICATES_BYTES = 1 << 20


@dataclass(frozen=True)
class CertificatesResponse:
    """What google-auth's id_token reads of a transport response: status, headers, data."""

    status: int
    headers: Mapping[str, str]
    data: bytes


def fetch_within(url: str, deadline: float, clock: Callable[[], float] = time.monotonic) -> Any:
    """GET `url` and read the whole reply before the monotonic `deadline`: every connect and
    every read waits at most the time left, so a server that trickles a byte at a time is
    given up on at the deadline (a per-read timeout alone never fires while bytes arrive).
    Goes direct, without a proxy. Raises TimeoutError or OSError."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url}")

    def left() -> float:
        remaining = deadline - clock()
        if remaining <= 0:
            raise TimeoutError(f"no complete answer from {parts.hostname} in time")
        return remaining

    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=left(), context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=left())
    try:
        connection.connect()
        sock = connection.sock  # kept: http.client lets go of it once the reply will close
        assert sock is not None
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else "") or "/")
        sock.settimeout(left())
        response = connection.getresponse()
        chunks: list[bytes] = []
        size = 0
        while True:
            sock.settimeout(left())
            chunk = response.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_CERTIFICATES_BYTES:
                raise ValueError(f"more than {MAX_CERTIFICATES_BYTES} bytes")
            chunks.append(chunk)
        return CertificatesResponse(response.status, dict(response.getheaders()), b"".join(chunks))
    finally:
        connection.close()


def certificates_problem(body: bytes) -> str | None:
    """Why `body` is not a set of Google's signing keys (v1: {kid: PEM certificate}, v3: a
    JWK set {"keys": [...]}); None when it is one. A reply that is not is never cached."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "the reply is not JSON"
    if not isinstance(document, dict) or not document:
        return "the reply is not a JSON object of certificates"
    keys = document.get("keys")
    if isinstance(keys, list):
        if keys and all(isinstance(k, dict) and isinstance(k.get("kid"), str) for k in keys):
            return None
        return "the reply's JWK set has no usable key"
    if all(isinstance(v, str) and "BEGIN CERTIFICATE" in v for v in document.values()):
        return None
    return "the reply's values are not PEM certificates"


Fetch = Callable[[str, float], Any]


class GoogleCertificates:
    """google-auth's transport Request for the certificates URL, made safe to call from the
    request path: one total deadline for the whole fetch (connect, headers and body; google-
    auth's own timeout is 120 s per read), one fetch per URL at a time, a reply kept an hour
    only once it is a valid set of certificates, a failure kept `failure_ttl` seconds (so an
    outage costs one fetch, not one per request), and every failure logged."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        ttl: float = 3600.0,
        failure_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        fetch: Fetch | None = None,
    ) -> None:
        self.timeout = timeout
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._clock = clock
        self._fetch: Fetch = fetch or (lambda url, deadline: fetch_within(url, deadline))
        self._cache: dict[str, tuple[float, Any]] = {}  # url -> (until, response or None)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, url: str, method: str = "GET", **kw: Any) -> Any:
        if method != "GET":
            raise CertificatesUnavailable(f"{method} {url}: only certificate fetches are made")
        with self._guard:
            lock = self._locks.setdefault(url, threading.Lock())
        with lock:  # concurrent first requests wait for one fetch instead of each making one
            hit = self._cache.get(url)
            if hit is not None and hit[0] > self._clock():
                if hit[1] is None:
                    raise CertificatesUnavailable(url)
                return hit[1]
            failure: str | None
            try:
                response = self._fetch(url, time.monotonic() + self.timeout)
                failure = (
                    f"HTTP {response.status}"
                    if response.status != 200
                    else certificates_problem(response.data)
                )
            except Exception as exc:  # timeout, DNS, refused, too long: all the same to the caller
                response, failure = None, f"{type(exc).__name__}: {exc}"
            if failure is not None:
                log.warning(
                    "cannot fetch Google's ID-token certificates from %s (%s); ID tokens are "
                    "refused for the next %.0f s",
                    url,
                    failure,
                    self.failure_ttl,
                )
                self._cache[url] = (self._clock() + self.failure_ttl, None)
                raise CertificatesUnavailable(url)
            self._cache[url] = (self._clock() + self.ttl, response)
            return response


TokenVerifier = Callable[[str, str, str], Mapping[str, Any]]


def google_verifier(certificates: GoogleCertificates | None = None) -> TokenVerifier:
    """verify(token, audience, certs_url) with google.oauth2.id_token.verify_token; raises
    CertificatesUnavailable when the certificates cannot be had."""
    from google.oauth2 import id_token

    request = certificates if certificates is not None else GoogleCertificates()

    def verify(token: str, audience: str, certs_url: str) -> Mapping[str, Any]:
        claims: Mapping[str, Any] = id_token.verify_token(
            token,
            request,  # type: ignore[arg-type]  # duck-typed transport.Request
            audience=audience,
            certs_url=certs_url,
            clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
        )
        return claims

    return verify


def _segment(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def implausible_id_token(token: str, audience: str, now: float) -> str | None:
    """Why `token` cannot be a valid Google ID token for `audience`, read without verifying
    (so without fetching certificates); None when it could be one. Forged tokens still pass
    this; the signature check that follows refuses them."""
    if len(token) > MAX_TOKEN_CHARS:
        return "too long"
    parts = token.split(".")
    if len(parts) != 3:
        return "not a JWT"
    try:
        header, claims = _segment(parts[0]), _segment(parts[1])
    except (ValueError, binascii.Error):  # bad base64, bad UTF-8, bad JSON
        return "not a JWT"
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return "not a JWT"
    if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
        return "not signed the way Google signs"
    if claims.get("iss") not in GOOGLE_ISSUERS:
        return "not issued by Google"
    if claims.get("aud") != audience:
        return OTHER_AUDIENCE
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return "without an expiry"
    if exp < now - CLOCK_SKEW_SECONDS:
        return "expired"
    return None


def other_audience_words(token: str) -> str:
    """The 401 for a Google-shaped token made for another audience: the audience it carries,
    so whoever runs the backend can set id_token_audience to it (when it is their script)."""
    aud = _segment(token.split(".")[1]).get("aud")
    shown = aud if isinstance(aud, str) and _SHOWN_AUDIENCE.fullmatch(aud) else None
    if shown is None:
        return "the ID token is for another audience than this backend's id_token_audience"
    return (
        f"the ID token is for the audience {shown!r}, not this backend's id_token_audience; if "
        f"it comes from your add-on's script, set [server] id_token_audience = {shown!r}"
    )


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer …` header; AuthError 401 otherwise."""
    if not header or not header.startswith("Bearer ") or not header[7:].strip():
        raise AuthError(401, "missing credentials: send Authorization: Bearer <token>")
    return header[7:].strip()


def setup_problem(server: ServerConfig, environ: Mapping[str, str]) -> str | None:
    """Why a backend with these [server] settings must not start; None when it may."""
    secret = server.shared_secret(environ)
    if secret is not None and len(secret) < MIN_SECRET_CHARS:
        return (
            f"the shared secret in {server.shared_secret_env} has {len(secret)} characters; it "
            f"needs at least {MIN_SECRET_CHARS}: make one with {MAKE_A_SECRET}"
        )
    if server.id_token_audience and not (server.allowed_emails or server.allowed_domain):
        return (
            "[server] id_token_audience without allowed_emails or allowed_domain would let any "
            "Google account in: set allowed_domain = 'yourcompany.com' or "
            "allowed_emails = ['you@yourcompany.com']"
        )
    if secret is None and not server.id_token_audience:
        if server.shared_secret_env:
            return (
                f"nobody could call this backend: the variable {server.shared_secret_env} is "
                f"empty; set it to a secret made with {MAKE_A_SECRET}"
            )
        return "nobody could call this backend: set [server] shared_secret_env or id_token_audience"
    return None


class Authenticator:
    """Checks a bearer token against one bridge's [server] settings."""

    def __init__(
        self,
        server: ServerConfig,
        environ: Mapping[str, str],
        verifier: TokenVerifier | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        self.secret = server.shared_secret(environ)
        self.verifier = verifier
        self.clock = clock
        if server.id_token_audience and self.verifier is None:
            self.verifier = google_verifier()

    def authenticate(self, token: str) -> Caller:
        if self.secret is not None and hmac.compare_digest(
            token.encode("utf-8", "replace"), self.secret.encode("utf-8")
        ):
            return Caller("secret")
        if self.server.id_token_audience and self.verifier is not None:
            return self._id_token(token, self.server.id_token_audience)
        raise AuthError(401, "invalid credentials")

    def _id_token(self, token: str, audience: str) -> Caller:
        assert self.verifier is not None
        reason = implausible_id_token(token, audience, self.clock())
        if reason == OTHER_AUDIENCE:
            raise AuthError(401, other_audience_words(token))
        if reason is not None:
            # Refused without a network call: garbage must not make the server fetch anything.
            raise AuthError(401, "invalid or expired ID token")
        try:
            claims = self.verifier(token, audience, self.server.id_token_certs_url)
        except CertificatesUnavailable:
            raise AuthError(
                503,
                "Google sign-in cannot be checked right now (Google's certificates could not "
                "be fetched); try again in a minute",
            ) from None
        except Exception:  # expired, forged, wrong audience: all the same to the caller
            raise AuthError(401, "invalid or expired ID token") from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise AuthError(401, "ID token not issued by Google")
        email = claims.get("email")
        # Only a JSON true: a missing claim or the string "true" is not Google's word.
        if not isinstance(email, str) or not email or claims.get("email_verified") is not True:
            raise AuthError(
                403,
                "the ID token carries no verified e-mail (add the openid and "
                "userinfo.email scopes to the add-on)",
            )
        address = address_key(email)  # never casefold(): "opſ@" is not "ops@"
        if address in {address_key(e) for e in self.server.allowed_emails}:
            return Caller("id_token", email)
        domain = self.server.allowed_domain
        # `hd` is Google's statement that the account belongs to that Workspace domain; an
        # address ending in the domain alone is not (consumer accounts can carry any address).
        hosted = claims.get("hd")
        in_domain = bool(domain) and address.endswith(f"@{domain}")
        if in_domain and isinstance(hosted, str) and address_key(hosted) == domain:
            return Caller("id_token", email)
        raise AuthError(403, "this Google account is not allowed to use this bridge")
