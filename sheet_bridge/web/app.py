"""The Flask app factory: one backend serving one or more bridges (one per sheet tab)."""

from __future__ import annotations

import logging
import os
import re
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from sheet_bridge import logs
from sheet_bridge.config import BridgeConfig, ConfigError, load_configs
from sheet_bridge.sheets.client import SheetsError
from sheet_bridge.sync.ledger import LedgerBackend, LedgerError, open_ledger
from sheet_bridge.sync.run import Bridge, SyncError
from sheet_bridge.web.api import api
from sheet_bridge.web.auth import Authenticator, TokenVerifier, google_verifier, setup_problem
from sheet_bridge.web.metrics import exposition
from sheet_bridge.web.registry import BridgeRegistry
from sheet_bridge.web.sweep import Sweeper


class StartupError(Exception):
    """The backend cannot start; the message (one line per problem) says what to set."""


# gunicorn's exit status for "App failed to load": the arbiter stops instead of re-spawning.
APP_LOAD_ERROR = 4
# A caller's (or a load balancer's) X-Request-Id is kept when it looks like an id; else one is
# made. Either way the answer carries it, and so does every log line of the request.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

log = logging.getLogger(__name__)


def _configs(
    config: str | os.PathLike[str] | BridgeConfig | list[BridgeConfig] | None,
    environ: Mapping[str, str],
) -> list[BridgeConfig]:
    if config is None:
        path = environ.get("SHEET_BRIDGE_CONFIG")
        if not path:
            raise StartupError(
                "no config: set SHEET_BRIDGE_CONFIG to a bridge .toml file or a folder of them"
            )
        config = path
    if isinstance(config, BridgeConfig):
        return [config]
    if isinstance(config, list):
        return config
    return load_configs(Path(config))


def _check_auth(config: BridgeConfig, environ: Mapping[str, str]) -> None:
    problem = setup_problem(config.server, environ)
    if problem is not None:
        raise StartupError(f"{config.source}: {problem}")


def _bridges(configs: list[BridgeConfig], environ: Mapping[str, str]) -> list[Bridge]:
    """The bridge for each config; a ledger or key file that cannot be opened is a one-line
    start-up error (its path is for the operator's console, never for an API answer).

    Bridges whose ledger is the same file or URL share one open ledger: a folder of ten
    configs on one PostgreSQL ledger is one connection pool per process, not ten (4 gunicorn
    workers × 2 replicas × 10 pools would exhaust the server's 100 connections)."""
    ledgers: dict[str, LedgerBackend] = {}
    bridges = []
    for config in configs:
        try:
            location = config.ledger_location(environ)
            if location not in ledgers:
                ledgers[location] = open_ledger(location)
            bridges.append(Bridge.from_config(config, environ=environ, ledger=ledgers[location]))
        except (LedgerError, SheetsError, SyncError) as exc:
            raise StartupError(f"{config.source}: {exc}") from None
    return bridges


def create_app(
    config: str | os.PathLike[str] | BridgeConfig | list[BridgeConfig] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    bridges: list[Bridge] | None = None,
    verifier: TokenVerifier | None = None,
) -> Flask:
    """Build the backend. `config`: a file, a folder of files, or config objects; None reads
    SHEET_BRIDGE_CONFIG. `bridges` (tests, the playground) replaces building them from config.
    A missing Meta token, unsafe auth settings or an unreadable ledger stop the start with
    StartupError, in words. Called with neither (the WSGI server's entry point,
    `gunicorn "sheet_bridge.web.app:create_app()"`), the problem is printed as one line and
    the process exits with status 4, which gunicorn reads as "App failed to load"."""
    if config is None and bridges is None:
        try:
            return _create_app(None, environ, None, verifier)
        except (StartupError, ConfigError) as exc:
            print(f"sheet-bridge: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(APP_LOAD_ERROR) from None
    return _create_app(config, environ, bridges, verifier)


def _create_app(
    config: str | os.PathLike[str] | BridgeConfig | list[BridgeConfig] | None,
    environ: Mapping[str, str] | None,
    bridges: list[Bridge] | None,
    verifier: TokenVerifier | None,
) -> Flask:
    env = environ if environ is not None else os.environ
    if bridges is None:
        configs = _configs(config, env)
        for cfg in configs:
            _check_auth(cfg, env)
            if not cfg.meta.access_token(env):
                raise StartupError(
                    f"{cfg.source}: the Meta access token is missing: set the environment "
                    f"variable {cfg.meta.access_token_env}"
                )
        bridges = _bridges(configs, env)
    for b in bridges:
        _check_auth(b.config, env)
        logs.redact_values([b.config.meta.access_token(env), b.config.server.shared_secret(env)])
    if verifier is None and any(b.config.server.id_token_audience for b in bridges):
        verifier = google_verifier()  # one certificate cache for every bridge
    authenticators = [Authenticator(b.config.server, env, verifier) for b in bridges]

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max(b.config.server.max_body_bytes for b in bridges)
    app.extensions["sheet_bridge"] = BridgeRegistry(bridges, authenticators)

    app.register_blueprint(api)
    swept = [b for b in bridges if b.config.sync.sweep_seconds > 0]
    if swept:
        interval = min(b.config.sync.sweep_seconds for b in swept)
        app.extensions["sheet_bridge_sweeper"] = Sweeper(swept, interval).start()

    project = env.get("GOOGLE_CLOUD_PROJECT")

    @app.before_request
    def identify() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.log_context = (
            logs.REQUEST_ID.set(g.request_id),
            logs.TRACE.set(logs.trace_field(request.headers.get("X-Cloud-Trace-Context"), project)),
        )

    @app.after_request
    def tag(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id", "")
        return response

    @app.teardown_request
    def forget(exc: BaseException | None) -> None:
        tokens = g.pop("log_context", None)
        if tokens is not None:  # the thread serves other requests next
            logs.REQUEST_ID.reset(tokens[0])
            logs.TRACE.reset(tokens[1])

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"ok": True})

    @app.get("/metrics")
    def metrics() -> Response:
        body, content_type = exposition(app.extensions["sheet_bridge"].all())
        return Response(body, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        code = (exc.name or "error").lower().replace(" ", "_")
        status = exc.code or 500
        message = {
            413: "the request body is too large",
            404: "no such route",
            405: "method not allowed on this route",
        }.get(status, exc.description or exc.name)
        return jsonify({"error": {"code": code, "message": message}}), status

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.error(
            "unexpected %s answering %s %s",
            type(exc).__name__,
            request.method,
            request.path,
            exc_info=exc,
        )
        body: dict[str, Any] = {
            "error": {
                "code": "internal",
                "message": "unexpected error; see the server log",
                "request_id": g.get("request_id"),
            }
        }
        return jsonify(body), 500

    return app
