"""The process is stopping: passes stop sending in time to record what they sent.

A platform stops a server with SIGTERM and kills it with SIGKILL a little later (Cloud Run
10 s later: https://cloud.google.com/run/docs/container-contract#lifecycle; `docker stop` 10 s;
systemd 90 s by default). gunicorn.conf.py calls `stop_by` when its worker is told to stop;
from then on a pass checks `check()` before each request to Meta and before its write-back,
and past the deadline it stops: what Meta answered is recorded in the ledger, nothing else is
in flight, and the next pass (on this server or another) sends the rest. A process nobody stops
never sets a deadline and `check()` costs one comparison.
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_deadline: float | None = None  # time.monotonic() by which passes stop sending


class ServerStopping(Exception):
    """The server is stopping and the pass must end before it is killed."""


def stop_by(deadline: float) -> None:
    """Passes stop sending at `deadline` (time.monotonic()); an earlier deadline wins."""
    global _deadline
    with _lock:
        _deadline = deadline if _deadline is None else min(_deadline, deadline)


def check() -> None:
    """ServerStopping when the process is stopping and its passes' time to send is up."""
    deadline = _deadline
    if deadline is not None and time.monotonic() >= deadline:
        raise ServerStopping(
            "the server is stopping (SIGTERM: a redeploy, a scale-in or a restart) and the "
            "pass ended before it would be killed"
        )
