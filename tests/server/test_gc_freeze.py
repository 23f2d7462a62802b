"""The server freezes its start-up objects out of the collector's walks, and still collects new garbage."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from server.gc_freeze import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector can free it


@pytest.fixture
def frozen_then_thawed() -> Iterator[None]:
    yield
    gc.unfreeze()  # the rest of the test session keeps its normal collector


def test_startup_objects_leave_the_collectors_generations(frozen_then_thawed: None) -> None:
    held = _Node()
    assert freeze_startup_objects() > 0
    assert gc.is_tracked(held)
    assert not any(held is o for generation in range(3) for o in gc.get_objects(generation))


def test_garbage_made_after_the_freeze_is_still_collected(frozen_then_thawed: None) -> None:
    freeze_startup_objects()
    gone = weakref.ref(_Node())
    gc.collect()
    assert gone() is None
