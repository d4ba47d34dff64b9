"""Several processes opening a new registry at the same moment all get it (the first
`serve` workers, or a CLI command next to a starting gateway)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from gateway.instances.sqlite_db import Database

PROCESSES = 6
ROUNDS = 20


def _open_together(root: str, start: Barrier, results: Any) -> None:
    for round_ in range(ROUNDS):
        start.wait()
        try:
            database = Database(Path(root) / f"data-{round_}")
            (mode,) = database.one("PRAGMA journal_mode")
            database.close()
            results.put(str(mode))
        except Exception as exc:  # reported to the test, which names it
            results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_registry_together_all_get_it_in_wal(tmp_path: Path) -> None:
    for round_ in range(ROUNDS):
        (tmp_path / f"data-{round_}").mkdir()
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(PROCESSES), context.Queue()
    workers = [
        context.Process(target=_open_together, args=(str(tmp_path), start, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=60) for _ in range(PROCESSES * ROUNDS)]
    for worker in workers:
        worker.join(10)
    assert answers == ["wal"] * (PROCESSES * ROUNDS), sorted(set(answers))
