"""Auth that fails closed (issue 12, findings 4-7): Google sign-in only for the accounts the
config names, no certificate fetch for a token that cannot be valid, secrets that survive a
trailing newline and cannot be guessed, and no body read before the caller is known. Tokens
are signed locally; pytest-httpserver stands in for Google's certificate endpoint."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from sheet_bridge.web.app import StartupError, create_app
from sheet_bridge.web.auth import GoogleCertificates, google_verifier
from tests.conftest import WORLD_SECRET, WORLD_SHEET, World, lead_row
from tests.google_tokens import AUDIENCE, certificate_pem, forged_shape
from tests.google_tokens import id_token as google_id_token

MakeWorld = Callable[..., World]
KID = "issue12-key"
AUTH = {"Authorization": f"Bearer {WORLD_SECRET}"}


def id_token(key: Any, **claims: Any) -> str:
    return google_id_token(key, KID, **claims)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def serve_certificates(httpserver: HTTPServer, key: Any) -> None:
    httpserver.expect_request("/certs").respond_with_data(
        json.dumps({KID: certificate_pem(key)}), content_type="application/json"
    )


def certificate_fetches(httpserver: HTTPServer) -> int:
    return sum(1 for request, _ in httpserver.log if request.path == "/certs")


def id_token_world(
    make_world: MakeWorld, world_now: datetime, httpserver: HTTPServer, **server: Any
) -> World:
    return make_world(
        [lead_row(1, "New", now=world_now)],
        server={
            "shared_secret_env": None,
            "id_token_audience": AUDIENCE,
            "id_token_certs_url": httpserver.url_for("/certs"),
            **server,
        },
    )


def id_token_client(world: World, **kw: Any) -> FlaskClient:
    return create_app(bridges=[world.bridge()], environ={}, **kw).test_client()


def status(client: FlaskClient, headers: dict[str, str]) -> Any:
    return client.get(f"/api/status?spreadsheet_id={WORLD_SHEET}", headers=headers)


def error_code(response: Any) -> str:
    code: str = response.get_json()["error"]["code"]
    return code


# ---- finding 4: which Google accounts get in ----------------------------------------------------


def test_id_token_mode_without_allowed_emails_or_domain_does_not_start(
    make_world: MakeWorld, world_now: datetime, httpserver: HTTPServer
) -> None:
    world = id_token_world(make_world, world_now, httpserver)

    with pytest.raises(StartupError) as refused:
        id_token_client(world)

    said = str(refused.value)
    assert "\n" not in said
    assert "allowed_domain" in said and "allowed_emails" in said
    assert "any Google account" in said


def test_an_address_in_the_domain_is_not_enough_hd_must_be_the_allowed_domain(
    make_world: MakeWorld,
    world_now: datetime,
    httpserver: HTTPServer,
    google_key: Any,
) -> None:
    serve_certificates(httpserver, google_key)
    world = id_token_world(make_world, world_now, httpserver, allowed_domain="example.com")
    client = id_token_client(world)

    other_workspace = status(client, bearer(id_token(google_key, hd="evil.com")))
    consumer_account = status(client, bearer(id_token(google_key, omit=("hd",))))
    member = status(client, bearer(id_token(google_key, hd="example.com")))

    assert other_workspace.status_code == 403, other_workspace.get_data(as_text=True)
    assert consumer_account.status_code == 403, consumer_account.get_data(as_text=True)
    assert error_code(other_workspace) == error_code(consumer_account) == "forbidden"
    assert member.status_code == 200, member.get_data(as_text=True)


@pytest.mark.parametrize(
    "verified",
    [{"omit": ("email_verified",)}, {"email_verified": "true"}, {"email_verified": 1}],
    ids=["missing", "string-true", "one"],
)
def test_email_verified_must_be_the_json_value_true(
    make_world: MakeWorld,
    world_now: datetime,
    httpserver: HTTPServer,
    google_key: Any,
    verified: dict[str, Any],
) -> None:
    serve_certificates(httpserver, google_key)
    world = id_token_world(make_world, world_now, httpserver, allowed_domain="example.com")
    client = id_token_client(world)

    response = status(client, bearer(id_token(google_key, **verified)))

    assert response.status_code == 403, response.get_data(as_text=True)
    assert "verified e-mail" in response.get_json()["error"]["message"]


def test_an_account_named_in_allowed_emails_needs_no_workspace_domain(
    make_world: MakeWorld,
    world_now: datetime,
    httpserver: HTTPServer,
    google_key: Any,
) -> None:
    serve_certificates(httpserver, google_key)
    world = id_token_world(make_world, world_now, httpserver, allowed_emails=["Asha.Ops@gmail.com"])
    client = id_token_client(world)

    listed = status(client, bearer(id_token(google_key, email="asha.ops@gmail.com", omit=("hd",))))
    unlisted = status(client, bearer(id_token(google_key, email="eve@gmail.com", omit=("hd",))))

    assert listed.status_code == 200, listed.get_data(as_text=True)
    assert unlisted.status_code == 403


def test_allowed_emails_are_compared_as_addresses_not_case_folded(
    make_world: MakeWorld,
    world_now: datetime,
    httpserver: HTTPServer,
    google_key: Any,
) -> None:
    # casefold() makes "ſ" (long s) "s" and "ß" "ss": other mailboxes, maybe someone else's.
    # Only A-Z is lowered (domains ignore ASCII case: https://www.rfc-editor.org/rfc/rfc4343).
    serve_certificates(httpserver, google_key)
    world = id_token_world(
        make_world,
        world_now,
        httpserver,
        allowed_emails=["ops@example.com", "strasse@example.com"],
        allowed_domain="Example.ORG",
    )
    client = id_token_client(world)

    def answer(email: str, **claims: Any) -> int:
        token = id_token(google_key, email=email, **claims)
        return int(status(client, bearer(token)).status_code)

    assert answer("OPS@Example.com", omit=("hd",)) == 200
    assert answer("opſ@example.com", omit=("hd",)) == 403
    assert answer("straße@example.com", omit=("hd",)) == 403
    assert answer("ana@example.org", hd="example.org") == 200
    assert answer("Ana@EXAMPLE.org", hd="EXAMPLE.org") == 200
    assert answer("ana@example.org", hd="example.orſ") == 403


# ---- finding 5: certificates are fetched only for what could be a Google ID token --------------

NOW = int(time.time())
CANNOT_BE_VALID = {
    "three-dots": "a.b.c",
    "alg-none": forged_shape({"alg": "none", "kid": KID}),
    "no-kid": forged_shape({"alg": "RS256", "typ": "JWT"}),
    "other-audience": forged_shape(
        {"alg": "RS256", "kid": KID}, aud="someone-else.apps.googleusercontent.com"
    ),
    "expired": forged_shape({"alg": "RS256", "kid": KID}, exp=NOW - 3600, iat=NOW - 7200),
    "not-google": forged_shape({"alg": "RS256", "kid": KID}, iss="https://evil.example"),
    "huge": forged_shape({"alg": "RS256", "kid": KID}, padding="x" * 20_000),
}


def test_tokens_that_cannot_be_valid_never_make_the_server_fetch_certificates(
    make_world: MakeWorld, world_now: datetime, httpserver: HTTPServer, google_key: Any
) -> None:
    serve_certificates(httpserver, google_key)
    world = id_token_world(make_world, world_now, httpserver, allowed_domain="example.com")
    client = id_token_client(world)

    answers = {how: status(client, bearer(token)) for how, token in CANNOT_BE_VALID.items()}

    assert {how: r.status_code for how, r in answers.items()} == dict.fromkeys(answers, 401)
    assert certificate_fetches(httpserver) == 0


def test_an_unreachable_certificate_endpoint_is_asked_once_then_again_after_a_pause(
    make_world: MakeWorld,
    world_now: datetime,
    httpserver: HTTPServer,
    google_key: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sheet_bridge")
    httpserver.expect_ordered_request("/certs").respond_with_data("down", status=500)
    serve_certificates(httpserver, google_key)  # what Google answers once it is back
    world = id_token_world(make_world, world_now, httpserver, allowed_domain="example.com")
    monotonic = [1000.0]
    certificates = GoogleCertificates(clock=lambda: monotonic[0])
    client = id_token_client(world, verifier=google_verifier(certificates))

    during = [status(client, bearer(id_token(google_key))) for _ in range(5)]
    fetched_during_outage = certificate_fetches(httpserver)
    monotonic[0] += certificates.failure_ttl + 1
    after = status(client, bearer(id_token(google_key)))

    assert [r.status_code for r in during] == [503] * 5
    assert {error_code(r) for r in during} == {"auth_unavailable"}
    assert "try again" in during[0].get_json()["error"]["message"]
    assert fetched_during_outage == 1
    assert "cannot fetch Google's ID-token certificates" in caplog.text
    assert after.status_code == 200, after.get_data(as_text=True)
    assert certificate_fetches(httpserver) == 2


def test_a_hanging_certificate_endpoint_is_given_up_on_and_the_default_wait_is_short(
    make_world: MakeWorld, world_now: datetime, httpserver: HTTPServer, google_key: Any
) -> None:
    def hang(request: Request) -> Response:
        time.sleep(2)
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/certs").respond_with_handler(hang)
    world = id_token_world(make_world, world_now, httpserver, allowed_domain="example.com")
    client = id_token_client(world, verifier=google_verifier(GoogleCertificates(timeout=0.3)))

    response = status(client, bearer(id_token(google_key)))

    assert response.status_code == 503, response.get_data(as_text=True)
    assert GoogleCertificates().timeout <= 5  # google-auth's own default is 120 s


# ---- finding 6: the shared secret ---------------------------------------------------------------


def test_a_secret_read_with_a_trailing_newline_still_opens_the_backend(
    make_world: MakeWorld, world_now: datetime
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    app = create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET + "\n"})

    response = status(app.test_client(), AUTH)

    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("secret", ["x", "s" * 31, "  " + "b" * 30 + "\n"])
def test_a_short_secret_stops_the_start_and_says_how_to_make_one(
    make_world: MakeWorld, world_now: datetime, secret: str
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])

    with pytest.raises(StartupError) as refused:
        create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": secret})

    said = str(refused.value)
    assert "\n" not in said
    assert "SHEET_BRIDGE_SECRET" in said and "at least 32" in said
    assert 'python3 -c "import secrets; print(secrets.token_urlsafe(32))"' in said
    create_app(bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": "s" * 32})  # enough


# ---- finding 7: the header decides before the body is read --------------------------------------


class WatchedBody(io.BytesIO):
    """A request body that counts how often anyone reads it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().read(size)

    def readinto(self, buffer: Any) -> int:
        self.reads += 1
        return super().readinto(buffer)

    def readline(self, size: int | None = -1) -> bytes:
        self.reads += 1
        return super().readline(size)


