"""gunicorn settings for the sheet-bridge backend (the Dockerfile's CMD, docs/deploy.md).

    gunicorn -c gunicorn.conf.py "sheet_bridge.web.app:create_app()"

The app reads SHEET_BRIDGE_CONFIG (a bridge .toml or a folder of them), SHEET_BRIDGE_LEDGER
and its secrets from the environment. These settings read PORT (default 8080),
SHEET_BRIDGE_HOST (default 0.0.0.0), WEB_CONCURRENCY (workers, default 4),
GUNICORN_THREADS (default 8), SHEET_BRIDGE_STOP_SECONDS (how long a stop may take, below),
SHEET_BRIDGE_HEALTH_PORT / SHEET_BRIDGE_HEALTH_HOST (the health check, below) and
SHEET_BRIDGE_LOG_FORMAT (docs/operating.md); GUNICORN_CMD_ARGS overrides anything here.

How a request and a pass relate (sheet_bridge/web/passes.py): POST /api/sync starts the pass
in a thread of its own and waits for it at most `wait` seconds (at most 25); a longer pass
answers 202 and goes on in the background, its progress in the ledger. So no request lasts
longer than about 25 s plus the time to take a tab's lock (5 s), while a pass may run for
minutes in the worker process, outside any request.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
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
from sheet_bridge.sync.stopping import stop_by  # noqa: E402
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
# How long a stop may take, from SIGTERM to the last worker gone. The platform kills the
# container soon after its SIGTERM: Cloud Run 10 s later
# (https://cloud.google.com/run/docs/container-contract#lifecycle; K_SERVICE is set there,
# https://cloud.google.com/run/docs/container-contract#env-vars), `docker stop` 10 s later,
# systemd after TimeoutStopSec (90 s by default). So 8 s on Cloud Run, and elsewhere 30 s
# (a request's longest wait, plus 5 s); SHEET_BRIDGE_STOP_SECONDS sets it, below what the
# platform gives. In it: requests in flight are answered, passes stop sending STOP_RESERVE
# seconds before the end (what Meta answered is recorded; the next pass, here or on another
# instance, sends the rest), and the worker exits; gunicorn kills what is left at the end.
STOP_SECONDS = int(
    os.environ.get("SHEET_BRIDGE_STOP_SECONDS")
    or (8 if os.environ.get("K_SERVICE") else int(MAX_WAIT) + 5)
)
# Time kept, at the end of a stop, for a request already at Meta to be answered and recorded
# and for the pass's record to be closed (Meta answers in well under a second; a request
# still out then is resent by the next pass with the same event ids, which Meta deduplicates).
STOP_RESERVE = min(3.0, STOP_SECONDS / 2)
graceful_timeout = STOP_SECONDS
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

# gunicorn's control socket (`gunicornc`, since gunicorn 25.1) is not used, and its default path
# ($XDG_RUNTIME_DIR/gunicorn.ctl, else ~/.gunicorn/gunicorn.ctl) is one per user, not one per
# instance: two instances on one host (two replicas, or the tests' instances) took the same
# socket from each other.
control_socket_disable = True

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


# The worker's stop deadline (time.monotonic()), set when it is told to stop.
_stop_deadline: list[float] = []
PR_SET_PDEATHSIG = 1  # prctl(2): https://man7.org/linux/man-pages/man2/prctl.2.html


def post_worker_init(worker: Any) -> None:
    """A worker learns when it must be gone: at its SIGTERM (sent by the master when the
    master is told to stop, or by the kernel when the master dies: PR_SET_PDEATHSIG) the
    clock starts and its passes are told when to stop sending. A worker whose master is gone
    stops listening at once (nobody else will close the port, and a new instance must be
    able to bind it now, not when this worker's requests end) and exits as soon as its passes
    have recorded what they sent."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        now = time.monotonic()
        orphan = os.getppid() != worker.ppid
        # A stop the master ordered has STOP_SECONDS; an orphan has nothing to wait for: its
        # passes stop before their next request, and it goes once Meta's answers to the
        # requests already out are recorded.
        deadline = now + (STOP_RESERVE if orphan else STOP_SECONDS - 0.5)
        _stop_deadline[:] = [min([deadline, *_stop_deadline])]
        stop_by(now if orphan else deadline - STOP_RESERVE)
        if orphan:
            _stop_listening(worker)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    try:  # Linux: SIGTERM when the master dies, however it died (SIGKILL included)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: gunicorn's own check (once a second) notices the master gone
    if os.getppid() != worker.ppid:  # died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _stop_listening(worker: Any) -> None:
    """Shut the listening sockets: connections waiting to be accepted are refused instead of
    hanging, and the port is free for the next instance (SO_REUSEADDR binds it once no socket
    listens there)."""
    for listener in worker.sockets:
        with contextlib.suppress(OSError):
            listener.sock.shutdown(socket.SHUT_RDWR)


def worker_exit(server: Any, worker: Any) -> None:
    """A stopping worker lets its passes end before its process does: within the stop's
    deadline, by which they have stopped sending and recorded what they sent."""
    deadline = _stop_deadline[0] if _stop_deadline else time.monotonic() + STOP_SECONDS
    left = finish_running_passes(max(0.0, deadline - time.monotonic()))
    if left:
        server.log.warning("worker %s stopped with %d pass(es) running: lost", worker.pid, left)


def on_starting(server: Any) -> None:
    """Check the configuration once, in the master, before any worker forks: a config, secret
    or ledger problem is then one line and exit status 4, instead of four workers failing
    together (gunicorn then halts from inside its own shutdown, with a traceback and status 1).
    The app built here is closed again: workers open their own ledgers (see preload_app)."""
    from sheet_bridge.web.app import create_app

    app = create_app()  # prints the one line and exits 4 when it cannot start
    # Its sweeper thread stops before any worker forks: a fork while it is inside SQLite (or
    # any lock) gives the worker that lock held by no one, and the worker's own create_app
    # then waited in sqlite3.connect forever (py-spy, tests/replicas/test_edit_after_kill.py).
    # The master serves no request: the workers sweep.
    sweeper = app.extensions.get("sheet_bridge_sweeper")
    if sweeper is not None:
        sweeper.stop()
    for bridge in app.extensions["sheet_bridge"].all():
        bridge.ledger.close()
