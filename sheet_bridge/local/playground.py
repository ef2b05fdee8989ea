"""The playground: the emulated sheet as an editable grid beside the real sidebar (issue 6).

One page on loopback. The real `sidebar/Code.gs` runs in the page over `apps_script_local.js`
(the Apps Script stand-in the Node tests use too), so editing, pasting or sorting in the grid
goes through Code.gs's own onEdit handler, and the real `sidebar/Sidebar.html` (served
unchanged, with one script element that provides `google.script.run`) calls Code.gs's
functions, as whichever of two editors the page is switched to. Code.gs is set up as in
production: its backend is the manifest's https prefix (https://sheet-bridge.example.com/),
which the stand-in routes to the backend mounted here at /backend; the stand-in reaches the
Sheets emulator through /sheets. Nothing here decides anything about leads.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
from flask import Flask, Response, jsonify, request
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from sheet_bridge.local.demo import META_PORT, SHEETS_PORT, DemoEnvironment, demo_environment
from sheet_bridge.local.server import make_local_server, port_is_free
from sheet_bridge.web.app import create_app

# One source of truth: the files clasp pushes, read from the checkout (never a packaged copy).
SIDEBAR_DIR = Path(__file__).resolve().parents[2] / "sidebar"
# The page's port when none is asked for and it is free.
PLAYGROUND_PORT = 8080
PLAYGROUND_USER = "you@example.com"
# The second editor of the spreadsheet, to try what a colleague sees and does.
PLAYGROUND_COLLEAGUE = "colleague@example.com"
# What Code.gs calls: the placeholder https prefix of appsscript.json's urlFetchWhitelist.
PLAYGROUND_BACKEND_URL = "https://sheet-bridge.example.com"
# What the host adds to the sidebar page, as Apps Script adds its own google.script API.
SHIM_TAG = '<script src="/static/script_run_shim.js"></script>\n'
_DOCTYPE = re.compile(r"\A(\ufeff?\s*<!DOCTYPE[^>]*>\s*\n?)", re.IGNORECASE)


class PlaygroundError(Exception):
    """The playground cannot start; the message says what to do."""


def sidebar_source(name: str, sidebar_dir: Path = SIDEBAR_DIR) -> str:
    """The text of sidebar/Code.gs or sidebar/Sidebar.html, from the source checkout."""
    path = sidebar_dir / name
    if not path.is_file():
        raise PlaygroundError(
            f"the playground serves the add-on's own files and cannot find {path}; run it from "
            "a clone of the repository installed with `pip install -e .` (as `make demo` does)"
        )
    return path.read_text(encoding="utf-8")


def sidebar_page(html: str) -> str:
    """Sidebar.html as written, with the google.script.run shim right after the doctype (so
    the page keeps standards mode and the shim exists before the sidebar's own script runs)."""
    m = _DOCTYPE.match(html)
    cut = m.end() if m else 0
    return html[:cut] + SHIM_TAG + html[cut:]


def manifest(sidebar_dir: Path = SIDEBAR_DIR) -> dict[str, Any]:
    """appsscript.json, next to the sidebar folder: its urlFetchWhitelist is what the page's
    UrlFetchApp admits, as Apps Script does."""
    path = sidebar_dir.parent / "appsscript.json"
    if not path.is_file():
        raise PlaygroundError(f"the playground needs the add-on's manifest and cannot find {path}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def create_playground(
    env: DemoEnvironment,
    secret: str | None,
    *,
    sidebar_dir: Path = SIDEBAR_DIR,
    backend: Any = None,
    identity_tokens: dict[str, str | None] | None = None,
    fetch_deadline_ms: int | None = None,
) -> Flask:
    """The playground page, the sidebar, a /sheets proxy to the emulator, and a backend
    mounted at /backend: the real one (create_app over the demo's bridge, accepting `secret`)
    unless `backend` (any WSGI app) is given. With `identity_tokens` (e-mail → the ID token
    ScriptApp.getIdentityToken gives that person, None for none), the page uses Google
    sign-in; otherwise the shared `secret`. `fetch_deadline_ms` shortens UrlFetch's 60 s."""
    code_gs = sidebar_source("Code.gs", sidebar_dir)
    sidebar_html = sidebar_source("Sidebar.html", sidebar_dir)
    script_manifest = manifest(sidebar_dir)
    if backend is None:
        environ = {"SHEET_BRIDGE_SECRET": secret} if secret else {}
        backend = create_app(bridges=[env.bridge], environ=environ)
    tokens = identity_tokens
    sheets = httpx.Client(base_url=env.sheets_url, timeout=30)

    app = Flask(__name__)  # serves sheet_bridge/local/static at /static
    app.extensions["sheets_proxy"] = sheets

    @app.get("/")
    def page() -> Response:
        return app.send_static_file("playground.html")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status=204)

    @app.get("/playground/config")
    def config() -> Response:
        users = [PLAYGROUND_USER, PLAYGROUND_COLLEAGUE]
        return jsonify(
            {
                "spreadsheet_id": env.config.sheets.spreadsheet_id,
                "tab": env.config.sheets.tab,
                "backend_url": PLAYGROUND_BACKEND_URL,
                # Where the manifest's prefix is served on this machine.
                "routes": {PLAYGROUND_BACKEND_URL + "/": request.host_url + "backend/"},
                "manifest": script_manifest,
                # The project's HTML files, named as clasp pushes them (rootDir "."): what
                # HtmlService.createHtmlOutputFromFile finds.
                "html_files": ["sidebar/Sidebar"],
                "auth_mode": "id_token" if tokens is not None else "secret",
                # A fresh random secret per run, handed only to this loopback page; Code.gs
                # keeps it in the User Properties of whoever enters it.
                "secret": secret if tokens is None else None,
                "users": {u: {"identityToken": (tokens or {}).get(u)} for u in users},
                "fetch_deadline_ms": fetch_deadline_ms,
                "sheets_url": "/sheets",
                "user": PLAYGROUND_USER,
                # For the grid's colouring and the status cell's suggestions only.
                "status_column": env.config.columns["status"],
                "statuses": env.config.stage_map.configured_statuses(),
                # What the page says happens to an edit (sent at once, or after settling).
                "settle_seconds": env.config.sync.settle_seconds,
            }
        )

    @app.get("/playground/Code.gs")
    def code() -> Response:
        return Response(code_gs, content_type="text/javascript; charset=utf-8")

    @app.get("/playground/sidebar")
    def sidebar() -> Response:
        return Response(sidebar_page(sidebar_html), content_type="text/html; charset=utf-8")

    @app.route("/sheets/<path:_rest>", methods=["GET", "POST", "PUT"])
    def sheets_proxy(_rest: str) -> Response:
        # The raw URI keeps the A1 range's percent-encoding exactly as the page sent it.
        raw = str(request.environ.get("RAW_URI") or request.full_path)
        answer = sheets.request(
            request.method,
            raw[len("/sheets") :],
            content=request.get_data(),
            headers={"Content-Type": request.content_type or "application/json"},
        )
        return Response(
            answer.content,
            status=answer.status_code,
            content_type=answer.headers.get("content-type", "application/json"),
        )

    app.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, {"/backend": backend}
    )
    return app


