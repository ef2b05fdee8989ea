"""The pass keeps the cyclic collector off its big structures, and gives everything back."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

from sheet_bridge.sync.collector import gc_pass, gc_paused
from tests.conftest import World, lead_row


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.unfreeze()
    gc.enable()


def test_collector_is_off_inside_a_pause_and_on_again_after() -> None:
    with gc_pass():
        with gc_paused():
            assert not gc.isenabled()
            built = [[i] for i in range(1000)]  # what a phase builds is frozen after it
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(built)
    assert gc.get_freeze_count() == 0  # the last pass gives it all back


def test_a_pause_outside_a_pass_freezes_nothing() -> None:
    # Bridge.read() (the status panel) pauses without a pass around it: nothing would unfreeze.
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_pauses_from_two_threads_nest() -> None:
    inside = threading.Barrier(2)
    leave_first = threading.Event()
    states: list[bool] = []

    def first() -> None:
        with gc_paused():
            inside.wait()
            leave_first.wait()

    thread = threading.Thread(target=first)
    thread.start()
    with gc_paused():
        inside.wait()
        leave_first.set()
        thread.join()
        states.append(gc.isenabled())  # the other pause ended: still off while this one runs
    states.append(gc.isenabled())
    assert states == [False, True]


def test_a_collector_the_application_turned_off_stays_off() -> None:
    gc.disable()
    with gc_pass(), gc_paused():
        pass
    assert not gc.isenabled()


def test_a_real_pass_leaves_the_collector_on_and_nothing_frozen(
    make_world: Callable[..., World], world_now: datetime
) -> None:
    world = make_world([lead_row(i, "MQL", now=world_now) for i in range(1, 30)])
    result = world.bridge().sync()
    assert result.events_sent == 58
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
