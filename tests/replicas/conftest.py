"""Fixtures of the replica tests: instances started as the image starts them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy.instances import Instance, start_instance


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[[dict[str, str], str], Instance]]:
    """launch(env, name): an instance, killed at the end of the test whatever happened."""
    started: list[Instance] = []

    def start(env: dict[str, str], name: str) -> Instance:
        started.append(start_instance(env, tmp_path / f"{name}.log"))
        return started[-1]

    yield start
    for instance in started:
        instance.close()
