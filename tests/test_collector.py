"""Full garbage collections run on the worker's schedule: when idle, and at least every so
often under load that never pauses; never in the middle of a burst on their own."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from gateway.process import collector


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_taking_over_freezes_what_exists_and_stops_automatic_full_collections(
    restore_gc: None,
) -> None:
    young, middle, _ = gc.get_threshold()
    collector.take_over()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[:2] == (young, middle)  # young generations as before
    assert gc.get_threshold()[2] >= 1 << 30


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _run(
    monkeypatch: pytest.MonkeyPatch, busy: list[bool], ticks: int, step: float
) -> list[float]:
    """Drive `full_collections` through `ticks` checks `step` apart; when it collected."""
    clock = Clock()
    collected: list[float] = []

    def collect(generation: int = 2) -> int:
        collected.append(clock.now)
        return 0

    monkeypatch.setattr(gc, "collect", collect)
    task = asyncio.create_task(
        collector.full_collections(
            lambda: busy[0], idle_every=30.0, at_least_every=600.0, check=0, clock=clock
        )
    )
    await asyncio.sleep(0)  # started at 0 s
    for _ in range(ticks):
        clock.now += step
        await asyncio.sleep(0)
    task.cancel()
    return collected


async def test_an_idle_worker_collects_every_30_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    collected = await _run(monkeypatch, [False], ticks=100, step=1.0)
    assert collected[:3] == [30.0, 60.0, 90.0]


async def test_a_busy_worker_does_not_collect_in_the_middle_of_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected = await _run(monkeypatch, [True], ticks=100, step=1.0)
    assert collected == []  # 100 s of unbroken load: no full collection yet


async def test_unbroken_load_still_gets_a_full_collection_every_10_minutes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected = await _run(monkeypatch, [True], ticks=1300, step=1.0)
    assert collected == [600.0, 1200.0]
