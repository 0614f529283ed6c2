"""Python's full garbage collections run between frames, not inside one (monitor.collection)."""

from __future__ import annotations

import gc
import weakref

import pytest

from monitor.collection import CollectionPacing


class _Node:
    """A cyclic object: only the cycle collector can reclaim it."""

    def __init__(self):
        self.me = self


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _full_collections_during(work) -> int:
    """How many full (generation 2) collections the collector ran on its own during ``work()``."""
    full = []

    def seen(phase, info):
        if phase == "start" and info["generation"] == 2:
            full.append(info)

    gc.callbacks.append(seen)
    try:
        work()
    finally:
        gc.callbacks.remove(seen)
    return len(full)


def _churn(kept: list) -> None:
    """Enough surviving allocations that the collector, left to itself, runs full collections."""
    for _ in range(200_000):
        kept.append(_Node())


def test_no_full_collection_runs_inside_a_frame_and_one_runs_between_frames_when_due():
    before = gc.get_threshold()
    assert _full_collections_during(lambda: _churn([])) > 0, "the collector ran no full collection by itself"
    clock = _Clock()
    kept: list = []
    with CollectionPacing(every_s=10.0, clock=clock) as pacing:
        assert gc.get_freeze_count() > 0  # the process's set-up is frozen, not walked again
        assert _full_collections_during(lambda: _churn(kept)) == 0
        garbage = _Node()
        gone = weakref.ref(garbage)
        for _ in range(3):  # survives the young collections into the oldest generation...
            gc.collect(1)
        del garbage  # ... where it becomes garbage: only a full collection reclaims it
        gc.collect(1)
        clock.now += 9.9
        assert pacing.between_frames() is None  # not due: nothing run
        assert gone() is not None
        clock.now += 0.2
        took = pacing.between_frames()
        assert took is not None and took >= 0 and pacing.seconds == [took]
        assert gone() is None, "the full collection between frames did not reclaim the cycle"
        assert pacing.between_frames() is None  # the next is 10 s away again
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    assert pacing.between_frames() is None  # left: it runs nothing any more


def test_pacings_side_by_side_restore_the_collector_when_the_last_leaves():
    before = gc.get_threshold()
    first, second = CollectionPacing(), CollectionPacing()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[2] > 10**9 and gc.get_freeze_count() > 0  # the second still runs
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    second.__exit__(None, None, None)  # leaving twice changes nothing
    assert gc.get_threshold() == before


def test_a_pacing_must_have_a_positive_period():
    with pytest.raises(ValueError, match="positive"):
        CollectionPacing(every_s=0)


def test_a_pacing_that_fails_to_start_leaves_the_collector_as_it_was():
    def broken_clock() -> float:
        raise KeyboardInterrupt  # an interrupt while the pacing starts

    before = gc.get_threshold()
    with pytest.raises(KeyboardInterrupt), CollectionPacing(clock=broken_clock):
        pass
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    with CollectionPacing():  # and the next one starts and stops cleanly
        assert gc.get_threshold()[2] > 10**9
    assert gc.get_threshold() == before
