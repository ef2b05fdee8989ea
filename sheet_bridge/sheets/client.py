"""The lead sheet through the Sheets API: credentials, a one-call read, write-back, log append."""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sheet_bridge.config import LOG_TAB, SheetsConfig
from sheet_bridge.sheets.table import SheetTable, a1_range, col_letter, quote_tab

SCOPES = ["https://www.googleapis.com/auth/spreadsheets"]
# Keep each write under 2 MB (developers.google.com/sheets/api/limits); one batchUpdate carries
# everything below that.
MAX_PAYLOAD_BYTES = 2_000_000
# Time zone and tab names change rarely; re-read them now and then so a long-running server
# notices a changed spreadsheet time zone.
METADATA_TTL_SECONDS = 15 * 60


class SheetsError(Exception):
    """The Sheets API refused or failed; the message says what to do."""


class SheetsAccessDenied(SheetsError):
    """403/401: the account cannot open the spreadsheet."""


class SheetsNotFound(SheetsError):
    """404, or a tab that does not exist."""


class SheetsTabNotFound(SheetsNotFound):
    """The spreadsheet opens but has no tab of that name."""


class SheetsQuotaExceeded(SheetsError):
    """429 after every retry: the per-minute quota is used up."""


class SheetsUnavailable(SheetsError):
    """5xx or network failure after every retry."""


@dataclass(frozen=True)
class SpreadsheetInfo:
    """What spreadsheets.get tells us: the title, time zone, locale and tab names."""

    title: str
    time_zone: str
    tabs: tuple[str, ...]
    fetched_at: float
    locale: str = "en_US"  # how text numbers and dates are written here (e.g. de_DE)


# One entry per (endpoint, spreadsheet): a steady-state read is a single values.get.
_metadata: dict[tuple[str, str], SpreadsheetInfo] = {}
_metadata_lock = threading.Lock()


def clear_metadata_cache() -> None:
    """Forget every cached spreadsheet title/time zone/locale (tests, or after renaming tabs)."""
    with _metadata_lock:
        _metadata.clear()


def _is_loopback(url: str | None) -> bool:
    host = urlsplit(url or "").hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def build_service(config: SheetsConfig, *, base_dir: Path | None = None) -> Any:
    """A googleapiclient Sheets v4 service for this config, built offline from the bundled
    discovery document; `api_endpoint` (the emulator) replaces Google's host when set."""
    from googleapiclient.discovery import build

    service = build(
        "sheets",
        "v4",
        credentials=_credentials(config, base_dir),
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": config.api_endpoint} if config.api_endpoint else None,
    )
    _skip_docstrings(service)
    return service


def _skip_docstrings(service: Any) -> None:
    """Stop googleapiclient rendering a docstring for every method from the discovery schema.

    For Sheets v4 that rendering is ~66 MB (measured here: 70 MB of RSS on the first
    `spreadsheets()`, ~20 MB more on each later one until the cyclic collector runs), and only
    `help()` ever reads it (googleapis/google-api-python-client#2779, open, no option yet). The
    renderer is blanked on this service's own schema object, which its child resources share;
    the library itself is untouched. tests/sheets pins the saving, so a library release that
    moves `_schema` is noticed.
    """
    schema = getattr(service, "_schema", None)
    if schema is not None:
        schema.prettyPrintByName = lambda name: ""
        schema.prettyPrintSchema = lambda schema: ""


def _key_file(config: SheetsConfig, base_dir: Path | None) -> Path:
    path = Path(config.service_account_file or "")
    return path if path.is_absolute() or base_dir is None else base_dir / path


