"""How sheet-bridge's log lines look: plain text on a terminal or a VM's journal, one JSON
object per line for Cloud Logging (docs/operating.md "Logs").

`SHEET_BRIDGE_LOG_FORMAT=json` (the default on Cloud Run, which sets K_SERVICE:
https://cloud.google.com/run/docs/container-contract#env-vars) writes the fields Cloud Logging
reads from a JSON line: `severity`, `message`, `logging.googleapis.com/trace` and
`logging.googleapis.com/spanId` (https://cloud.google.com/logging/docs/structured-logging), plus
the request id. Either format carries the request id of the request (or the pass it started)
and a traceback for an unexpected error, with the secrets the process knows (Meta tokens, the
shared secret), bearer tokens, `access_token` values and e-mail addresses replaced.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

# The request a log line belongs to, and its Cloud Trace ids (set per request in web/app.py;
# a pass started by a request keeps them, web/passes.py).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sheet_bridge_request_id", default=None
)
TRACE: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "sheet_bridge_trace", default=None
)

# logging's level names as Cloud Logging's LogSeverity names
# (https://cloud.google.com/logging/docs/reference/v2/rest/v2/LogEntry#logseverity).
SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR"}
SEVERITY["CRITICAL"] = "CRITICAL"

REDACTED = "[redacted]"
_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[^\s'\",]+"),
    re.compile(r"(?i)(access_token['\"]?\s*[:=]\s*['\"]?)[^\s'\"&,}]+"),
    # An e-mail address (a domain ending in letters: "postgres@127.0.0.1" stays readable).
    re.compile(r"()[\w.+-]+@(?:[\w-]+\.)+[A-Za-z]{2,}\b"),
)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def redact_values(values: Iterable[str | None]) -> None:
    """Secrets this process holds (Meta tokens, shared secrets): never written to a log."""
    with _secrets_lock:
        _secrets.update(v.strip() for v in values if v and len(v.strip()) >= 8)


def redact(text: str) -> str:
    """`text` with every known secret, bearer token, access_token value and e-mail replaced."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def log_format(environ: Mapping[str, str]) -> str:
    """ "json" or "text": SHEET_BRIDGE_LOG_FORMAT when set, else JSON on Cloud Run."""
    chosen = environ.get("SHEET_BRIDGE_LOG_FORMAT", "").strip().lower()
    if chosen in ("json", "text"):
        return chosen
    return "json" if environ.get("K_SERVICE") else "text"


def trace_field(header: str | None, project: str | None) -> tuple[str, str | None] | None:
    """Cloud Logging's trace name and span id from an `X-Cloud-Trace-Context:
    TRACE_ID/SPAN_ID;o=1` header (https://cloud.google.com/trace/docs/trace-context), or None.
    The trace name is `projects/PROJECT_ID/traces/TRACE_ID` when the project is known."""
    found = re.fullmatch(r"([0-9a-fA-F]{32})(?:/(\d{1,20}))?(?:;o=[01])?", (header or "").strip())
    if found is None:
        return None
    trace_id = found.group(1).lower()
    name = f"projects/{project}/traces/{trace_id}" if project else trace_id
    return name, found.group(2)


class TextFormatter(logging.Formatter):
    """One line (plus a traceback) with the request id, secrets removed."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = REQUEST_ID.get()
        if request_id:
            head, sep, rest = text.partition(": ")
            text = f"{head} [request {request_id}]{sep}{rest}"
        return redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, in the fields Cloud Logging reads."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "severity": SEVERITY.get(record.levelname, "DEFAULT"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        trace = TRACE.get()
        if trace is not None:
            entry["logging.googleapis.com/trace"] = trace[0]
            if trace[1]:
                entry["logging.googleapis.com/spanId"] = trace[1]
        if record.exc_info:
            # Error Reporting reads a traceback in the message
            # (https://cloud.google.com/error-reporting/docs/formatting-error-messages).
            entry["message"] = f"{message}\n{self.formatException(record.exc_info)}"
        entry["message"] = redact(entry["message"])
        return json.dumps(entry, ensure_ascii=False)


def formatter(environ: Mapping[str, str]) -> logging.Formatter:
    return JsonFormatter() if log_format(environ) == "json" else TextFormatter()


def install(
    environ: Mapping[str, str], *, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send the `sheet_bridge` loggers' lines to `stream` (stderr) in the configured format,
    replacing any handler installed before; returns the handler."""
    ours = logging.getLogger("sheet_bridge")
    for old in [h for h in ours.handlers if getattr(h, "sheet_bridge", False)]:
        ours.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(environ))
    handler.sheet_bridge = True  # type: ignore[attr-defined]
    ours.addHandler(handler)
    ours.setLevel(level)
    ours.propagate = False
    return handler