def serve_playground(
    data_dir: Path,
    port: int | None = None,
    *,
    sheets_port: int = SHEETS_PORT,
    meta_port: int = META_PORT,
) -> None:
    """Run the playground on 127.0.0.1:`port` until Ctrl-C, seeding the demo data first if
    `data_dir` has none. The emulator and the fake Meta take their demo ports, or any free
    ones when those are taken (a second playground, a test run); so does the page when no
    `port` is given and 8080 is taken. A `port` asked for and taken stops the start in words.
    The URLs in use are printed."""
    from sheet_bridge.local.demo import run_demo

    if port is not None and not port_is_free("127.0.0.1", port):
        raise SystemExit(
            f"error: port {port} is in use by another program; pick another with --port, or "
            "leave --port out to take a free one"
        )
    if not (data_dir / "sheets.json").exists():
        run_demo(data_dir)
    _stop_on_signals()
    secret = secrets.token_urlsafe(32)
    try:
        with demo_environment(data_dir, sheets_port=sheets_port, meta_port=meta_port) as env:
            app = create_playground(env, secret)
            server = make_local_server(
                app, "127.0.0.1", PLAYGROUND_PORT if port is None else port, or_free=True
            )
            url = f"http://127.0.0.1:{server.server_port}"
            wanted = PLAYGROUND_PORT if port is None else port
            # Port 0 asks for any free port: taking one is what was asked, not a fallback.
            taken = [
                str(want)
                for want, url_used in (
                    (wanted, url),
                    (sheets_port, env.sheets_url),
                    (meta_port, env.meta_url),
                )
                if want and not url_used.endswith(f":{want}")
            ]
            notes = ["  (--port 0: any free port)"] if port == 0 else []
            if taken:
                taken_words = ", ".join(taken)
                notes.append(f"  (taken by another program: {taken_words}; free ports instead)")
            print(
                "\n".join(
                    [
                        f"\nPlayground: {url}",
                        f"  Sheets emulator: {env.sheets_url}",
                        f"  Fake Meta: {env.meta_url}",
                        f"  Data: {data_dir}",
                        *notes,
                        "Ctrl-C stops everything.",
                    ]
                ),
                flush=True,
            )
            try:
                server.serve_forever()  # werkzeug's returns on KeyboardInterrupt
            finally:
                server.server_close()
                _close(app)
        print("\nPlayground stopped.", flush=True)
    except PlaygroundError as exc:
        raise SystemExit(f"error: {exc}") from None


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both end serve_forever with KeyboardInterrupt, so the emulator, the
    fake Meta and the ledger close cleanly (a shell starts background jobs with SIGINT ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def _close(app: Flask) -> None:
    client: Any = app.extensions.get("sheets_proxy")
    if client is not None:
        client.close()
