"""gunicorn settings for the sheet-bridge backend (the Dockerfile's CMD, README "Run on a VM").

    gunicorn -c gunicorn.conf.py "sheet_bridge.web.app:create_app()"

The app reads SHEET_BRIDGE_CONFIG (a bridge .toml or a folder of them), SHEET_BRIDGE_LEDGER
and its secrets from the environment. These settings read PORT (default 8080),
SHEET_BRIDGE_HOST (default 0.0.0.0), WEB_CONCURRENCY (workers, default 4) and
GUNICORN_THREADS (default 8); GUNICORN_CMD_ARGS overrides anything here.

How a request and a pass relate (sheet_bridge/web/passes.py): POST /api/sync starts the pass
in a thread of its own and waits for it at most `wait` seconds (at most 25); a longer pass
answers 202 and goes on in the background, its progress in the ledger. So no request lasts
longer than about 25 s plus the time to take a tab's lock (5 s), while a pass may run for
minutes in the worker process, outside any request.
"""

from __future__ import annotations

import logging
import os
from typing import Any

# Imported once in the master (before workers fork): every worker starts with Flask, the Google
# client, pydantic and psycopg already loaded and shares their pages copy-on-write. The app
# itself is NOT preloaded (see preload_app).
import sheet_bridge.web.app  # noqa: F401
from sheet_bridge.web.api import MAX_WAIT
from sheet_bridge.web.passes import finish_running_passes

bind = [f"{os.environ.get('SHEET_BRIDGE_HOST', '0.0.0.0')}:{os.environ.get('PORT', '8080')}"]

# Threads, not processes, carry the waiting: a request spends its time waiting for its pass (up
# to 25 s), for a tab's lock (an edit waits up to 5 s while a pass runs) or for Google and Meta,
# so 8 threads per worker (32 requests in flight per instance: Cloud Run's --concurrency) cost
# little CPU. Passes run in threads of their own, not in these. 4 workers use 2 cores while one
# worker plans a large sheet. Each worker holds its own ledger connections: on PostgreSQL up to
# 4 pooled plus one per pass holding or awaiting a tab's lock.
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))

# gthread's `timeout` is not a request deadline: a worker's main loop reports alive every
# second whatever its threads do, so a 25 s wait or a 10-minute background pass never trips it.
# It only replaces a worker whose process is stuck. It must still outlast the longest wait, in
# case someone switches to the sync worker class (there it IS the request deadline).
timeout = int(MAX_WAIT) + 35
# On SIGTERM (a redeploy, a scale-in, systemctl stop), requests in flight get this long to be
# answered (longer than MAX_WAIT), then worker_exit below lets running passes end within what
# is left; gunicorn kills the worker at the end of it. A pass cut there is "lost", and
# nothing is: what it sent is in the ledger and the next pass does the rest.
graceful_timeout = int(MAX_WAIT) + 5
# Longer than a load balancer's own keep-alive would be pointless; short enough to free slots.
keepalive = 5

# No recycling: max_requests would restart a worker after N requests, and with it every pass
# running in that worker's background threads.
max_requests = 0
max_requests_jitter = 0

# preload_app stays off: with it, create_app() would run in the master and the workers would
# inherit its open ledger (a psycopg pool's sockets and threads, SQLite connections) across
# fork, sharing one connection between processes. Each worker opens its own instead; the
# import above already shares the code.
preload_app = False

# Logs to stdout/stderr (journald, Cloud Logging). The access log names the path only (%(U)s,
# never %(q)s or %(r)s): no query string, no headers (the Bearer secret or ID token is in
# Authorization), no user agent. No route takes a secret in its URL; this keeps it that way
# should one ever carry a spreadsheet id or worse.
accesslog = "-"
errorlog = "-"
loglevel = "info"
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
proc_name = "sheet-bridge"
# The workers' heartbeat files in memory: on a container's overlay filesystem a disk write can
# stall long enough for gunicorn to think a worker hung.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


def post_fork(server: Any, worker: Any) -> None:
    """sheet-bridge's own log lines (a pass's counts, a lock taken over, a lost pass) go where
    gunicorn's error log goes; they never carry the Meta token or a lead's e-mail or phone."""
    ours = logging.getLogger("sheet_bridge")
    ours.setLevel(logging.INFO)
    for handler in server.log.error_log.handlers:
        ours.addHandler(handler)
    ours.propagate = False


def worker_exit(server: Any, worker: Any) -> None:
    """A stopping worker lets its passes end before its process does (bounded by
    graceful_timeout, after which gunicorn kills it anyway)."""
    left = finish_running_passes(graceful_timeout)
    if left:
        server.log.warning("worker %s stopped with %d pass(es) running: lost", worker.pid, left)


def on_starting(server: Any) -> None:
    """Check the configuration once, in the master, before any worker forks: a config, secret
    or ledger problem is then one line and exit status 4, instead of four workers failing
    together (gunicorn then halts from inside its own shutdown, with a traceback and status 1).
    The app built here is closed again: workers open their own ledgers (see preload_app)."""
    from sheet_bridge.web.app import create_app

    app = create_app()  # prints the one line and exits 4 when it cannot start
    for bridge in app.extensions["sheet_bridge"].all():
        bridge.ledger.close()