def _credentials(config: SheetsConfig, base_dir: Path | None) -> Any:
    if config.credentials == "service_account":
        from google.oauth2 import service_account

        path = _key_file(config, base_dir)
        try:
            # google-auth ships partial type hints; these constructors are unannotated.
            return service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                str(path), scopes=SCOPES
            )
        except FileNotFoundError:
            raise SheetsError(
                f"The service account key file {path} does not exist; download the JSON key "
                "of the service account and set service_account_file to its path"
            ) from None
        except (ValueError, KeyError, json.JSONDecodeError) as exc:
            raise SheetsError(
                f"{path} is not a service account JSON key ({exc}); download a new key "
                "(IAM → Service accounts → Keys → Add key → JSON)"
            ) from None
    if not _is_loopback(config.api_endpoint):
        # Never send anonymous calls to Google: it would only answer 401/403.
        raise SheetsError(
            "credentials = 'anonymous' only works with the local emulator; set api_endpoint "
            "to http://127.0.0.1:PORT"
        )
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]


class SheetsClient:
    """Reads the lead tab and writes outcomes back; every operation is one API call plus retries.

    Safe to share between threads (the web server's): httplib2 underneath is not, so each
    request runs under the client's lock.
    """

    def __init__(
        self,
        config: SheetsConfig,
        service: Any = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 5,
        base_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.base_dir = base_dir
        self.service = service if service is not None else build_service(config, base_dir=base_dir)
        self.sleep = sleep
        self.max_attempts = max(1, max_attempts)
        self.stats = 0  # API calls made, retries included
        self._lock = threading.RLock()
        # Built once: every spreadsheets()/values() call builds a new resource, held in
        # reference cycles that only the cyclic collector frees; one per request left that
        # garbage behind on every call of a large pass.
        self._sheets_api = self.service.spreadsheets()
        self._values_api = self._sheets_api.values()

    # -- public operations ----------------------------------------------------------------

    def read_table(self) -> SheetTable:
        """The whole tab in one values.get: stored values, dates as serial numbers."""
        tab = self.config.tab
        info = self._info()
        request = self._values_api.get(
            spreadsheetId=self.config.spreadsheet_id,
            range=quote_tab(tab),  # a bare tab name is the whole tab
            valueRenderOption="UNFORMATTED_VALUE",  # numbers as numbers, text as text
            dateTimeRenderOption="SERIAL_NUMBER",
            majorDimension="ROWS",
        )
        answer = self._execute(request, tab=tab, large=True)
        values: list[list[object]] = answer.get("values", [])  # no key when the tab is empty
        return SheetTable(
            title=info.title,
            tab=tab,
            time_zone=info.time_zone,
            locale=info.locale,
            header=list(values[0]) if values else [],
            rows=values[1:],
            first_row=2,
        )

    def read_rows(self, rows: Iterable[int]) -> SheetTable:
        """The header and some data rows (an edit's) in one values.batchGet, not the tab.

        Each run of consecutive rows is one whole-row range (`Leads!5:34`; an edit event is
        one rectangle, so one or two ranges is usual; googleapiclient sends a batchGet whose
        address passes 2,048 characters as a POST, which Google serves the same). The table's
        `row_numbers` are the sheet's own; a row past the sheet's end (rows deleted since)
        reads as empty.
        """
        tab = self.config.tab
        info = self._info()
        wanted = sorted({r for r in rows if r >= 2})
        runs = _row_runs([1, *wanted])
        try:
            ranges = self._batch_get(runs)
        except SheetsError as exc:
            # Google refuses a range past the grid ("exceeds grid limits. Max rows: N"): only
            # rows deleted since the edit can be there, and they are empty now.
            last = _grid_rows(str(exc))
            if last is None:
                raise
            runs = _row_runs([1, *(r for r in wanted if r <= last)])
            ranges = self._batch_get(runs)
        by_number: dict[int, list[object]] = {}
        for (start, _), value_range in zip(runs, ranges, strict=True):
            for i, values in enumerate(value_range.get("values", [])):
                by_number[start + i] = values
        return SheetTable(
            title=info.title,
            tab=tab,
            time_zone=info.time_zone,
            locale=info.locale,
            header=list(by_number.get(1, [])),
            rows=[by_number.get(n, []) for n in wanted],
            first_row=2,
            row_numbers=wanted,
        )

    def write_cells(self, cells: Iterable[tuple[int, int, object]]) -> int:
        """Write (row 1-based, col 0-based, value) cells in one values.batchUpdate (RAW).

        Horizontally adjacent cells of a row go as one range, and such runs on consecutive rows
        (same columns) as one block. RAW keeps a message that starts with "=" as text
        (developers.google.com/sheets/api/limits). None clears a cell; a cell given twice takes the
        later value. Returns the number of cells.
        """
        runs: list[tuple[int, int, list[object]]] = []  # (row, first col, values)
        count = 0
        run: list[object] = []
        run_row = end = -1  # the last run's row, and the column after it
        # A stable sort: the same cell twice stays in the caller's order, the later one last.
        # (A loop kept lean: a 100,000-lead first pass writes ~400,000 cells.)
        for row, col, value in sorted(cells, key=itemgetter(0, 1)):
            if type(value) is not str or row < 1 or col < 0:
                value = _cell_value(value, row, col)
            if row == run_row:
                if col == end - 1:
                    run[-1] = value  # the same cell again
                    continue
                if col == end:
                    run.append(value)
                    end += 1
                    count += 1
                    continue
            run = [value]
            runs.append((row, col, run))
            run_row, end = row, col + 1
            count += 1
        data = (self._range_data(block) for block in _blocks(runs))
        requests = (
            _with_body(
                self._values_api.batchUpdate(
                    spreadsheetId=self.config.spreadsheet_id,
                    body={"valueInputOption": "RAW", "data": []},
                ),
                f'{{"valueInputOption": "RAW", "data": [{text}]}}',
            )
            for _, text in _encoded_chunks(data, MAX_PAYLOAD_BYTES)
        )
        for _ in self._in_order(requests, self.config.tab):
            pass
        return count

    def _in_order(self, requests: Iterator[Any], tab: str) -> Iterator[dict[str, Any]]:
        """Run requests one after another, each answer in turn; the next request is built (its
        JSON encoded, ~0.1 s per 2 MB) while Google works on the one before. One in flight at a
        time, so they are applied in order, and none is sent after one that failed."""
        with ThreadPoolExecutor(1, thread_name_prefix="sheets-write") as pool:
            pending: Future[dict[str, Any]] | None = None
            for request in requests:
                if pending is not None:
                    yield pending.result()
                pending = pool.submit(self._execute, request, tab=tab)
            if pending is not None:
                yield pending.result()

    def append_log(self, rows: Iterable[Sequence[object]], header: Sequence[str]) -> int | None:
        """Append rows to the CAPI Log tab: one values.append per ≤ 2 MB of rows (usually one).

        `rows` may be a generator: it is consumed one 2 MB chunk at a time. The tab is created
        first, header included, when the cached tab list lacks it. Returns the Log's last line
        (its row number) after the append: the end of the last answer's `updates.updatedRange`
        (developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values/append); None
        when nothing was appended or Google did not say.
        """
        chunks = _encoded_chunks(rows, MAX_PAYLOAD_BYTES)
        first = next(chunks, None)
        if first is None:
            return None
        rows = text = first[1]
        header_json = json.dumps(list(header))
        if LOG_TAB not in self._info().tabs and self._add_sheet(LOG_TAB):
            text = f"{header_json}, {rows}"
        try:
            last = self._append(text)
        except SheetsTabNotFound:
            # Deleted since the tab list was cached: made again with its header, unless another
            # run created it a moment ago (header included).
            last = self._append(f"{header_json}, {rows}" if self._add_sheet(LOG_TAB) else text)
        for answer in self._in_order((self._append_request(t) for _, t in chunks), LOG_TAB):
            last = _last_row(answer)
        return last

    def read_log_after(self, lines: int, width: int) -> tuple[list[object], list[list[object]]]:
        """The CAPI Log's header and its lines below row `lines`, in one values.batchGet:
        `'CAPI Log'!1:1` and `'CAPI Log'!A{lines+1}:{column width}`, a range open downwards
        that reads to the tab's last row with data, trailing empty rows left out
        (developers.google.com/sheets/api/guides/concepts#cell, and
        developers.google.com/sheets/api/reference/rest/v4/spreadsheets.values#ValueRange).
        No line when the Log is gone or ends above that row (Google refuses a range past the
        grid: "exceeds grid limits")."""
        log_tab = quote_tab(LOG_TAB)
        request = self._values_api.batchGet(
            spreadsheetId=self.config.spreadsheet_id,
            ranges=[f"{log_tab}!1:1", f"{log_tab}!A{lines + 1}:{col_letter(width - 1)}"],
            valueRenderOption="UNFORMATTED_VALUE",
            dateTimeRenderOption="SERIAL_NUMBER",
            majorDimension="ROWS",
        )
        try:
            answer = self._execute(request, tab=LOG_TAB)
        except SheetsTabNotFound:
            return [], []
        except SheetsError as exc:
            if _grid_rows(str(exc)) is None:
                raise
            return [], []
        value_ranges: list[dict[str, Any]] = answer.get("valueRanges", [])
        if len(value_ranges) != 2:
            raise SheetsError(
                f"Google Sheets answered {len(value_ranges)} ranges for the 2 asked; try again"
            )
        header = value_ranges[0].get("values", [[]])[0]
        return list(header), list(value_ranges[1].get("values", []))

    # -- calls ----------------------------------------------------------------------------

    def _batch_get(self, runs: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
        """One values.batchGet of whole-row ranges (first, last row), as read_table reads:
        stored values, dates as serial numbers. Its value ranges, in the order asked."""
        tab = self.config.tab
        request = self._values_api.batchGet(
            spreadsheetId=self.config.spreadsheet_id,
            ranges=[f"{quote_tab(tab)}!{first}:{last}" for first, last in runs],
            valueRenderOption="UNFORMATTED_VALUE",
            dateTimeRenderOption="SERIAL_NUMBER",
            majorDimension="ROWS",
        )
        answer = self._execute(request, tab=tab)
        value_ranges: list[dict[str, Any]] = answer.get("valueRanges", [])
        if len(value_ranges) != len(runs):
            raise SheetsError(
                f"Google Sheets answered {len(value_ranges)} ranges for the {len(runs)} asked; "
                "try again"
            )
        return value_ranges

    def _range_data(self, block: list[tuple[int, int, list[object]]]) -> dict[str, Any]:
        row, col, first = block[0]
        end_row, end_col = row + len(block) - 1, col + len(first) - 1
        return {
            "range": a1_range(self.config.tab, row, col, end_row, end_col),
            "values": [values for _, _, values in block],
        }

    def _append(self, rows: str) -> int | None:
        """One values.append to the CAPI Log (`rows`: their JSON, joined by ", "); the last row
        it wrote (None: not said)."""
        return _last_row(self._execute(self._append_request(rows), tab=LOG_TAB))

    def _append_request(self, rows: str) -> Any:
        request = self._values_api.append(
            spreadsheetId=self.config.spreadsheet_id,
            range=quote_tab(LOG_TAB),
            valueInputOption="RAW",
            insertDataOption="INSERT_ROWS",
            body={"values": []},
        )
        return _with_body(request, f'{{"values": [{rows}]}}')

    def _add_sheet(self, title: str) -> bool:
        """Add a tab; False when it already exists (someone else just made it)."""
        request = self._sheets_api.batchUpdate(
            spreadsheetId=self.config.spreadsheet_id,
            body={"requests": [{"addSheet": {"properties": {"title": title}}}]},
        )
        try:
            self._execute(request)
        except SheetsError as exc:
            if "already exists" in str(exc):
                self._remember_tab(title)
                return False
            raise
        self._remember_tab(title)
        return True

    def _cache_key(self) -> tuple[str, str]:
        return (self.config.api_endpoint or "google", self.config.spreadsheet_id)

    def _remember_tab(self, title: str) -> None:
        """Add a tab just created to the cached tab list (no extra spreadsheets.get)."""
        with _metadata_lock:
            cached = _metadata.get(self._cache_key())
            if cached is not None and title not in cached.tabs:
                _metadata[self._cache_key()] = replace(cached, tabs=(*cached.tabs, title))

    def _info(self, *, fresh: bool = False) -> SpreadsheetInfo:
        key = self._cache_key()
        with _metadata_lock:
            cached = _metadata.get(key)
        if (
            cached is not None
            and not fresh
            and time.monotonic() - cached.fetched_at < METADATA_TTL_SECONDS
        ):
            return cached
        request = self._sheets_api.get(
            spreadsheetId=self.config.spreadsheet_id,
            fields="properties(title,timeZone,locale),sheets.properties(title,sheetId)",
        )
        answer = self._execute(request)
        props = answer.get("properties", {})
        info = SpreadsheetInfo(
            title=str(props.get("title", "")),
            time_zone=str(props.get("timeZone") or "Etc/UTC"),
            locale=str(props.get("locale") or "en_US"),  # Google's default
            tabs=tuple(str(s["properties"]["title"]) for s in answer.get("sheets", [])),
            fetched_at=time.monotonic(),
        )
        with _metadata_lock:
            _metadata[key] = info
        return info

    def _execute(
        self, request: Any, *, tab: str | None = None, large: bool = False
    ) -> dict[str, Any]:
        """Run one request, retrying 429/5xx/network errors with exponential backoff.
        `large`: a GET whose answer is large (_execute_large)."""
        from google.auth.exceptions import RefreshError, TransportError
        from googleapiclient.errors import HttpError
        from httplib2 import HttpLib2Error

        for attempt in range(1, self.max_attempts + 1):
            self.stats += 1
            try:
                # num_retries=0: retries are ours, so they use the injected sleep and count.
                with self._lock:
                    answer: dict[str, Any] = (
                        _execute_large(request) if large else request.execute(num_retries=0)
                    )
                return answer
            except HttpError as exc:
                status = int(exc.resp.status)
                transient = status == 429 or status >= 500
                if not transient or attempt == self.max_attempts:
                    raise self._error(status, _reason(exc), tab) from None
            except RefreshError as exc:
                raise SheetsAccessDenied(
                    f"Google refused to issue a token for {self._account()} ({exc}); the key "
                    "may be revoked or the account deleted: create a new key"
                ) from None
            except (OSError, HttpLib2Error, TransportError) as exc:
                if attempt == self.max_attempts:
                    where = self.config.api_endpoint or "sheets.googleapis.com"
                    raise SheetsUnavailable(
                        f"Could not reach the Sheets API at {where} after {attempt} tries "
                        f"({exc}); check the network and try again"
                    ) from None
            # 1 s, 2 s, 4 s, 8 s … with jitter so parallel runs do not retry in step.
            delay = min(2.0 ** (attempt - 1), 32.0)
            self.sleep(delay + random.uniform(0, delay / 4))
        raise AssertionError("unreachable")

    def _error(self, status: int, reason: str, tab: str | None) -> SheetsError:
        sid = self.config.spreadsheet_id
        if status == 429:
            return SheetsQuotaExceeded(
                f"Google Sheets quota exceeded for spreadsheet {sid} after {self.max_attempts} "
                "tries (60 requests per minute per user, 300 per project); wait a minute and "
                f"sync again ({reason})"
            )
        if status >= 500:
            return SheetsUnavailable(
                f"Google Sheets failed with HTTP {status} after {self.max_attempts} tries; "
                f"try again in a few minutes ({reason})"
            )
        if status in (401, 403):
            if "has not been used" in reason or "is disabled" in reason:
                return SheetsAccessDenied(
                    "The Google Sheets API is not enabled for the credentials' Google Cloud "
                    f"project; enable it in the Cloud console (APIs & Services) ({reason})"
                )
            who = self._account()
            if status == 401:
                return SheetsAccessDenied(
                    f"Google refused the credentials of {who} ({reason}); "
                    "check the key file or sign in again"
                )
            if self.config.credentials == "service_account":
                return SheetsAccessDenied(
                    f"The service account {who} cannot open spreadsheet {sid}: share the "
                    f"spreadsheet with {who} (Editor)"
                )
            return SheetsAccessDenied(
                f"{who} cannot open spreadsheet {sid}: ask its owner to share it with you "
                f"(Editor) ({reason})"
            )
        if status == 404:
            return SheetsNotFound(
                f"Spreadsheet {sid} was not found: check spreadsheet_id in the config (the long "
                "id between /d/ and /edit in the sheet's address)"
            )
        if status == 400 and "Unable to parse range" in reason and tab is not None:
            return self._missing_tab(tab, reason)
        return SheetsError(f"Google Sheets refused the request (HTTP {status}): {reason}")

    def _missing_tab(self, tab: str, reason: str) -> SheetsError:
        sid = self.config.spreadsheet_id
        try:
            info = self._info(fresh=True)
        except SheetsError:
            return SheetsNotFound(f"Spreadsheet {sid}: the tab {tab!r} cannot be read ({reason})")
        if tab in info.tabs:
            return SheetsError(f"Google Sheets could not read tab {tab!r} of {sid}: {reason}")
        tabs = ", ".join(repr(t) for t in info.tabs) or "none"
        return SheetsTabNotFound(
            f"Spreadsheet {sid} has no tab {tab!r}; its tabs are: {tabs}. "
            "Set tab in the config to one of them or rename the tab."
        )

    def _account(self) -> str:
        if self.config.credentials == "service_account":
            path = _key_file(self.config, self.base_dir)
            try:
                email = json.loads(path.read_text(encoding="utf-8")).get("client_email")
            except (OSError, ValueError, AttributeError):
                email = None
            # The key file's name only: this text can reach an API answer, a path must not.
            return str(email) if email else f"in the key file {path.name}"
        return "The anonymous caller"


_GRID_ROWS = re.compile(r"exceeds grid limits\. Max rows: (\d+)")
# The last row of an A1 range such as 'CAPI Log'!A12:I20.
_LAST_ROW = re.compile(r"[A-Z]+(\d+)$")


def _execute_large(request: Any) -> dict[str, Any]:
    """`request.execute(num_retries=0)` for a GET with a large answer (a whole tab), the same
    request on the same connection, with the answer's bytes let go once they are text, before
    the JSON is parsed: googleapiclient's execute holds the bytes, their text and the parsed
    rows at once (100,000 rows once their bridge cells are filled: a 30 MB answer, so 30 MB
    more at the read's peak, the largest of a pass with no change). A refusal raises
    googleapiclient's HttpError, as execute does."""
    from googleapiclient.errors import HttpError

    request.headers.setdefault("content-length", str(request.body_size))  # as execute does
    resp, content = request.http.request(
        str(request.uri), method=str(request.method), body=request.body, headers=request.headers
    )
    if resp.status >= 300:
        raise HttpError(resp, content, uri=request.uri)
    text = content.decode("utf-8")
    del content
    answer: dict[str, Any] = json.loads(text) if text else {}
    return answer


def _row_runs(rows: Iterable[int]) -> list[tuple[int, int]]:
    """Row numbers as (first, last) runs of consecutive rows, in order."""
    runs: list[tuple[int, int]] = []
    for r in sorted(set(rows)):
        if runs and r == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], r)
        else:
            runs.append((r, r))
    return runs


