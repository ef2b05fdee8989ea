"""Passes that outlive the request that started them.

A pass of a large sheet against Meta's real latency takes minutes; Apps Script's UrlFetch
gives up after about 60 s and gunicorn's worker timeout is 30 s. So the request starts the pass
in a thread of this process and waits at most `wait` seconds: a pass done by then is answered
whole (200), else the caller gets 202 and the pass's id, and asks `GET /api/passes/<id>`
later. The answer lives in the ledger's pass record, so any replica can give it, and the pass
never depends on the request staying open.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sheet_bridge.sync.ledger import PassRecord, SheetTab
from sheet_bridge.sync.run import Bridge, SyncResult

log = logging.getLogger(__name__)

# How long a request waits for the pass to take the tab's lock (and so get its id) beyond the
# bridge's own lock wait, before answering.
START_GRACE = 5.0
ROWS_PAGE = 50

# The pass threads this process runs, so a worker that is told to stop can let them end.
_running: set[threading.Thread] = set()
_running_lock = threading.Lock()


def pass_ref(where: SheetTab, pass_id: int) -> str:
    """The id the API gives a pass: its ledger id and a tag of its tab, so bridges with
    separate ledgers (whose ids can repeat) never answer for each other's passes."""
    tag = hashlib.sha256(f"{where.spreadsheet_id}\0{where.tab}".encode()).hexdigest()[:10]
    return f"{pass_id}-{tag}"


def parse_pass_ref(ref: str) -> int | None:
    """The ledger id in an API pass id; None when it is not one (`pass_ref` checks the tag).
    Digits are 0-9 only: "²" and "١٢" are str.isdigit() too, and int() refuses the first."""
    number, _, tag = ref.partition("-")
    if not number.isascii() or not number.isdigit() or len(number) > 18 or len(tag) != 10:
        return None
    return int(number)


@dataclass
class Started:
    """What became of a pass `start_pass` started: finished (result or error) or running."""

    pass_id: int | None = None
    result: SyncResult | None = None
    error: BaseException | None = None
    finished: bool = False


def start_pass(bridge: Bridge, *, wait: float, **kw: Any) -> Started:
    """Run `bridge.sync(**kw)` in a thread; return once it finished or `wait` seconds after it
    took the lock (whichever is first). Errors come back in `error` (SyncBusy included)."""
    outcome = Started()
    started = threading.Event()
    done = threading.Event()

    def on_start(pass_id: int) -> None:
        outcome.pass_id = pass_id
        started.set()

    def run() -> None:
        try:
            outcome.result = bridge.sync(on_start=on_start, **kw)
        except BaseException as exc:  # kept for the request, if it still waits; else logged
            outcome.error = exc
            if outcome.pass_id is not None:
                log.warning("pass %s on %s failed: %s", outcome.pass_id, bridge.sheet_tab, exc)
        finally:
            outcome.finished = True
            done.set()
            started.set()

    in_background(run)
    started.wait(bridge.lock_wait + START_GRACE)
    if outcome.pass_id is not None:
        done.wait(wait)
    return Started(outcome.pass_id, outcome.result, outcome.error, done.is_set())


def in_background(target: Callable[[], None], name: str = "sheet-bridge-pass") -> None:
    """Run `target` in a thread of this process that a stopping worker waits for
    (`finish_running_passes`): a pass, or an edit's send."""

    def tracked() -> None:
        try:
            target()
        finally:
            with _running_lock:
                _running.discard(thread)

    # It logs under the request id (and trace) of the request that started it.
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(tracked,), name=name, daemon=True)
    with _running_lock:
        _running.add(thread)
    thread.start()


def finish_running_passes(timeout: float) -> int:
    """Wait at most `timeout` seconds in all for the passes this process runs to end; the
    number still running then. A gunicorn worker told to stop (a redeploy, a scale-in) calls
    it before exiting, so a pass near its end finishes instead of being cut and redone."""
    deadline = time.monotonic() + timeout
    with _running_lock:
        threads = list(_running)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sum(thread.is_alive() for thread in threads)


def record_json(
    record: PassRecord, now: datetime, offset: int = 0, limit: int = ROWS_PAGE
) -> dict[str, Any]:
    """A pass record as the API gives it: state, phase, progress, and at the end its answer
    with one page of the rows needing attention."""
    state = record.state(now)
    body: dict[str, Any] = {
        "pass_id": pass_ref(record.where, record.id),
        "spreadsheet_id": record.where.spreadsheet_id,
        "tab": record.where.tab,
        "trigger": record.trigger,
        "dry_run": record.dry_run,
        "state": state,
        "phase": record.phase,
        "done": record.done,
        "total": record.total,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "summary": None,
        "error": None,
    }
    summary = record.summary or {}
    if state == "failed":
        body["error"] = summary.get("error") or (
            f"the pass failed ({record.error}); see the backend's log"
        )
    elif state == "lost":
        body["error"] = (
            "the process running this pass stopped (restarted or killed) before it finished; "
            "nothing is lost: what it sent is recorded, the rest goes with the next pass"
        )
    elif state == "done" and record.summary is not None:
        body["summary"] = summary_page(record.id, record.where, summary, offset, limit)
    return body


def summary_page(
    pass_id: int, where: SheetTab, summary: dict[str, Any], offset: int = 0, limit: int = ROWS_PAGE
) -> dict[str, Any]:
    """A pass's answer with `limit` of its rows needing attention from `offset`."""
    attention = summary.get("attention", [])
    page = attention[offset : offset + limit]
    following = offset + len(page)
    return {
        **{k: v for k, v in summary.items() if k != "attention"},
        "pass_id": pass_ref(where, pass_id),
        "state": "done",
        "rows": page,
        "rows_offset": offset,
        "next_rows_offset": following if following < len(attention) else None,
    }
