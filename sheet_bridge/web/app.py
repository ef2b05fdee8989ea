"""The Flask app factory: one backend serving one or more bridges (one per sheet tab)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from sheet_bridge.config import BridgeConfig, load_configs
from sheet_bridge.sync.run import Bridge
from sheet_bridge.web.auth import Authenticator, AuthError, TokenVerifier


class StartupError(Exception):
    """The backend cannot start; the message says what to set."""


class BridgeRegistry:
    """Bridges by (spreadsheet id, tab), each with its authenticator."""

    def __init__(self, bridges: list[Bridge], authenticators: list[Authenticator]) -> None:
        self._bridges = {(b.config.sheets.spreadsheet_id, b.config.sheets.tab): b for b in bridges}
        self._auth = {id(b): a for b, a in zip(bridges, authenticators, strict=True)}

    def find(self, spreadsheet_id: str, tab: str | None) -> Bridge | None:
        if tab is not None:
            return self._bridges.get((spreadsheet_id, tab))
        matches = [b for (sid, _), b in self._bridges.items() if sid == spreadsheet_id]
        return matches[0] if len(matches) == 1 else None

    def authenticator(self, bridge: Bridge) -> Authenticator:
        return self._auth[id(bridge)]

    def authenticate_any(self, header: str | None) -> None:
        last: AuthError | None = None
        for auth in self._auth.values():
            try:
                auth.authenticate(header)
                return
            except AuthError as exc:
                last = exc
        raise last or AuthError(401, "invalid credentials")

    def all(self) -> list[Bridge]:
        return list(self._bridges.values())


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


def create_app(
    config: str | os.PathLike[str] | BridgeConfig | list[BridgeConfig] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    bridges: list[Bridge] | None = None,
    verifier: TokenVerifier | None = None,
) -> Flask:
    """Build the backend. `config`: a file, a folder of files, or config objects; None reads
    SHEET_BRIDGE_CONFIG. `bridges` (tests, the playground) replaces building them from config.
    A missing Meta token or missing auth settings stop the start, with what to set."""
    env = environ if environ is not None else os.environ
    if bridges is None:
        configs = _configs(config, env)
        for cfg in configs:
            if not cfg.meta.access_token(env):
                raise StartupError(
                    f"{cfg.source}: the Meta access token is missing: set the environment "
                    f"variable {cfg.meta.access_token_env}"
                )
        bridges = [Bridge.from_config(cfg, environ=env) for cfg in configs]
    authenticators = [Authenticator(b.config.server, env, verifier) for b in bridges]
    for b, auth in zip(bridges, authenticators, strict=True):
        if not auth.configured:
            server = b.config.server
            hint = (
                f"the variable {server.shared_secret_env} is empty"
                if server.shared_secret_env
                else "set [server] shared_secret_env or id_token_audience"
            )
            raise StartupError(f"{b.config.source}: nobody could call this backend: {hint}")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = max(b.config.server.max_body_bytes for b in bridges)
    app.extensions["sheet_bridge"] = BridgeRegistry(bridges, authenticators)

    from sheet_bridge.web.api import api

    app.register_blueprint(api)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"ok": True})

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
        app.logger.error("unexpected %s", type(exc).__name__)
        body: dict[str, Any] = {
            "error": {"code": "internal", "message": "unexpected error; see the server log"}
        }
        return jsonify(body), 500

    return app