def _grid_rows(message: str) -> int | None:
    """The sheet's row count from Google's "exceeds grid limits" refusal, else None."""
    m = _GRID_ROWS.search(message)
    return int(m.group(1)) if m else None


def _reason(exc: Any) -> str:
    reason = getattr(exc, "reason", None)
    if reason:
        return str(reason)
    try:
        return str(json.loads(exc.content)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.resp.status}"


def _cell_value(value: object, row: int, col: int) -> object:
    if row < 1 or col < 0:
        raise ValueError(f"cell ({row}, {col}) is outside the sheet: rows start at 1, cols at 0")
    if value is None:
        return ""  # "" clears; null would leave the cell as it is
    if isinstance(value, str | int | float | bool):
        return value
    raise TypeError(
        f"cell ({row}, {col}): {type(value).__name__} cannot go into a sheet; "
        "pass text, a number or a boolean"
    )


_Item = TypeVar("_Item")
# Rows per block range: small enough that the 2 MB split stays fine-grained.
_BLOCK_ROWS = 200


def _blocks(runs: list[tuple[int, int, list[object]]]) -> list[list[tuple[int, int, list[object]]]]:
    """Group runs on consecutive rows with the same columns into rectangles."""
    blocks: list[list[tuple[int, int, list[object]]]] = []
    for run in runs:
        if blocks:
            block = blocks[-1]
            row, col, values = block[-1]
            if (
                len(block) < _BLOCK_ROWS
                and run[0] == row + 1
                and run[1] == col
                and len(run[2]) == len(values)
            ):
                block.append(run)
                continue
        blocks.append([run])
    return blocks