DEEP = b"[" * 100_000


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-the-secret"}, {"Authorization": "Bearer a.b.c"}],
    ids=["none", "wrong-secret", "jwt-shaped"],
)
@pytest.mark.parametrize("path", ["/api/sync", "/api/edits"])
def test_a_strangers_deeply_nested_body_is_401_and_never_read(
    make_world: MakeWorld, world_now: datetime, headers: dict[str, str], path: str
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = create_app(
        bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET}
    ).test_client()
    body = WatchedBody(DEEP)

    response = client.post(
        path,
        input_stream=body,
        content_length=len(DEEP),
        content_type="application/json",
        headers=headers,
    )

    assert response.status_code == 401, response.get_data(as_text=True)
    assert error_code(response) == "unauthorized"
    assert body.reads == 0


@pytest.mark.parametrize(
    "body",
    [DEEP, b'{"spreadsheet_id": "' + WORLD_SHEET.encode() + b'", "keys": ' + b"[" * 5000 + b"}"],
    ids=["top-level", "inside-keys"],
)
def test_a_callers_deeply_nested_body_is_400_not_500(
    make_world: MakeWorld, world_now: datetime, body: bytes
) -> None:
    world = make_world([lead_row(1, "New", now=world_now)])
    client = create_app(
        bridges=[world.bridge()], environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET}
    ).test_client()

    response = client.post("/api/sync", data=body, content_type="application/json", headers=AUTH)

    assert response.status_code == 400, response.get_data(as_text=True)
    assert error_code(response) == "invalid_request"
    assert "recursion limit" in response.get_json()["error"]["message"]
    assert world.meta_stats()["requests"] == 0


