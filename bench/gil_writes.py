"""Why the ledger's writes are one SQLite statement per request (docs/performance.md, step 4).

`python bench/gil_writes.py` writes 150,000 rows (a table with two indexes, in transactions of
500 rows) four ways: row by row (`executemany`) and as one `INSERT … SELECT … FROM json_each(?)`
per transaction, each alone and then with another thread running Python meanwhile, as the
pass's thread does while the ledger's own thread writes. Row by row, the writing thread takes
Python's lock back after every row and waits for it each time; one statement runs with the
lock released from start to end. Prints the seconds of each.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROWS, PER_TRANSACTION = 150_000, 500
# Row by row beside a busy thread takes minutes: a tenth of the rows, scaled up, tells enough.
SLOW_SHARE = 10


def rows() -> list[tuple[str, str, int, str]]:
    return [
        (
            hashlib.sha256(str(i).encode()).hexdigest(),
            "Lead",
            i,
            hashlib.md5(str(i).encode()).hexdigest(),
        )
        for i in range(ROWS)
    ]


def write(path: Path, data: list[tuple[str, str, int, str]], one_statement: bool) -> float:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE t (a TEXT, b TEXT, c INTEGER, d TEXT, PRIMARY KEY (a, b))")
    db.execute("CREATE INDEX t_d ON t (d)")
    started = time.perf_counter()
    for start in range(0, len(data), PER_TRANSACTION):
        part = data[start : start + PER_TRANSACTION]
        db.execute("BEGIN")
        if one_statement:
            db.execute(
                "INSERT INTO t SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
                "json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)",
                (json.dumps(part),),
            )
        else:
            db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", part)
        db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return seconds


def beside_busy_python(run: Callable[[], float]) -> float:
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            sum(range(100))

    other = threading.Thread(target=busy)
    other.start()
    try:
        return run()
    finally:
        stop.set()
        other.join()


def main() -> None:
    data = rows()
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, one, busy) in enumerate(
            [
                ("row by row, alone", False, False),
                ("one statement, alone", True, False),
                ("one statement, beside busy Python", True, True),
                ("row by row, beside busy Python", False, True),
            ]
        ):
            part = data[: ROWS // SLOW_SHARE] if busy and not one else data
            run = functools.partial(write, Path(tmp) / f"{n}.db", part, one)
            seconds = beside_busy_python(run) if busy else run()
            scale = len(data) / len(part)
            how = f" ({len(part):,} rows × {scale:.0f})" if scale != 1 else ""
            print(f"{name}: {seconds * scale:.1f} s for {ROWS:,} rows{how}", flush=True)


if __name__ == "__main__":
    main()
