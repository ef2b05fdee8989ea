"""gunicorn settings for the sheet-bridge backend (the Dockerfile's CMD, docs/deploy.md).

    gunicorn -c gunicorn.conf.py "sheet_bridge.web.app:create_app()"

The app reads SHEET_BRIDGE_CONFIG (a bridge .toml or a folder of them), SHEET_BRIDGE_LEDGER
and its secrets from the environment. These settings read PORT (default 8080),
SHEET_BRIDGE_HOST (default 0.0.0.0), WEB_CONCURRENCY (workers, default 4) and
GUNICORN_THREADS (default 8), SHEET_BRIDGE_HEALTH_PORT / SHEET_BRIDGE_HEALTH_HOST (the health
check, below) and SHEET_BRIDGE_LOG_FORMAT (docs/operating.md); GUNICORN_CMD_ARGS overrides
anything here.

How a request and a pass relate (sheet_bridge/web/passes.py): POST /api/sync starts the pass
in a thread of its own and waits for it at most `wait` seconds (at most 25); a longer pass
answers 202 and goes on in the background, its progress in the ledger. So no request lasts
longer than about 25 s plus the time to take a tab's lock (5 s), while a pass may run for
minutes in the worker process, outside any request.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from typing import Any

# /metrics adds up every worker's counters: prometheus_client's multiprocess mode, where each
# worker writes its counts to files in this folder (in memory where /dev/shm exists). It must
# be set before prometheus_client is first imported, so before the import below; a fresh
# folder per start, as prometheus_client asks
# (https://prometheus.github.io/client_python/multiprocess/).
_METRICS_DIR_OWNED = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _METRICS_DIR_OWNED:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="sheet-bridge-metrics-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )

# Imported once in the master (before workers fork): every worker starts with Flask, the Google
# client, pydantic and psycopg already loaded and shares their pages copy-on-write. The app
# itself is NOT preloaded (see preload_app).
import sheet_bridge.web.app  # noqa: E402, F401
from sheet_bridge import logs  # noqa: E402
from sheet_bridge.web.api import MAX_WAIT  # noqa: E402
from sheet_bridge.web.health import DEFAULT_PORT, live_workers, start_health_listener  # noqa: E402
from sheet_bridge.web.passes import finish_running_passes  # noqa: E402

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
# SHEET_BRIDGE_LOG_FORMAT=json (the default on Cloud Run): gunicorn's own lines too are one
# JSON object each, with the severity Cloud Logging reads (sheet_bridge/logs.py).
if logs.log_format(os.environ) == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "sheet_bridge.logs.JsonFormatter"}},
        # gunicorn's own defaults name these two handlers; both write JSON here.
        "handlers": {
            name: {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
            for name in ("console", "error_console")
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }
# The workers' heartbeat files in memory: on a container's overlay filesystem a disk write can
# stall long enough for gunicorn to think a worker hung.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None


# The health check slow clients cannot starve (sheet_bridge/web/health.py): GET /healthz on
# SHEET_BRIDGE_HEALTH_PORT (default 8081; "off" for none; 0 picks a free port), answered by
# the master from the workers' heartbeats, on SHEET_BRIDGE_HEALTH_HOST (default loopback: the
# Dockerfile's HEALTHCHECK runs inside the container).
_health: list[Any] = []


def when_ready(server: Any) -> None:
    port = os.environ.get("SHEET_BRIDGE_HEALTH_PORT", str(DEFAULT_PORT)).strip()
    if port.lower() == "off":
        return
    host = os.environ.get("SHEET_BRIDGE_HEALTH_HOST", "127.0.0.1")
    listener = start_health_listener(host, int(port), lambda: live_workers(server))
    _health.append(listener)
    server.log.info("Health check at: http://%s:%s/healthz", host, listener.server_address[1])


def post_fork(server: Any, worker: Any) -> None:
    """sheet-bridge's own log lines (a pass's counts, a lock taken over, a lost pass) go to
    stderr in the configured format (text, or JSON for Cloud Logging) with the request id;
    they never carry the Meta token or a lead's e-mail or phone (sheet_bridge/logs.py)."""
    for listener in _health:  # the master's socket: not the worker's to hold
        listener.socket.close()
    logs.install(os.environ, level=logging.INFO)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _METRICS_DIR_OWNED:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


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