SECRET_B = "brand-b-secret-" + "7" * 30


def test_credentials_for_one_bridge_open_that_bridge_only_and_reveal_no_other(
    make_world: MakeWorld, world_now: datetime
) -> None:
    """Two bridges with their own secrets: a's secret runs a's passes, gets 403 for b's and
    the same 403 for a sheet nobody configured (no way to tell which exist); a stranger 401."""
    world = make_world([lead_row(1, "New", now=world_now)])
    brand_b = World(
        world.tmp,
        world.sheets_url,
        world.meta_url,
        world.data_path,
        world.config.model_copy(
            update={
                "sheets": world.config.sheets.model_copy(update={"tab": "Brand B"}),
                "server": world.config.server.model_copy(
                    update={"shared_secret_env": "SECRET_B", "ledger": "ledger-b.db"}
                ),
            }
        ),
        world.now,
    )
    client = create_app(
        bridges=[world.bridge(), brand_b.bridge()],
        environ={"SHEET_BRIDGE_SECRET": WORLD_SECRET, "SECRET_B": SECRET_B},
    ).test_client()

    def sync(tab: str, sheet: str = WORLD_SHEET, headers: dict[str, str] = AUTH) -> Any:
        return client.post("/api/sync", json={"spreadsheet_id": sheet, "tab": tab}, headers=headers)

    other_bridge = sync("Brand B")
    no_bridge = sync("Leads", sheet="1NobodyConfiguredThis")
    stranger = sync("Brand B", headers=bearer("x" * 40))
    own = sync("Leads")

    assert other_bridge.status_code == no_bridge.status_code == 403
    assert error_code(other_bridge) == error_code(no_bridge) == "forbidden"
    assert other_bridge.get_json()["error"]["message"].startswith("these credentials do not open")
    assert no_bridge.get_json()["error"]["message"].startswith("these credentials do not open")
    assert stranger.status_code == 401
    assert own.status_code == 200, own.get_data(as_text=True)
    assert world.meta_stats()["events"] == 1  # a's one lead; nothing ran for b
