"""Keeps the cyclic garbage collector off a pass's big structures, and gives them back after;
hands what a pass freed back to the system when the last pass ends."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import sys
import threading
from collections.abc import Callable, Iterator

_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_passes = 0
_gc_was_enabled = True


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off a pass's big structures.

    A 100,000-lead pass holds millions of small objects (cells, records, reports). Each full
    collection walks them all and finds nothing, as these phases make no reference cycles
    (measured: about half of a no-change pass went to the collector). So the collector is off
    while a phase builds them, and inside a pass (`gc_pass`) what the phase built is then frozen
    (gc.freeze) until the pass ends: later collections skip it. Reference counting still frees
    it all.
    Sending to Meta is paused too: httpx leaves each response in a cycle that holds its
    request's body, and meta/client.py cuts it once the answer is read, so sending leaves no
    cyclic garbage (tests/meta/test_client.py). Pauses from several threads nest; with passes
    in several threads (the web server), a freeze also holds the other passes' uncollected
    garbage until the last pass ends, a bounded delay.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        _gc_pauses += 1
        if _gc_pauses == 1:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                if _gc_passes:
                    gc.freeze()  # gc_pass unfreezes; outside a pass nothing would
                gc.enable()


@contextlib.contextmanager
def gc_pass() -> Iterator[None]:
    """A pass: what its phases froze goes back to the collector when the last pass ends, and
    the memory freed to the system (give_back_freed_memory)."""
    global _gc_passes
    with _gc_lock:
        _gc_passes += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_passes -= 1
            if _gc_passes == 0:
                gc.unfreeze()
                give_back_freed_memory()


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, where there is one (Linux with glibc; not musl, macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _malloc_trim()


def give_back_freed_memory(*, collect: bool = False) -> None:
    """Hand the memory freed back to the system (glibc's malloc_trim); `collect`: after a full
    collection, which also empties Python's free lists (a few tens of milliseconds after a
    large pass, so a full pass does it before it reads, not an edit's pass).

    C's allocator keeps what Python frees from its larger blocks (a 100,000-row read's response
    and text, big lists and dicts) for reuse, so the process kept the size of its largest pass
    and the next pass's read came on top of it. Measured with 100,000 leads (bench/RESULTS.md):
    a pass with no change after the first peaked at 475 MB, at 452 with the trim alone, and at
    393–439 MB with the collection first (four runs). The trim takes under a millisecond;
    where there is no malloc_trim, only the collection is done."""
    if collect:
        gc.collect()
    if _TRIM is not None:
        _TRIM(0)
