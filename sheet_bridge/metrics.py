"""What a process counts as it runs passes, for `GET /metrics` (web/metrics.py adds what the
ledger knows: lost passes and edits pending). prometheus_client's counters; under gunicorn
each worker writes them to PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets it) and /metrics
adds the workers up (https://prometheus.github.io/client_python/multiprocess/)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Histogram

PASSES = Counter(
    "sheet_bridge_passes",
    "Passes by how they ended: done, halted (Meta refused every request: a setup problem), "
    "failed (could not run), preview (a dry run).",
    ["outcome"],
)
EVENTS = Counter(
    "sheet_bridge_events",
    "Events passes decided, by what became of them: sent, failed (Meta refused or never "
    "answered), expired (past Meta's window, never sent), and the other ledger states.",
    ["result"],
)
META_REQUEST_SECONDS = Histogram(
    "sheet_bridge_meta_request_seconds",
    "How long each request to Meta's Conversions API took (answered or not).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def count_pass(outcome: str, event_states: Iterable[str] = ()) -> None:
    """One pass ended with `outcome`; `event_states`: the state of each event it decided."""
    PASSES.labels(outcome).inc()
    tally: dict[str, int] = {}
    for state in event_states:
        tally[state] = tally.get(state, 0) + 1
    for state, n in tally.items():
        EVENTS.labels(state).inc(n)