def _last_row(answer: Mapping[str, Any]) -> int | None:
    """The last row a values.append wrote, from its answer's updates.updatedRange."""
    m = _LAST_ROW.search(str(answer.get("updates", {}).get("updatedRange", "")))
    return int(m.group(1)) if m else None


def _encoded_chunks(data: Iterable[_Item], limit: int) -> Iterator[tuple[list[_Item], str]]:
    """Split ranges (or rows) into as few calls as keep each body under `limit` bytes; one
    chunk at a time, so a generator's items never sit in memory all at once. Each chunk comes
    with its items' JSON joined by ", ", as measured: the body's JSON array without its
    brackets, which the request carries as it is (`_with_body`), not encoded a second time.

    An item's size is its JSON as googleapiclient would send it (json.dumps with its ASCII
    escapes: an emoji is 12 bytes), plus one. Items are measured _MEASURED at a time: one
    json.dumps of the group, whose items are as long as theirs alone plus the ", " between
    them (a 100,000-lead first pass appends ~190,000 Log rows); a group that would not fit
    whole is measured item by item."""
    chunk: list[_Item] = []
    texts: list[str] = []
    size = 0
    items = iter(data)
    while group := list(itertools.islice(items, _MEASURED)):
        text = json.dumps(group)
        whole = len(text) - 2 - 2 * (len(group) - 1) + len(group)
        if size + whole <= limit:
            chunk += group
            texts.append(text[1:-1])
            size += whole
            continue
        for item in group:
            text = json.dumps(item)
            n = len(text) + 1
            if chunk and size + n > limit:
                yield chunk, ", ".join(texts)
                chunk, texts, size = [], [], 0
            chunk.append(item)
            texts.append(text)
            size += n
    if chunk:
        yield chunk, ", ".join(texts)


def _with_body(request: Any, body: str) -> Any:
    """A googleapiclient request (built with an empty body) that sends `body`, JSON already
    encoded: googleapiclient would json.dumps the body again (~0.1 s per 2 MB body). json.dumps
    escapes all but ASCII, so its length is its size."""
    request.body = body
    request.body_size = len(body)
    return request


_MEASURED = 64
