"""Google-style ID-token material for tests: RSA keys and the x509 certificates Google's v1
certs endpoint serves, made locally so nothing reaches Google."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt
from google.auth import jwt as google_jwt

AUDIENCE = "1234-sheetbridge.apps.googleusercontent.com"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def certificate_pem(key: rsa.RSAPrivateKey) -> str:
    """A self-signed x509 certificate, the form Google's v1 certs endpoint serves."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.google.invalid")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def google_key() -> rsa.RSAPrivateKey:
    """The key "Google" signs with (its certificate is what the test certs endpoint serves)."""
    return rsa_key()


@pytest.fixture(scope="module")
def forger_key() -> rsa.RSAPrivateKey:
    """Someone else's key: tokens it signs must be refused."""
    return rsa_key()


def id_token(key: rsa.RSAPrivateKey, kid: str, *, omit: tuple[str, ...] = (), **claims: Any) -> str:
    """A Google-shaped ID token for AUDIENCE, valid for an hour unless `claims` say otherwise:
    a Workspace account of example.com (`hd` is how Google says so). `omit`: claims left out."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "sub": "1098765432101234567890",
        "email": "ops@example.com",
        "email_verified": True,
        "hd": "example.com",
        "iat": now - 60,
        "exp": now + 3600,
        **claims,
    }
    for name in omit:
        payload.pop(name, None)
    signer = crypt.RSASigner.from_string(private_pem(key), key_id=kid)  # type: ignore[no-untyped-call]
    token: bytes = google_jwt.encode(signer, payload)  # type: ignore[no-untyped-call]
    return token.decode()


def forged_shape(header: dict[str, Any], **claims: Any) -> str:
    """A token with any header and claims and a made-up signature: what a stranger can send
    without a key (alg "none", no kid, someone else's audience, an old expiry…)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "email": "ops@example.com",
        "email_verified": True,
        "hd": "example.com",
        "iat": now - 60,
        "exp": now + 3600,
        **claims,
    }
    return f"{part(header)}.{part(payload)}.c2lnbmF0dXJl"
